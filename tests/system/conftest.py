"""System tier: real PostgreSQL, Redis and a Celery worker process; data is committed for real.

Runs only when TIERS_TEST_DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL are set, as
`make test-postgres` does; without them these tests fail with a message, never skip silently.
Tests commit, so they use fresh citizens instead of truncating (audit rows are append-only).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine

from broker.app import create_app
from broker.config import celery_settings
from broker.service import publish_charter
from common.db import unit_of_work
from tests.conftest import CHARTER, ROOT, settings

pytestmark = pytest.mark.system


def _required() -> tuple[str, str]:
    database = os.environ.get("TIERS_TEST_DATABASE_URL", "")
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not database.startswith("postgresql") or not broker:
        pytest.fail(
            "the system tier needs TIERS_TEST_DATABASE_URL=postgresql… and CELERY_BROKER_URL; "
            "run `make test-postgres`, or deselect it with -m 'not system'"
        )
    return database, broker


@pytest.fixture(scope="session")
def live_app(engine: Engine) -> Flask:
    database, broker = _required()
    app = create_app(settings(DATABASE_URL=database, CELERY=celery_settings(broker)))
    with app.app_context(), unit_of_work() as session:
        publish_charter(session, CHARTER.read_text(encoding="utf-8"), actor="system-test")
    return app


@pytest.fixture(scope="session")
def worker(
    live_app: Flask, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    database, broker = _required()
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "CELERY_BROKER_URL": broker,
        "SECRET_KEY": live_app.config["SECRET_KEY"],
        "TIERS_KEYS_DIR": live_app.config["KEYS_DIR"],
        "TIERS_ISSUER": live_app.config["ISSUER"],
        "TIERS_OUTBOUND_LOOPBACK": "1",  # the tests' holders and webhooks are on 127.0.0.1
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "--app",
                "broker.worker:celery_app",
                "worker",
                "--pool=solo",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while b"ready." not in Path(log).read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Celery worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def eventually(check: Callable[[], Any], *, seconds: float = 30.0) -> Any:
    """Poll until `check` returns something truthy (the worker runs in another process)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"not done after {seconds} s")
