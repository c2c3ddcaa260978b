"""Servers and a browser for real: an app on its own SQLite file, any WSGI app on a free
loopback port, and Debian's headless Chromium driven by Playwright.

Tests whose requests must commit for real (a browser, a second process, the demo reuser) use
these instead of the fixtures' rolled-back transaction.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, sync_playwright
from werkzeug.serving import make_server

from broker.app import create_app
from common import migrations
from tests.conftest import settings

CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def own_app(folder: Path, name: str) -> Flask:
    """Tiers on the SQLite file `folder/name.sqlite`, migrated, with its own keys."""
    app = create_app(
        settings(
            DATABASE_URL=f"sqlite:///{folder}/{name}.sqlite",
            KEYS_DIR=str(folder / "keys"),
            TESTING=False,
        )
    )
    with app.extensions["db.engine"].begin() as connection:
        migrations.upgrade(connection)
    return app


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """`app` on 127.0.0.1 on a free port, in a thread, for the duration; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's headless Chromium (Playwright's own browsers are not downloaded here)."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is needed for the browser tests (make test installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()
