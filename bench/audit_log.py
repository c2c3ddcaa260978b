#!/usr/bin/env python
"""Benchmark (not a test): what the tamper-evident access log costs, on PostgreSQL (issue #4).

(a) consents given per second with the full log, against the same writes with `audit.append`
    replaced by a no-op, in one run (target ratio >= 0.7);
(b) inclusion and consistency proofs on a 1,000,000-leaf log: median time against reading one
    leaf in the same way, and every proof's length against 2*log2(n);
(c) `tiers audit verify` on that log's export: leaves per second against hashing the same
    leaves with hashlib alone.

    .venv/bin/python bench/audit_log.py [--quick] [--leaves 1000000] [--seconds 5] [--parts abc]

Exit code 0 whatever the figures (a measurement); 1 when the bench itself cannot run, or when
the built log does not verify. See bench/README.md.
"""

from __future__ import annotations

import argparse
import binascii
import contextlib
import hashlib
import json
import math
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

# The plumbing of consent_writes.py (same directory): database reset, Redis, one Argon2 hash.
from consent_writes import _OneHash, flush_broker, reset_database

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/tiers_bench"
DEFAULT_BROKER = "redis://127.0.0.1:6379/14"  # a Redis database for the benches only: flushed
TARGET_WRITES = 0.7
# The built log is kept between runs in a schema of its own (the other benches reset `public`),
# one per size, with its Ed25519 key in instance/ (git-ignored).
LOG_SCHEMA = "bench_audit_log_{n}"
LOG_KEYS = ROOT / "instance" / "bench-audit-log-{n}"
LOG_ORIGIN = "bench.tiers.invalid/tiers/audit-log"
INTEGRATOR_PERIOD = 2.0  # seconds: broker/config.py's beat schedule for audit.integrate
BUILD_BATCH = 100_000  # leaves per integration (and per checkpoint) while building the log
SUBJECTS = 10_000  # citizens whose chains run through the built log
PASSWORD = "correct horse battery staple"
T = TypeVar("T")
PLANNED_RATE = 400  # consents/s per phase the prepared citizens must be able to feed


def line(text: str = "") -> None:
    print(text, flush=True)


# --- (a) consent writes, with and without the log ------------------------------------------


@dataclass
class Phase:
    label: str
    writes: int
    elapsed: float
    cpu: float  # seconds of CPU of this process (writers and integrator threads)
    errors: int
    exhausted: bool  # a writer ran out of consents to give before the end


def publish_charter(app: Any) -> None:
    from broker.service import publish_charter
    from common.db import unit_of_work
    from common.keyring import app_keyring

    with app.app_context():
        with unit_of_work() as session:
            source = (ROOT / "examples" / "charter.yaml").read_text(encoding="utf-8")
            publish_charter(session, source, actor="bench")
        app_keyring().active()  # the receipts' signing key, made before anything is timed


def prepare_citizens(app: Any, count: int) -> list[uuid.UUID]:
    """Sign up `count` citizens (audited, as in production); their subject ids."""
    from common.db import unit_of_work
    from consent import accounts

    accounts._hasher = _OneHash(accounts._hasher)  # type: ignore[assignment]  # one Argon2id
    run = secrets.token_hex(4)

    def one(index: int) -> uuid.UUID:
        with app.app_context(), unit_of_work() as session:
            citizen = accounts.sign_up(
                session, email=f"audit-bench-{run}-{index}@example.org", password=PASSWORD
            )
            return citizen.subject_id

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, range(count)))


def consent_commands(app: Any) -> list[dict[str, Any]]:
    """Every (purpose, recipient, mode) a citizen may consent to under the current charter."""
    from charter import service as charters
    from charter.document import terms_hash
    from common.db import unit_of_work
    from consent.models import Mode

    with app.app_context(), unit_of_work() as session:
        doc = charters.current(session).doc
        return [
            {
                "purpose_id": purpose.id,
                "terms_hash": terms_hash(purpose),
                "recipient_id": recipient,
                "mode": Mode(mode),
            }
            for purpose in doc.purposes
            for recipient in purpose.recipient_ids
            for mode in purpose.modes
        ]


class Integrator:
    """audit.integrate (seal, then sign) every 2 s in a thread, as Celery beat runs it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.stop = threading.Event()
        self.sealed = 0
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        from audit import tasks

        while not self.stop.wait(INTEGRATOR_PERIOD):
            with self.app.app_context():
                self.sealed += tasks.integrate.run()

    def __enter__(self) -> Integrator:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def write_phase(
    app: Any, label: str, jobs: list[Iterator[Any]], seconds: float, warmup: float
) -> Phase:
    """`len(jobs)` writer threads give consents (one unit of work each) for `seconds`."""
    from common.db import unit_of_work
    from consent import service as consents

    stop = threading.Event()
    done: list[list[float]] = [[] for _ in jobs]
    failed: list[int] = [0] * len(jobs)
    ran_out = threading.Event()

    def loop(index: int) -> None:
        for command in jobs[index]:
            if stop.is_set():
                return
            try:
                with app.app_context(), unit_of_work() as session:
                    consents.give(session, command)
            except Exception:
                failed[index] += 1
                continue
            done[index].append(time.perf_counter())
        if not stop.is_set():
            ran_out.set()

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    time.sleep(warmup)
    t0, cpu0 = time.perf_counter(), time.process_time()
    time.sleep(seconds)
    t1, cpu1 = time.perf_counter(), time.process_time()
    stop.set()
    for thread in threads:
        thread.join()
    writes = sum(1 for record in done for t in record if t0 <= t < t1)
    return Phase(label, writes, t1 - t0, cpu1 - cpu0, sum(failed), ran_out.is_set())


def bench_writes(app: Any, args: argparse.Namespace) -> None:
    from audit import service as audit
    from consent.service import GiveConsent

    started = time.perf_counter()
    publish_charter(app)
    combos = consent_commands(app)
    phases = 2 * args.rounds
    planned = max(
        args.clients * 4,
        int(PLANNED_RATE * (args.seconds + args.warmup) * phases / len(combos)) + 1,
    )
    citizens = prepare_citizens(app, planned)
    # Each writer thread gives consents for its own citizens, never twice the same one.
    queues = [
        iter(
            [
                GiveConsent(subject_id=subject, method="portal", **combo)
                for combo in combos
                for subject in citizens[i :: args.clients]
            ]
        )
        for i in range(args.clients)
    ]
    line(
        f"(a) prepared in {time.perf_counter() - started:.1f} s: {len(citizens)} citizens x "
        f"{len(combos)} consents each; {args.clients} writer threads in this process, "
        f"consent.service.give in one unit of work each (commit included); the integrator runs "
        f"every {INTEGRATOR_PERIOD:g} s in a thread, as beat does; {args.rounds} phases of each "
        f"kind, {args.warmup:g} s warm-up + {args.seconds:g} s each, in the order no-op, full, "
        "full, no-op, ..."
    )
    real_append = audit.append

    def no_op(session: Any, **_fields: Any) -> uuid.UUID:
        return uuid.uuid4()

    results: dict[str, list[Phase]] = {"full": [], "no-op": []}
    order = ["no-op", "full", "full", "no-op"] * ((args.rounds + 1) // 2)
    with Integrator(app) as integrator:
        for label in order[:phases]:
            audit.append = real_append if label == "full" else no_op
            try:
                phase = write_phase(app, label, queues, args.seconds, args.warmup)
            finally:
                audit.append = real_append
            results[label].append(phase)
            line(
                f"    {label:5}: {phase.writes / phase.elapsed:7.1f} consents/s "
                f"({phase.writes} in {phase.elapsed:.1f} s, {phase.errors} errors; "
                f"{phase.cpu / max(phase.writes, 1) * 1000:.2f} ms CPU per consent here)"
                + (" NOTE: a writer ran out of consents" if phase.exhausted else "")
            )
    rates = {
        label: sum(p.writes for p in phases_) / sum(p.elapsed for p in phases_)
        for label, phases_ in results.items()
    }
    ratio = rates["full"] / rates["no-op"] if rates["no-op"] else 0.0
    verdict = "met" if ratio >= TARGET_WRITES else "NOT MET"
    line(
        f"(a) consent writes: {rates['full']:.1f}/s with the log, {rates['no-op']:.1f}/s with "
        f"audit.append a no-op; ratio {ratio:.2f} (target >= {TARGET_WRITES}: {verdict}); "
        f"the integrator sealed {integrator.sealed} leaves meanwhile"
    )


# --- the 1,000,000-leaf log, built once and kept in its own schema ----------------------------


def schema_url(url: str, n: int) -> str:
    """The bench database, with the built log's schema first on the search path."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{LOG_SCHEMA.format(n=n)}"


def leaf_rows(n: int, seed: int) -> Iterator[tuple[Any, ...]]:
    """`n` leaves shaped exactly as `audit.append` writes them (RFC 8785), with their columns.

    Three in five are consent events of one of SUBJECTS citizens, chained per citizen by
    `prev`; the others are token events about nobody. Detail hashes are of random bytes (the
    detail rows are not written: they are not part of the tree).
    """
    rng = random.Random(seed)
    encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
    tags = [rng.randbytes(32).hex() for _ in range(SUBJECTS)]
    last: dict[str, str] = {}
    purposes = ["energy-savings", "mobility-planning", "social-support", "research-climate"]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(n):
        at = start + timedelta(milliseconds=i)
        entry_id = uuid.UUID(bytes=rng.randbytes(16), version=4)
        if rng.random() < 0.6:
            tag = tags[rng.randrange(SUBJECTS)]
            consent_id: uuid.UUID | None = uuid.UUID(bytes=rng.randbytes(16), version=4)
            event, actor, purpose = "consent:consent:give", "citizen", rng.choice(purposes)
            decision, detail = "given", rng.randbytes(32).hex()
            prev = last.get(tag)
        else:
            tag, consent_id, prev, purpose, detail = None, None, None, None, None
            event, actor, decision = "oauth:token:issue", f"client:{rng.randrange(50)}", "permit"
        leaf = encode(
            {
                "v": 1,
                "id": str(entry_id),
                "time": f"{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond // 1000:03d}Z",
                "event": event,
                "actor": actor,
                "subject": tag,
                "prev": prev,
                "purpose": purpose,
                "consent": str(consent_id) if consent_id is not None else None,
                "decision": decision,
                "reason": None,
                "request": None,
                "detail": detail,
            }
        ).encode()
        leaf_hash = hashlib.sha256(b"\x00" + leaf).digest()
        if tag is not None:
            last[tag] = leaf_hash.hex()
        yield (entry_id, at, event, actor, tag, purpose, consent_id, decision, leaf, leaf_hash)


def log_state(app: Any) -> tuple[int, int, bool]:
    """(leaves, latest signed size, whether that checkpoint verifies and is the stored tree)."""
    from sqlalchemy import func, select

    from audit import merkle, notes
    from audit import service as audit
    from audit.models import AuditEntry
    from common.db import unit_of_work

    with app.app_context(), unit_of_work() as session:
        leaves = session.scalar(select(func.count()).select_from(AuditEntry)) or 0
        note = audit.checkpoint(session)
        if note is None:
            return leaves, 0, False
        try:
            head = notes.parse_checkpoint(notes.open_note(note, audit.log_key()))
        except notes.NoteError:
            return leaves, 0, False
        proof = audit.inclusion(session, head.size - 1, head.size)
        ok = merkle.verify_inclusion(
            head.size - 1, head.size, proof.leaf_hash, proof.proof, head.root
        )
        return leaves, head.size, ok and proof.root == head.root


def build_log(app: Any, url: str, n: int) -> None:
    """Reset the schema, migrate it, COPY `n` leaves in, then run the real integrator."""
    from sqlalchemy import text

    from audit import service as audit
    from common import migrations
    from common.db import make_engine, unit_of_work

    schema = LOG_SCHEMA.format(n=n)
    engine = make_engine(schema_url(url, n))
    try:
        with engine.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            connection.execute(text(f"CREATE SCHEMA {schema}"))
        with engine.begin() as connection:
            migrations.upgrade(connection)
        shutil.rmtree(app.config["KEYS_DIR"], ignore_errors=True)  # a new log gets a new key
        t0 = time.perf_counter()
        raw = engine.raw_connection()
        try:
            dbapi = raw.driver_connection
            assert dbapi is not None
            with dbapi.cursor() as cursor:
                copy = (
                    "COPY audit_entry (id, occurred_at, event, actor, subject_tag, purpose, "
                    "consent_id, decision, leaf, leaf_hash) FROM STDIN"
                )
                with cursor.copy(copy) as out:
                    for row in leaf_rows(n, seed=n):
                        out.write_row(row)
            dbapi.commit()
        finally:
            raw.close()
        t1 = time.perf_counter()
        sealed = 0
        with app.app_context():
            while True:
                with unit_of_work() as session:
                    done = audit.integrate(session, batch=BUILD_BATCH)
                with unit_of_work() as session:
                    audit.sign_pending(session)
                sealed += done
                if done < BUILD_BATCH:
                    break
        line(
            f"    built: {n} leaves written with COPY in {t1 - t0:.1f} s, then sealed by "
            f"audit.service.integrate (batches of {BUILD_BATCH}, each its own transaction and "
            f"signed checkpoint) in {time.perf_counter() - t1:.1f} s"
        )
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    finally:
        engine.dispose()


def use_log(app: Any, args: argparse.Namespace, url: str) -> None:
    """Point this app at the built log (building it first unless a valid one is there)."""
    from sqlalchemy.orm import sessionmaker

    from common.db import make_engine

    n = args.leaves
    schema = LOG_SCHEMA.format(n=n)
    app.config["KEYS_DIR"] = str(LOG_KEYS).format(n=n)
    app.config["AUDIT_LOG_ORIGIN"] = LOG_ORIGIN
    engine = make_engine(schema_url(url, n))
    app.extensions["db.engine"] = engine
    app.extensions["db.sessionmaker"] = sessionmaker(bind=engine, expire_on_commit=False)
    state = (0, 0, False)
    if not args.rebuild:
        with contextlib.suppress(Exception):  # no schema yet, or an older one
            state = log_state(app)
    if state == (n, n, True):
        line(
            f"    reusing the {n}-leaf log in schema {schema} (its last checkpoint verifies; "
            "(c) checks all of it); --rebuild builds it again"
        )
        return
    line(f"    building a {n}-leaf log in schema {schema}, kept for later runs")
    build_log(app, url, n)
    state = log_state(app)
    if state != (n, n, True):
        raise SystemExit(f"the built log is not what was asked: {state}")


# --- (b) proofs -------------------------------------------------------------------------------


def timed(app: Any, work: Callable[..., T], *args: Any) -> tuple[float, T]:
    """Seconds that `work(session, *args)` takes in its own unit of work, and its result."""
    from common.db import unit_of_work

    t0 = time.perf_counter()
    with app.app_context(), unit_of_work() as session:
        result = work(session, *args)
    return time.perf_counter() - t0, result


def read_leaf(session: Any, index: int) -> bytes:
    """The baseline of (b): one leaf by its index, as the entries API reads them."""
    from sqlalchemy import select

    from audit.models import AuditEntry

    leaf: bytes = session.scalar(select(AuditEntry.leaf).where(AuditEntry.seq == index))
    return leaf


def bench_proofs(app: Any, n: int, samples: int) -> None:

    from audit import merkle, notes
    from audit import service as audit
    from common.db import unit_of_work

    rng = random.Random(0)
    bound = 2 * math.log2(n)
    with app.app_context(), unit_of_work() as session:
        note = audit.checkpoint(session)
        assert note is not None
        head = notes.parse_checkpoint(notes.open_note(note, audit.log_key()))

    baseline, inclusion, consistency = [], [], []
    longest_inclusion = longest_consistency = 0
    bad = 0
    for _ in range(samples):
        index = rng.randrange(n)
        # Baseline: the same kind of unit of work, reading one leaf by its index.
        seconds, leaf = timed(app, read_leaf, index)
        baseline.append(seconds)
        seconds, proof = timed(app, audit.inclusion, index, n)
        inclusion.append(seconds)
        longest_inclusion = max(longest_inclusion, len(proof.proof))
        if proof.leaf_hash != merkle.leaf_hash(leaf) or not merkle.verify_inclusion(
            index, n, proof.leaf_hash, proof.proof, head.root
        ):
            bad += 1
        first = rng.randrange(1, n)
        seconds, cproof = timed(app, audit.consistency, first, n)
        consistency.append(seconds)
        longest_consistency = max(longest_consistency, len(cproof.proof))
        if not merkle.verify_consistency(first, n, cproof.first_root, head.root, cproof.proof):
            bad += 1

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.2f} ms"

    line(
        f"(b) proofs on the {n}-leaf log, {samples} random ones of each kind, each in its own "
        "unit of work (as an API request makes them):"
    )
    line(f"    baseline, reading one leaf by index: median {ms(baseline)}")
    for label, values, longest in (
        ("inclusion (index, n)", inclusion, longest_inclusion),
        ("consistency (m, n)", consistency, longest_consistency),
    ):
        ratio = statistics.median(values) / statistics.median(baseline)
        verdict = "ok" if longest <= bound else "OVER"
        line(
            f"    {label}: median {ms(values)} ({ratio:.1f}x the baseline), p95 "
            f"{sorted(values)[int(0.95 * len(values))] * 1000:.2f} ms; longest proof {longest} "
            f"hashes, bound 2*log2(n) = {bound:.1f} ({verdict})"
        )
    line(f"    every proof verified against the signed checkpoint: {bad or 'yes'}")


# --- (c) offline verification -----------------------------------------------------------------


def bench_verify(app: Any, n: int, workdir: Path) -> bool:
    """Export with audit.export (what `tiers audit export` writes), time `tiers audit verify`."""
    from audit import service as audit
    from audit.export import export
    from common.db import unit_of_work

    path = workdir / "export.jsonl"
    key_file = workdir / "log-key.txt"
    t0 = time.perf_counter()
    with app.app_context():
        key_file.write_text(audit.log_key() + "\n", encoding="utf-8")
        with unit_of_work() as session, path.open("w", encoding="utf-8") as handle:
            handle.writelines(export(session))
    exported = time.perf_counter() - t0
    size = path.stat().st_size
    tiers = ROOT / ".venv" / "bin" / "tiers"
    command = [str(tiers if tiers.exists() else "tiers"), "audit", "verify", str(path)]
    command += ["--log-key", str(key_file)]
    t0 = time.perf_counter()
    verified = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    seconds = time.perf_counter() - t0
    # The same command's start-up alone (interpreter, imports, click), to tell it apart.
    t0 = time.perf_counter()
    subprocess.run([command[0], "audit", "verify", "--help"], capture_output=True, check=True)
    start_up = time.perf_counter() - t0
    verdict = (verified.stdout + verified.stderr).strip()

    # Baseline: SHA-256(0x00 || leaf) of the same leaves, already decoded and in memory.
    leaves = []
    with path.open(encoding="utf-8") as lines:
        for text in lines:
            if text.startswith('{"type":"leaf"'):
                leaves.append(binascii.a2b_base64(json.loads(text)["leaf"]))
    sha256, prefix = hashlib.sha256, b"\x00"
    t0 = time.perf_counter()
    hashes = [sha256(prefix + leaf).digest() for leaf in leaves]
    hashing = time.perf_counter() - t0
    assert len(hashes) == n
    leaf_bytes = sum(len(leaf) for leaf in leaves)

    line(
        f"(c) export of {n} leaves: {size / 1e6:.0f} MB of JSON Lines ({leaf_bytes / n:.0f} "
        f"bytes a leaf), written by audit.export in {exported:.1f} s"
    )
    line(f"    `{' '.join(['tiers', *command[1:]])}`: {verdict.splitlines()[0]}")
    line(
        f"    verify: {seconds:.1f} s wall clock, {n / seconds:,.0f} leaves/s (of which "
        f"{start_up:.1f} s is the command's start-up: {n / (seconds - start_up):,.0f} leaves/s "
        "without it)"
    )
    line(
        f"    baseline, SHA-256(0x00 || leaf) of the same leaves with hashlib alone, in memory: "
        f"{hashing:.2f} s, {n / hashing:,.0f} leaves/s"
    )
    line(
        f"    ratio verify/hashlib: {hashing / seconds:.3f} "
        f"({hashing / (seconds - start_up):.3f} without the start-up)"
    )
    return verified.returncode == 0


# --- Main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="abc", help="which parts to run (a, b, c)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 20,000 leaves, 2 s")
    parser.add_argument("--leaves", type=int, default=1_000_000, help="size of the log (b, c)")
    parser.add_argument("--rebuild", action="store_true", help="build the log even if kept")
    parser.add_argument("--samples", type=int, default=500, help="proofs of each kind (b)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per phase (a)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured lead-in (a)")
    parser.add_argument("--rounds", type=int, default=4, help="phases of each kind (a)")
    parser.add_argument("--clients", type=int, default=4, help="writer threads (a)")
    args = parser.parse_args()
    if args.quick:
        args.leaves, args.seconds, args.rounds, args.samples = 20_000, 2.0, 2, 100
    if not set(args.parts) <= set("abc") or not args.parts:
        parser.error("--parts is made of a, b and c")
    if not (2 <= args.leaves <= 10_000_000 and 1 <= args.samples <= 100_000):
        parser.error("--leaves in [2, 10000000], --samples in [1, 100000]")
    if not (0 < args.seconds <= 600 and 0 <= args.warmup <= 60 and 1 <= args.rounds <= 10):
        parser.error("--seconds in (0, 600], --warmup in [0, 60], --rounds in [1, 10]")
    if not 1 <= args.clients <= 64:
        parser.error("--clients in [1, 64]")

    database_url = os.environ.get("TIERS_BENCH_DATABASE_URL", DEFAULT_DB)
    instance = tempfile.mkdtemp(prefix="tiers-bench-")
    env = {
        **os.environ,
        "TIERS_INSTANCE": instance,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": database_url,
        # As in production: the outbox kick goes to Redis and beat (here a thread) integrates.
        "CELERY_BROKER_URL": DEFAULT_BROKER,
    }
    env.pop("TIERS_KEYS_DIR", None)
    env.pop("TIERS_AUDIT_LOG_ORIGIN", None)
    os.environ.clear()
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    from broker.app import create_app

    line(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"database {database_url.split('@')[-1]}"
    )
    ok = True
    try:
        if "a" in args.parts:
            flush_broker(DEFAULT_BROKER)
            reset_database(database_url)
            app = create_app()
            try:
                bench_writes(app, args)
            finally:
                app.extensions["db.engine"].dispose()
        if "b" in args.parts or "c" in args.parts:
            app = create_app()
            app.extensions["db.engine"].dispose()
            line("(b, c) the log:")
            use_log(app, args, database_url)
            try:
                if "b" in args.parts:
                    bench_proofs(app, args.leaves, args.samples)
                if "c" in args.parts:
                    ok = bench_verify(app, args.leaves, Path(instance))
            finally:
                app.extensions["db.engine"].dispose()
    finally:
        with contextlib.suppress(Exception):  # tidying up must not hide the figures
            flush_broker(DEFAULT_BROKER)
        shutil.rmtree(instance, ignore_errors=True)
    line(f"load average at the end: {os.getloadavg()[0]:.1f} (other work skews rates)")
    if not ok:
        line("the exported log does NOT verify: the bench's log is broken")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
