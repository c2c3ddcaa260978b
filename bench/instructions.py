#!/usr/bin/env python
"""Benchmark (not a test): CPU instructions per request, counted by callgrind, for a consent
POST and an introspection against the bare `GET /api/v1/health`, in one run.

Timed benches on a shared 2-core machine move by ±20 % from one run to the next; an
instruction count does not (two runs agree to 0.5 %). It counts what the Flask app executes
for each request, in process through Flask's test client (no gunicorn, no client, no
PostgreSQL server CPU: bench/consent_writes.py and bench/introspection.py time those), on
PostgreSQL (`tiers_bench`, reset and migrated) with the outbox kicking Redis as in production.

Each figure comes with a floor: the same request with its service call replaced by a constant
answer (nothing read or written). The floor is what Flask, the session cookie, CSRF and the
schemas cost before any consent or token work; the issues' ratios (consent ≥ 0.25, that is
at most four bare requests; introspection ≥ 0.5, at most two) are read against it.

    .venv/bin/python bench/instructions.py [--requests 100]

Re-runs itself under `valgrind --tool=callgrind --instr-atstart=no` (about 70 s) and
switches counting on around each measured phase only. Exit code 0 whatever the figures; 1 when
the bench cannot run (no valgrind, no PostgreSQL). See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The plumbing of consent_writes.py (same directory): its database and Redis, flushed.
from consent_writes import DEFAULT_BROKER, DEFAULT_DB

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
WARMUP = 30  # requests of each kind before counting: caches filled, statements prepared
PHASES = "phases.txt"


# --- Outside valgrind: run the inner process, then read its dumps ---------------------------


def outer(args: argparse.Namespace) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None or shutil.which("callgrind_control") is None:
        print("valgrind (with callgrind_control) is needed: apt-get install valgrind")
        return 1
    directory = Path(tempfile.mkdtemp(prefix="tiers-instructions-"))
    try:
        command = [
            valgrind,
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={directory / 'cg.out'}",
            sys.executable,
            __file__,
            "--inner",
            str(directory),
            "--requests",
            str(args.requests),
        ]
        run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        phases = (directory / PHASES).read_text().split() if (directory / PHASES).exists() else []
        if run.returncode != 0 or not phases:
            print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
            print("the inner run failed (see above)")
            return 1
        print(run.stdout, end="")
        counts = {name: _totals(directory / f"cg.out.{i}") for i, name in enumerate(phases, 1)}
        report(counts, args.requests)
        return 0
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _totals(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {dump}")


KICKS_PER_PHASE = 5  # the kick phase sends requests // 5 kicks


def report(counts: dict[str, int], requests: int) -> None:
    per = {
        name: total / (requests // KICKS_PER_PHASE if name == "kick" else requests)
        for name, total in counts.items()
    }
    bare = per["bare"]

    def line(label: str, name: str, target: float | None = None) -> None:
        value = per[name]
        text = f"{label}: {value / 1e6:.2f} M instructions, {value / bare:.2f} x bare"
        if target is not None:
            ratio = bare / value
            verdict = "met" if ratio >= target else "NOT MET"
            text += f"; ratio bare/this {ratio:.2f} (target >= {target}: {verdict})"
        print(text)

    print(f"bare GET /api/v1/health: {bare / 1e6:.2f} M instructions per request (the baseline)")
    line("POST /api/v1/consents", "consent", 0.25)
    line("  floor: the same request, `give` answering a stored consent", "consent_floor")
    line("  one outbox kick to Redis (at most one per 50 ms per worker)", "kick")
    line("POST /oauth/introspect", "introspect", 0.5)
    line("  floor: the same request, answered without the database", "introspect_floor")


# --- Inside valgrind ------------------------------------------------------------------------


def inner(directory: Path, requests: int) -> None:
    os.environ.update(
        {
            "TIERS_INSTANCE": str(directory / "instance"),
            "SECRET_KEY": secrets.token_urlsafe(48),
            "DATABASE_URL": os.environ.get("TIERS_BENCH_DATABASE_URL", DEFAULT_DB),
            "CELERY_BROKER_URL": DEFAULT_BROKER,
            "TIERS_ISSUER": "http://127.0.0.1",
        }
    )
    os.environ.pop("TIERS_KEYS_DIR", None)
    sys.path[:0] = [str(ROOT), str(HERE)]
    import consent_writes
    import introspection
    from sqlalchemy import select

    from broker.app import create_app
    from broker.service import tokens
    from common import outbox
    from common.db import get_session
    from consent import service as consents
    from consent.models import Consent

    consent_writes.flush_broker(DEFAULT_BROKER)
    consent_writes.reset_database(os.environ["DATABASE_URL"])
    app = create_app()
    per_citizen = consent_writes.PER_CITIZEN_GUESS
    tokens_of = consent_writes.prepare(app, (requests + WARMUP) // per_citizen + 2, threads=1)
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    client = app.test_client()
    combos = consent_writes.combinations(client.get("/api/v1/charter").get_json())
    gives: list[Callable[[], int]] = []
    for token in tokens_of:
        browser = app.test_client()
        browser.set_cookie("tiers_session", serializer.dumps({"sid": token}))
        csrf = browser.get("/api/v1/me").get_json()["csrf_token"]
        for combo in combos:
            gives.append(
                lambda b=browser, c=combo, t=csrf: (
                    b.post("/api/v1/consents", json=c, headers={"X-CSRFToken": t}).status_code
                )
            )
    authorization, reuser_id, resource_uri = introspection.prepare(app)
    live = introspection.mint(app, reuser_id, resource_uri, 50)

    def introspect(i: int) -> bool:
        reply = client.post(
            "/oauth/introspect",
            data={"token": live[i % len(live)]},
            headers={"Authorization": authorization},
        )
        return bool(reply.get_json()["active"])

    phases: list[str] = []
    pid = str(os.getpid())

    def count(name: str, work: Callable[[], None]) -> None:
        subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
        work()
        subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
        phases.append(name)

    def repeat(times: int, status: Any, request: Callable[[int], Any]) -> Callable[[], None]:
        def work() -> None:
            for i in range(times):
                got = request(i)
                if got != status:
                    raise SystemExit(f"request {i}: expected {status!r}, got {got!r}")

        return work

    def health(_i: int) -> int:
        return client.get("/api/v1/health").status_code

    def give(i: int) -> int:
        return gives[WARMUP + i]()

    # Warm-up of every kind, then the counted phases. Kicks are counted on their own: under
    # valgrind every commit would send one, where a busy worker sends a few a second.
    repeat(WARMUP, 200, health)()
    repeat(WARMUP, 201, lambda i: gives[i]())()
    repeat(WARMUP, True, introspect)()
    outbox._kicker.kick = lambda: None  # type: ignore[method-assign]
    count("bare", repeat(requests, 200, health))
    count("consent", repeat(requests, 201, give))
    count("kick", repeat(requests // KICKS_PER_PHASE, None, lambda _i: outbox._send_kick()))
    count("introspect", repeat(requests, True, introspect))

    # The floors: the same requests, their service calls answering a constant.
    with app.app_context():
        stored = get_session().scalars(select(Consent).limit(1)).one()
        stored.events  # noqa: B018 (loaded before the session goes)
        get_session().expunge_all()
    consents.give = lambda _session, _command: stored  # type: ignore[assignment]
    tokens.introspect_basic = lambda *_args: {"active": False}  # type: ignore[assignment]
    count("consent_floor", repeat(requests, 201, give))  # the same bodies: nothing is written
    count("introspect_floor", repeat(requests, False, introspect))
    (directory / PHASES).write_text("\n".join(phases))
    consent_writes.flush_broker(DEFAULT_BROKER)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="requests per counted phase")
    parser.add_argument("--inner", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 10 <= args.requests <= 10_000:
        parser.error("--requests in [10, 10000]")
    if args.inner is not None:
        inner(args.inner, args.requests)
        return 0
    return outer(args)


if __name__ == "__main__":
    sys.exit(main())
