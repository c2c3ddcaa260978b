"""Start the real server for the system tier: gunicorn with sync workers on a loopback port.

`serve(env, log)` runs `gunicorn -w 2 "broker.app:create_app()"` with the given environment
(settings come from it, as in production), waits for `GET /api/v1/health`, and stops the
whole process group on exit. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.conftest import ROOT

HOST = "127.0.0.1"  # loopback only


@dataclass(frozen=True)
class LiveServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, chars: int = 4000) -> str:
        """The end of gunicorn's log, for failure messages."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start(env: Mapping[str, str], log: Path, *, port: int, workers: int = 2) -> LiveServer:
    """Launch gunicorn (not waiting for it): its own process group, output into `log`."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-w",
                str(workers),
                "-b",
                f"{HOST}:{port}",
                "--log-level",
                "warning",
                "--graceful-timeout",
                "5",
                "--timeout",
                "60",
                "broker.app:create_app()",
            ],
            cwd=ROOT,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stopped as a whole, workers included
        )
    return LiveServer(f"http://{HOST}:{port}", port, process, log)


def wait_healthy(server: LiveServer, *, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited ({server.process.returncode}):\n{server.tail()}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{server.url}/api/v1/health", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn not healthy after {timeout:.0f} s:\n{server.tail()}")


def stop(server: LiveServer) -> None:
    """SIGTERM (graceful), then SIGKILL of its process group after 10 s."""
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    else:
        process.wait(timeout=10)


@contextlib.contextmanager
def serve(
    env: Mapping[str, str], log: Path, *, port: int | None = None, workers: int = 2
) -> Iterator[LiveServer]:
    """gunicorn up and healthy for the block, stopped after it (even when it fails)."""
    server = start(env, log, port=port or free_port(), workers=workers)
    try:
        wait_healthy(server)
        yield server
    finally:
        stop(server)
