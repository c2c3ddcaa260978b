#!/usr/bin/env python
"""Benchmark (not a test): a grouped DP sum + count over synthetic readings (issue #6).

(a) the embedded path (anonymize.pushdown.aggregate_frame on chunks of whole citizens, then
    OpenDP noise) against a plain pandas `groupby` of the same data (target ratio <= 1.5);
(b) the PostgreSQL push-down (anonymize.pushdown.aggregate_sql) against pulling the same rows
    into pandas (anonymize.pushdown.aggregate_pandas on the same session), as a ratio;
and the peak memory of each, every path in a subprocess of its own.

    .venv/bin/python bench/dp_release.py [--quick] [--rows 10000000] [--parts ab] [--repeat 2]

Exit code 0 whatever the figures (a measurement); 1 when the bench cannot run or two paths
disagree on the exact aggregate. See bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/tiers_bench"
# Kept between runs (the other benches reset `public` only); "r": rows name their recipient.
SCHEMA = "bench_dp_release_r_{n}"
READINGS_PER_CITIZEN = 100  # 10,000,000 readings = 100,000 citizens
DISTRICTS = tuple(f"D{i:02d}" for i in range(1, 21))
MONTHS = 12
START_MONTH = 2025 * 12  # January 2025 as a month_index
# The demo's electricity bound (examples/holders/electricity.py, broker/service/ingestion.py):
# 288,000 Wh a day at most, 31 days a cell, so one citizen-month is clamped to [0, 8,928,000] Wh.
UPPER_WH = 288_000 * 31
RHO = Decimal("0.25")  # the demo charter's cap per release: half for the count, half for the sum
DATASET_ID = uuid.UUID("00000000-0000-4000-8000-00000000d9e1")
PURPOSE = "bench-dp-release"
RECIPIENT = "public_service"
COPY_BATCH = 1_000_000
TARGET_EMBEDDED = 1.5


def line(text: str = "") -> None:
    print(text, flush=True)


# --- the data: the same in every subprocess (seeded) ------------------------------------------


def synth(rows: int, seed: int = 6) -> Any:
    """`rows` daily readings of rows/100 citizens, sorted by citizen: each citizen lives in one
    of 20 districts; months uniform over 2025; Wh lognormal around 10 kWh a day."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)  # synthetic data only: noise never comes from numpy
    citizens = max(rows // READINGS_PER_CITIZEN, 1)
    subject = np.sort(rng.integers(0, citizens, rows, dtype=np.int64))
    home = rng.integers(0, len(DISTRICTS), citizens)
    return pd.DataFrame(
        {
            "subject_id": subject,
            "month_index": (START_MONTH + rng.integers(0, MONTHS, rows)).astype(np.int32),
            "area": pd.Categorical.from_codes(home[subject], categories=list(DISTRICTS)),
            "category": "",
            "value": rng.lognormal(math.log(10_000), 0.6, rows).astype(np.int64),
        }
    )


def grid() -> Any:
    from anonymize import pushdown

    return pushdown.Grid(
        dataset_id=DATASET_ID,
        purpose=PURPOSE,
        recipient=RECIPIENT,
        start_month=START_MONTH,
        width=1,
        buckets=MONTHS,
        areas=DISTRICTS,
        categories=None,
        lower=0,
        upper=UPPER_WH,
        max_cells=MONTHS,  # anonymize.service's default: one cell per time bucket
        at=datetime.now(UTC),
    )


def fingerprint(counts: list[int], sums: list[int]) -> str:
    return hashlib.sha256(json.dumps([counts, sums]).encode()).hexdigest()[:16]


# --- memory: the kernel's high-water mark of this process (and of a PostgreSQL backend) --------


def _status(pid: int | str, field: str) -> int:
    """A /proc/<pid>/status field in bytes (0 when it cannot be read)."""
    try:
        for row in Path(f"/proc/{pid}/status").read_text().splitlines():
            if row.startswith(field + ":"):
                return int(row.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def reset_peak(pid: int | str = "self") -> bool:
    """Reset VmHWM to the current RSS (Linux `clear_refs` 5)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# --- the workers, each in its own subprocess --------------------------------------------------


def noisy_release(exact_counts: list[int], exact_sums: list[int]) -> float:
    """The DP part as anonymize.service does it: calibrate, then draw OpenDP noise once."""
    from anonymize import noise

    t0 = time.perf_counter()
    cells = len(exact_counts)
    count = noise.gaussian(cells, l2_sensitivity=noise.l2_bound(MONTHS, 1), rho=RHO / 2)
    total = noise.gaussian(cells, l2_sensitivity=noise.l2_bound(MONTHS, UPPER_WH), rho=RHO / 2)
    count(exact_counts)
    total(exact_sums)
    return time.perf_counter() - t0


def chunked(frame: Any, rows: int) -> Iterator[Any]:
    """Slices of about `rows` rows, cut only between citizens (the frame is sorted by them)."""
    subject = frame["subject_id"].to_numpy()
    start = 0
    while start < len(frame):
        stop = min(start + rows, len(frame))
        if stop < len(frame):  # move the cut to the next citizen's first row
            stop = int(subject.searchsorted(subject[stop - 1], side="right"))
        yield frame.iloc[start:stop]
        start = stop


def work_groupby(frame: Any, _g: Any, _url: str) -> dict[str, Any]:
    """Baseline of (a): the plain, non-private pandas aggregate of the same readings."""
    out = frame.groupby(["month_index", "area"], observed=True, sort=True)["value"].agg(
        ["size", "sum"]
    )
    return {"cells": len(out)}


def work_chunks(frame: Any, g: Any, _url: str) -> dict[str, Any]:
    """(a): anonymize's embedded exact part (aggregate_frame per chunk, summed), then noise."""
    from anonymize import pushdown

    counts, sums = [0] * g.cells, [0] * g.cells
    for part in chunked(frame, pushdown.CHUNK_ROWS):
        exact = pushdown.aggregate_frame(part, g)
        counts = [a + b for a, b in zip(counts, exact.counts, strict=True)]
        sums = [a + b for a, b in zip(sums, exact.sums, strict=True)]
    return {
        "fingerprint": fingerprint(counts, sums),
        "noise_s": noisy_release(counts, sums),
    }


def _pg_session(url: str) -> Any:
    from sqlalchemy.orm import Session

    from common.db import make_engine

    return Session(make_engine(url))


def _backend_pid(session: Any) -> int:
    from sqlalchemy import text

    return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def work_pg_sql(_frame: Any, g: Any, url: str) -> dict[str, Any]:
    """(b): the fixed SQL template, run inside PostgreSQL, then noise."""
    from anonymize import pushdown

    with _pg_session(url) as session:
        exact = pushdown.aggregate_sql(session, g)
    return {
        "fingerprint": fingerprint(exact.counts, exact.sums),
        "noise_s": noisy_release(exact.counts, exact.sums),
    }


def work_pg_pull(_frame: Any, g: Any, url: str) -> dict[str, Any]:
    """Baseline of (b): the same rows pulled into pandas in chunks (aggregate_pandas), then
    noise: what anonymize would do on PostgreSQL without the push-down."""
    from anonymize import pushdown

    with _pg_session(url) as session:
        exact = pushdown.aggregate_pandas(session, g)
    return {
        "fingerprint": fingerprint(exact.counts, exact.sums),
        "noise_s": noisy_release(exact.counts, exact.sums),
    }


WORKERS: dict[str, Callable[[Any, Any, str], dict[str, Any]]] = {
    "groupby": work_groupby,
    "chunks": work_chunks,
    "pg-sql": work_pg_sql,
    "pg-pull": work_pg_pull,
}


def run_worker(name: str, rows: int, repeat: int, url: str) -> None:
    """One path in this (fresh) process: the data, then `repeat` timed runs; prints JSON."""
    import gc

    work = WORKERS[name]
    frame = synth(rows) if name in ("groupby", "chunks") else None
    g = grid()
    if name.startswith("pg"):  # warm the imports, the connection and the OpenDP library
        with _pg_session(url) as session:
            session.execute(__import__("sqlalchemy").text("SELECT 1"))
    noisy_release([0] * len(g.keys()), [0] * len(g.keys()))
    gc.collect()
    times: list[float] = []
    result: dict[str, Any] = {}
    rss_before = _status("self", "VmRSS")
    reset_peak()
    backend_peak = 0
    for _ in range(repeat):
        if name.startswith("pg"):
            backend_peak = max(backend_peak, _pg_backend_peak(work, g, url, times, result))
        else:
            t0 = time.perf_counter()
            result = work(frame, g, url)
            times.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "seconds": times,
                "rss_before": rss_before,
                "peak": _status("self", "VmHWM"),
                "backend_peak": backend_peak,
                **result,
            }
        )
    )


def _pg_backend_peak(
    work: Callable[[Any, Any, str], dict[str, Any]],
    g: Any,
    url: str,
    times: list[float],
    result: dict[str, Any],
) -> int:
    """Run `work` once while watching the PostgreSQL backend that serves it (VmHWM)."""
    from sqlalchemy import event

    from common.db import make_engine

    pids: list[int] = []
    engine = make_engine(url)

    # the first connection of the engine is the backend the work uses: reset its peak
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = int(cursor.fetchone()[0])
        pids.append(pid)
        reset_peak(pid)

    import common.db

    original = common.db.make_engine
    common.db.make_engine = lambda _url: engine  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        result.update(work(None, g, url))
        times.append(time.perf_counter() - t0)
        peak = max((_status(pid, "VmHWM") for pid in pids), default=0)
    finally:
        common.db.make_engine = original
        engine.dispose()
    return peak


def spawn(name: str, rows: int, repeat: int, url: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", name, "--rows", str(rows)]
    command += ["--repeat", str(repeat), "--database-url", url]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"the {name} worker failed")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- PostgreSQL: the staging table, loaded once with COPY and kept in its own schema -----------


def schema_url(url: str, rows: int) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{SCHEMA.format(n=rows)}"


def prepare_postgres(url: str, rows: int) -> str:
    """The staging table of the schema for `rows`, reused when complete, else rebuilt:
    migrations, then the readings with COPY (as anonymize.staging stores them), then ANALYZE."""
    from sqlalchemy import text

    from common import migrations
    from common.db import make_engine

    schema = SCHEMA.format(n=rows)
    scoped = schema_url(url, rows)
    engine = make_engine(scoped)
    try:
        with engine.connect() as connection:
            found = connection.execute(
                text("SELECT to_regclass('bench_dp_loaded') IS NOT NULL")
            ).scalar_one()
            if found:
                loaded = connection.execute(text("SELECT rows FROM bench_dp_loaded")).scalar()
                if loaded == rows:
                    line(f"    reusing the {rows:,} staged readings in schema {schema}")
                    return scoped
        line(f"    loading {rows:,} readings into schema {schema} with COPY (kept for later runs)")
        with engine.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            connection.execute(text(f"CREATE SCHEMA {schema}"))
        with engine.begin() as connection:
            migrations.upgrade(connection)
        t0 = time.perf_counter()
        _copy(engine, rows)
        with engine.begin() as connection:
            connection.execute(text("ANALYZE dp_staged_record"))
            connection.execute(text("CREATE TABLE bench_dp_loaded (rows bigint)"))
            connection.execute(text("INSERT INTO bench_dp_loaded VALUES (:n)"), {"n": rows})
        line(f"    loaded in {time.perf_counter() - t0:.0f} s (COPY, index upkeep, ANALYZE)")
    finally:
        engine.dispose()
    return scoped


def _copy(engine: Any, rows: int) -> None:
    import numpy as np

    frame = synth(rows)
    now = datetime.now(UTC)
    expires = (now + timedelta(days=3650)).isoformat()
    citizens = int(frame["subject_id"].max()) + 1
    ids = np.array([str(uuid.UUID(int=(0x4000 << 64) | i)) for i in range(citizens)])
    fixed = f"{DATASET_ID}\t{PURPOSE}\t{RECIPIENT}\t"
    raw = engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        with dbapi.cursor() as cursor:
            statement = (
                "COPY dp_staged_record (dataset_id, purpose, recipient, subject_id, month_index, "
                "area, category, value, staged_at, valid_until, expires_at) FROM STDIN"
            )
            with cursor.copy(statement) as out:
                for start in range(0, rows, COPY_BATCH):
                    part = frame.iloc[start : start + COPY_BATCH]
                    lines = (
                        fixed
                        + ids[part["subject_id"].to_numpy()].astype(object)
                        + "\t"
                        + part["month_index"].astype(str).to_numpy(dtype=object)
                        + "\t"
                        + part["area"].astype(str).to_numpy(dtype=object)
                        + "\t\t"
                        + part["value"].astype(str).to_numpy(dtype=object)
                        + f"\t{now.isoformat()}\t\\N\t{expires}\n"
                    )
                    out.write("".join(lines))
        dbapi.commit()
    finally:
        raw.close()


# --- the report -------------------------------------------------------------------------------


def mib(value: int) -> str:
    return f"{value / 2**20:,.0f} MiB"


def describe(name: str, found: dict[str, Any]) -> str:
    best = min(found["seconds"])
    text = f"{best:7.2f} s (best of {len(found['seconds'])})"
    text += f", peak RSS +{mib(found['peak'] - found['rss_before'])} over the data"
    if found.get("backend_peak"):
        text += f", PostgreSQL backend peak {mib(found['backend_peak'])}"
    if "noise_s" in found:
        text += f"; calibration + noise {found['noise_s'] * 1000:.0f} ms"
    return f"    {name:<32}{text}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="200,000 readings")
    parser.add_argument("--parts", default="ab")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per path (best)")
    parser.add_argument(
        "--database-url", default=os.environ.get("TIERS_BENCH_DATABASE_URL", DEFAULT_DB)
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    rows = 200_000 if args.quick else args.rows
    if args.worker:
        run_worker(args.worker, rows, args.repeat, args.database_url)
        return 0
    citizens = rows // READINGS_PER_CITIZEN
    line(
        f"DP release bench: grouped sum + count of {rows:,} readings, {citizens:,} citizens, "
        f"{len(DISTRICTS)} districts x {MONTHS} months = {len(DISTRICTS) * MONTHS} cells; "
        f"clamp [0, {UPPER_WH:,}] Wh per citizen-month, <= {MONTHS} cells per citizen, "
        f"rho {RHO} (discrete Gaussian, half for each vector)"
    )
    line(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    prints: dict[str, str] = {}
    if "a" in args.parts:
        line()
        line("(a) embedded path (pandas chunks of whole citizens) vs plain pandas groupby")
        base = spawn("groupby", rows, args.repeat, args.database_url)
        line(describe("plain groupby (baseline)", base))
        emb = spawn("chunks", rows, args.repeat, args.database_url)
        line(describe("anonymize aggregate_frame + noise", emb))
        prints["chunks"] = emb["fingerprint"]
        ratio = min(emb["seconds"]) / min(base["seconds"])
        verdict = "meets" if ratio <= TARGET_EMBEDDED else "misses"
        line(f"    ratio embedded/groupby = {ratio:.2f}x  ({verdict} the target <= 1.5x)")
    if "b" in args.parts:
        line()
        line("(b) PostgreSQL push-down vs pulling the rows into pandas")
        url = prepare_postgres(args.database_url, rows)
        pull = spawn("pg-pull", rows, args.repeat, url)
        line(describe("pull into pandas (baseline)", pull))
        sql = spawn("pg-sql", rows, args.repeat, url)
        line(describe("push-down SQL template + noise", sql))
        prints["pg-pull"], prints["pg-sql"] = pull["fingerprint"], sql["fingerprint"]
        ratio = min(pull["seconds"]) / min(sql["seconds"])
        line(f"    ratio pull/push-down = {ratio:.2f}x (the push-down's speed-up)")
    line()
    agree = len(set(prints.values())) <= 1
    line(
        f"exact aggregates of every path identical: {'yes' if agree else 'NO'} "
        f"({', '.join(f'{k} {v}' for k, v in prints.items())})"
    )
    line(f"load average {os.getloadavg()[0]:.2f}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
