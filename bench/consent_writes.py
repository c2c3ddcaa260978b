#!/usr/bin/env python
"""Benchmark (not a test): consents given per second through `POST /api/v1/consents`, against
the same server's bare JSON endpoint `GET /api/v1/health`, in one run.

PostgreSQL (`tiers_bench`, schema reset and migrated), gunicorn with 2 sync workers, concurrent
clients on loopback, outbox kicks to Redis as in production (no Celery worker: messages only
queue). Citizens (Argon2) and their sessions are prepared before anything is timed; every
measured POST gives a new consent (purpose x recipient x citizen), so only real 201s count.

    .venv/bin/python bench/consent_writes.py [--seconds 10] [--clients 8] [--eager]

Prints both rates and their ratio (target >= 0.25). Exit code 0 whatever the ratio (it is a
measurement); 1 only when the bench itself cannot run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/tiers_bench"
DEFAULT_BROKER = "redis://127.0.0.1:6379/14"  # a Redis database for the bench only: flushed
TARGET_RATIO = 0.25
PLANNED_RATE = 600  # consents/s the default number of citizens can feed for the whole phase
PER_CITIZEN_GUESS = 9  # (purpose, recipient, mode) combinations per citizen in the demo charter
PASSWORD = "correct horse battery staple"
HOST = "127.0.0.1"  # loopback only
REQUEST_TIMEOUT = 10.0


# --- HTTP, one short connection per request (gunicorn's sync workers close after each) ----


@dataclass
class Reply:
    status: int
    body: bytes
    cookie: str | None  # the new tiers_session value when the response sets one


def call(
    port: int,
    method: str,
    path: str,
    *,
    cookie: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    """One request; OSError / HTTPException propagate (counted as errors by the caller)."""
    all_headers = {"Accept": "application/json", **(headers or {})}
    if cookie is not None:
        all_headers["Cookie"] = f"tiers_session={cookie}"
    if body is not None:
        all_headers["Content-Type"] = "application/json"
    connection = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT)
    try:
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        data = response.read()
        new_cookie = None
        for name, value in response.getheaders():
            if name.lower() == "set-cookie" and value.startswith("tiers_session="):
                new_cookie = value.split(";", 1)[0].split("=", 1)[1]
        return Reply(response.status, data, new_cookie)
    finally:
        connection.close()


# --- CPU accounting (Linux /proc; silently absent elsewhere) -------------------------------

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _machine_busy_ticks() -> int:
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values[:8]) - idle


@dataclass(frozen=True)
class CpuSnapshot:
    server: float  # seconds of CPU, gunicorn master and workers
    client: float  # seconds of CPU, this process (the client threads)
    machine: float  # busy seconds of every CPU together


def cpu_snapshot(server_pid: int) -> CpuSnapshot:
    times = os.times()
    server = _proc_ticks(server_pid) + sum(_proc_ticks(c) for c in _children(server_pid))
    return CpuSnapshot(server / TICK, times.user + times.system, _machine_busy_ticks() / TICK)


def cpu_line(before: CpuSnapshot, after: CpuSnapshot, requests: int, elapsed: float) -> str:
    if not requests or not after.machine:
        return ""
    server = (after.server - before.server) / requests * 1000
    client = (after.client - before.client) / requests * 1000
    machine = (after.machine - before.machine) / requests * 1000
    busy = (after.machine - before.machine) / elapsed / (os.cpu_count() or 1) * 100
    return (
        f"  CPU per request: gunicorn {server:.2f} ms, client {client:.2f} ms, "
        f"rest of machine (PostgreSQL, Redis, ...) {max(machine - server - client, 0):.2f} ms; "
        f"CPUs {busy:.0f}% busy"
    )


# --- Load: N client threads for a fixed duration ------------------------------------------


@dataclass
class PhaseResult:
    ok: int
    statuses: Counter[str]
    elapsed: float
    exhausted: bool
    cpu: str = ""


@dataclass
class Citizen:
    token: str
    cookie: str
    csrf: str = ""
    todo: list[dict[str, str]] = field(default_factory=list)


def run_phase(
    clients: int,
    warmup: float,
    seconds: float,
    work: Callable[[int], Callable[[], str | None]],
    ok_status: str,
    server_pid: int,
) -> PhaseResult:
    """Run `clients` threads; each calls its job in a loop and returns a status string, or
    None when it has no work left (that ends the phase early: every client must stay busy).
    Only completions inside [warmup, warmup + seconds] count."""
    stop = threading.Event()
    exhausted = threading.Event()
    done: list[list[tuple[float, str]]] = [[] for _ in range(clients)]

    def loop(index: int) -> None:
        job = work(index)
        record = done[index]
        while not stop.is_set():
            try:
                status = job()
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
            if status is None:
                exhausted.set()
                return
            record.append((time.perf_counter(), status))

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    t0 = start + warmup
    while time.perf_counter() < t0 and not exhausted.is_set():
        time.sleep(0.01)
    t0 = time.perf_counter()
    cpu_before = cpu_snapshot(server_pid)
    t1 = t0 + seconds
    while time.perf_counter() < t1 and not exhausted.is_set():
        time.sleep(0.01)
    t1 = min(t1, time.perf_counter())
    cpu_after = cpu_snapshot(server_pid)
    stop.set()
    for thread in threads:
        thread.join(timeout=REQUEST_TIMEOUT + 5)
    statuses: Counter[str] = Counter(s for record in done for t, s in record if t0 <= t < t1)
    elapsed = max(t1 - t0, 1e-9)
    return PhaseResult(
        ok=statuses.get(ok_status, 0),
        statuses=statuses,
        elapsed=elapsed,
        exhausted=exhausted.is_set(),
        cpu=cpu_line(cpu_before, cpu_after, sum(statuses.values()), elapsed),
    )


# --- Preparation (not measured) ------------------------------------------------------------


def reset_database(url: str) -> None:
    from sqlalchemy import text

    from common import migrations
    from common.db import make_engine

    engine = make_engine(url)
    try:
        if engine.dialect.name != "postgresql":
            raise SystemExit(f"the bench runs on PostgreSQL, not {engine.dialect.name}")
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        with engine.begin() as connection:
            migrations.upgrade(connection)
    finally:
        engine.dispose()


def flush_broker(url: str | None) -> None:
    if not url or not url.startswith("redis://"):
        return
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()


class _OneHash:
    """A PasswordHasher whose hash() is computed once: same Argon2id parameters and format."""

    def __init__(self, hasher: Any) -> None:
        self._hasher = hasher
        self._hash: str | None = None
        self._lock = threading.Lock()

    def hash(self, password: str) -> str:
        with self._lock:
            if self._hash is None:
                self._hash = self._hasher.hash(password)
            return self._hash

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hasher, name)


def prepare(app: Any, citizens: int, threads: int) -> list[str]:
    """Publish the demo charter, make the signing key, sign up citizens; their session tokens."""
    from broker.service import publish_charter
    from common.db import unit_of_work
    from common.keyring import app_keyring
    from consent import accounts

    with app.app_context():
        with unit_of_work() as session:
            source = (ROOT / "examples" / "charter.yaml").read_text(encoding="utf-8")
            publish_charter(session, source, actor="bench")
        app_keyring().active()  # made now, not by two workers racing on the first consent

    policy = accounts.SessionPolicy(
        app.config["CITIZEN_SESSION_IDLE"], app.config["CITIZEN_SESSION_MAX"]
    )
    run = secrets.token_hex(4)
    # sign_up as it is, but one real Argon2id hash (same parameters) is computed once and
    # reused: the bench never checks passwords, and 0.1 s of Argon2 per citizen is only prep.
    accounts._hasher = _OneHash(accounts._hasher)  # type: ignore[assignment]  # this process

    def one(index: int) -> str:
        with app.app_context(), unit_of_work() as session:
            citizen = accounts.sign_up(
                session, email=f"bench-{run}-{index}@example.org", password=PASSWORD
            )
            return accounts.start_session(session, citizen, policy=policy)

    with ThreadPoolExecutor(max_workers=threads) as pool:  # Argon2 releases the GIL
        return list(pool.map(one, range(citizens)))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def add_profile_argument(parser: argparse.ArgumentParser) -> None:
    """`--profile DIR`, for a bench that starts gunicorn with PROFILE_HOOKS."""
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="directory: each gunicorn worker writes a cProfile of its CPU time there "
        "(figures are then slower; read them with python -m pstats)",
    )


# gunicorn hooks for --profile: from its first POST (the measured phase, a consent or an
# introspection: the bare phase only GETs), each worker profiles its own CPU time (cProfile
# with process_time: waits on the database or the clients do not count) and dumps it on exit.
PROFILE_HOOKS = """
import cProfile, os, time

def post_fork(server, worker):
    worker.tiers_profile = None

def pre_request(worker, req):
    if worker.tiers_profile is None and req.method == "POST":  # the measured phase only
        worker.tiers_profile = cProfile.Profile(time.process_time)
        worker.tiers_profile.enable()

def worker_exit(server, worker):
    if worker.tiers_profile is None:
        return
    worker.tiers_profile.disable()
    worker.tiers_profile.dump_stats(os.path.join({directory!r}, f"worker-{{os.getpid()}}.prof"))
"""


def start_gunicorn(
    workers: int, port: int, env: dict[str, str], log: Path, profile: Path | None = None
) -> subprocess.Popen[bytes]:
    venv_gunicorn = ROOT / ".venv" / "bin" / "gunicorn"
    gunicorn = str(venv_gunicorn) if venv_gunicorn.exists() else shutil.which("gunicorn")
    if gunicorn is None:
        raise SystemExit("gunicorn not found (make install)")
    hooks: list[str] = []
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        config = log.parent / "gunicorn_profile.py"
        config.write_text(PROFILE_HOOKS.format(directory=str(profile.resolve())))
        hooks = ["-c", str(config)]
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                gunicorn,
                *hooks,
                "-w",
                str(workers),
                "-b",
                f"{HOST}:{port}",
                "--log-level",
                "warning",
                "--graceful-timeout",
                "5",
                "broker.app:create_app()",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole at the end
        )


def wait_healthy(
    server: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited ({server.returncode}):\n{log.read_text()}")
        try:
            if call(port, "GET", "/api/v1/health").status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.1)
    raise SystemExit(f"gunicorn not healthy after {timeout:.0f} s:\n{log.read_text()}")


def stop_gunicorn(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful), then SIGKILL of its own process group after 10 s."""
    if server.poll() is not None:
        return
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=5)


def combinations(charter: dict[str, Any]) -> list[dict[str, str]]:
    """Every (purpose, recipient, mode) a citizen may consent to under the current charter."""
    combos = []
    for purpose in charter["document"]["purposes"]:
        if purpose["recipients"] == "named":
            recipients = [r["id"] for r in purpose["named_reusers"]]
        else:
            recipients = list(purpose["reuser_categories"])
        modes = purpose["modes"]
        for recipient in recipients:
            for mode in modes:
                combo = {
                    "purpose_id": purpose["id"],
                    "terms_hash": charter["terms_hashes"][purpose["id"]],
                    "recipient_id": recipient,
                }
                if len(modes) > 1:
                    combo["mode"] = mode
                combos.append(combo)
    return combos


def open_browser(port: int, citizen: Citizen) -> None:
    """GET /api/v1/me: the CSRF token, and the cookie that now holds its secret half."""
    reply = call(port, "GET", "/api/v1/me", cookie=citizen.cookie)
    if reply.status != 200:
        raise SystemExit(f"/api/v1/me answered {reply.status}: {reply.body[:300]!r}")
    citizen.csrf = json.loads(reply.body)["csrf_token"]
    citizen.cookie = reply.cookie or citizen.cookie


# --- Main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured lead-in per phase")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument(
        "--citizens",
        type=int,
        default=0,
        help=f"citizens to prepare (default: enough for {PLANNED_RATE} consents/s)",
    )
    parser.add_argument(
        "--eager",
        action="store_true",
        help="no CELERY_BROKER_URL: the outbox relay runs in-process after each commit",
    )
    add_profile_argument(parser)
    args = parser.parse_args()
    if not (0 < args.seconds <= 600 and 0 <= args.warmup <= 60 and 1 <= args.clients <= 256):
        parser.error("--seconds in (0, 600], --warmup in [0, 60], --clients in [1, 256]")
    if not (1 <= args.workers <= 64 and 0 <= args.citizens <= 100_000):
        parser.error("--workers in [1, 64], --citizens in [0, 100000]")

    database_url = os.environ.get("TIERS_BENCH_DATABASE_URL", DEFAULT_DB)
    broker_url = None if args.eager else DEFAULT_BROKER
    instance = tempfile.mkdtemp(prefix="tiers-bench-")
    env = {
        **os.environ,
        "TIERS_INSTANCE": instance,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": database_url,
    }
    env.pop("CELERY_BROKER_URL", None)
    env.pop("TIERS_KEYS_DIR", None)
    if broker_url:
        env["CELERY_BROKER_URL"] = broker_url
    os.environ.clear()
    os.environ.update(env)  # create_app() in this process reads the same settings

    sys.path.insert(0, str(ROOT))
    from flask.sessions import SecureCookieSessionInterface

    from broker.app import create_app

    cpus = os.cpu_count() or 1
    print(
        f"machine: {cpus} CPUs; database {database_url.split('@')[-1]}; "
        f"outbox kick: {broker_url or 'eager, in-process (no CELERY_BROKER_URL)'}",
        flush=True,
    )

    server: subprocess.Popen[bytes] | None = None
    try:
        flush_broker(broker_url)
        started = time.perf_counter()
        reset_database(database_url)
        app = create_app()
        # Citizens first (the number needs the charter's combinations: at most 9 in the demo).
        planned = args.citizens or max(
            64, int(PLANNED_RATE * (args.seconds + args.warmup) / PER_CITIZEN_GUESS) + 1
        )
        tokens = prepare(app, planned, threads=max(2, cpus))
        interface = app.session_interface
        assert isinstance(interface, SecureCookieSessionInterface)  # Flask's default
        serializer = interface.get_signing_serializer(app)
        assert serializer is not None  # SECRET_KEY is set
        citizens = [Citizen(token, serializer.dumps({"sid": token})) for token in tokens]
        app.extensions["db.engine"].dispose()

        port = free_port()
        log = Path(instance) / "gunicorn.log"
        server = start_gunicorn(args.workers, port, env, log, args.profile)
        wait_healthy(server, port, log)
        charter = json.loads(call(port, "GET", "/api/v1/charter").body)
        combos = combinations(charter)
        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            list(pool.map(lambda c: open_browser(port, c), citizens))
        for citizen in citizens:
            citizen.todo = [dict(c) for c in combos]
        print(
            f"prepared in {time.perf_counter() - started:.1f} s: charter "
            f"{charter['version']}, {len(citizens)} citizens x {len(combos)} consents each; "
            f"{args.clients} clients, {args.workers} gunicorn workers, "
            f"{args.warmup:g} s warm-up + {args.seconds:g} s per phase",
            flush=True,
        )

        # Bare endpoint: the ceiling of this server, machine and client.
        def bare_job(_index: int) -> Callable[[], str | None]:
            return lambda: str(call(port, "GET", "/api/v1/health").status)

        bare = run_phase(args.clients, args.warmup, args.seconds, bare_job, "200", server.pid)
        bare_rate = bare.ok / bare.elapsed
        print(
            f"bare GET /api/v1/health: {bare_rate:.1f} req/s ({bare.ok} requests, "
            f"{args.clients} clients, {args.workers} gunicorn workers, "
            f"{errors(bare, '200')} errors)",
            flush=True,
        )
        if bare.cpu:
            print(bare.cpu, flush=True)

        # Consent writes: each client gives consents for its own citizens, never twice the same.
        def consent_job(index: int) -> Callable[[], str | None]:
            mine = citizens[index :: args.clients]
            queue = [(c, c.todo[i]) for i in range(len(combos)) for c in mine]
            position = iter(range(len(queue)))

            def job() -> str | None:
                i = next(position, None)
                if i is None:
                    return None
                citizen, combo = queue[i]
                reply = call(
                    port,
                    "POST",
                    "/api/v1/consents",
                    cookie=citizen.cookie,
                    headers={"X-CSRFToken": citizen.csrf},
                    body=json.dumps(combo).encode(),
                )
                citizen.cookie = reply.cookie or citizen.cookie
                return str(reply.status)

            return job

        writes = run_phase(args.clients, args.warmup, args.seconds, consent_job, "201", server.pid)
        write_rate = writes.ok / writes.elapsed
        print(
            f"POST /api/v1/consents: {write_rate:.1f} consents/s ({writes.ok} created, "
            f"{errors(writes, '201')} errors, over {writes.elapsed:.1f} s)",
            flush=True,
        )
        if writes.cpu:
            print(writes.cpu, flush=True)
        if writes.exhausted:
            print(
                "  note: a client ran out of consents to give and the phase ended early; "
                "raise --citizens"
            )
    finally:
        if server is not None:
            stop_gunicorn(server)
        try:
            flush_broker(broker_url)
        except Exception as exc:  # tidying up must not hide the figures
            print(f"note: could not flush {broker_url}: {exc}", file=sys.stderr)
        shutil.rmtree(instance, ignore_errors=True)

    ratio = write_rate / bare_rate if bare_rate else 0.0
    verdict = "met" if ratio >= TARGET_RATIO else "NOT MET"
    print(f"ratio consent/bare: {ratio:.2f} (target >= {TARGET_RATIO}: {verdict})")
    return 0


def errors(phase: PhaseResult, ok: str) -> str:
    """The number of non-`ok` outcomes, with their breakdown when there are any."""
    others = {k: v for k, v in sorted(phase.statuses.items()) if k != ok}
    total = sum(others.values())
    return f"{total} ({', '.join(f'{k}: {v}' for k, v in others.items())})" if total else "0"


if __name__ == "__main__":
    sys.exit(main())
