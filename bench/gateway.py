#!/usr/bin/env python
"""Benchmark (not a test): records per second streamed through the data gateway
(`GET /api/v1/grants/<id>/records`, an individual-mode grant) against reading the very same
records directly from the demo holder with a plain HTTP client, in one run; and the peak
memory (RSS) of the Tiers server process at two sizes, to show that it stays flat.

PostgreSQL (`tiers_bench`, schema reset and migrated), gunicorn with one sync worker, and the
demo electricity distributor (examples/holders, its half-hourly load curve: 48 records per
meter per day) served in its own process, checking Tiers' tokens against Tiers' JWKS.
`--subjects` consenting citizens are linked to as many meters; the window is chosen in whole
days to reach each size (1,000 meters x 21 days = 1,008,000 records).

    .venv/bin/python bench/gateway.py [--subjects 1000] [--sizes 100000,1000000]
    .venv/bin/python bench/gateway.py --quick     # 200 meters, 20,000 and 100,000 records

Prints both rates and their ratio (target >= 0.5) and the server's peak RSS per size. Exit
code 0 whatever the figures (it is a measurement); 1 only when the bench cannot run or a read
is incomplete. See bench/README.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from consent_writes import (
    HOST,
    _children,
    _OneHash,
    free_port,
    reset_database,
    stop_gunicorn,
    wait_healthy,
)
from introspection import _register, basic

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/tiers_bench"
TARGET_RATIO = 0.5
PER_DAY = 48  # the load curve's half-hours per meter per day
START = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday in winter: heating on, nothing special
PURPOSE = "energy-coaching"
REUSER = "ecowatt-conseil"  # the charter names it for energy coaching
READ_TIMEOUT = 60.0


# --- Processes ------------------------------------------------------------------------------


def start_gunicorn(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Two sync workers (one streams the read; the other answers the holder, which fetches
    Tiers' JWKS to check the token), and a long timeout: a sync worker is killed when one
    request outlasts it, and a 1M-record read takes a while."""
    venv_gunicorn = ROOT / ".venv" / "bin" / "gunicorn"
    gunicorn = str(venv_gunicorn) if venv_gunicorn.exists() else shutil.which("gunicorn")
    if gunicorn is None:
        raise SystemExit("gunicorn not found (make install)")
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                *(gunicorn, "-w", "2", "-b", f"{HOST}:{port}", "--timeout", "1800"),
                *("--log-level", "warning", "--graceful-timeout", "5", "broker.app:create_app()"),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_holder(port: int, tiers_url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "examples.holders", "electricity", "--port", str(port)),
                *("--tiers-url", tiers_url, "--host", HOST),
            ],
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if not k.startswith("HOLDER_FAULT")},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_holder(holder: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if holder.poll() is not None:
            raise SystemExit(f"the holder exited ({holder.returncode}):\n{log.read_text()}")
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the holder did not start:\n{log.read_text()}")


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class PeakRss:
    """The peak RSS of the server's workers during a phase (the largest of them): the
    kernel's high-water mark (VmHWM), reset at the start (`clear_refs` 5) where allowed, and
    sampled every 20 ms."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.start_kb = max(_status_kb(pid, "VmRSS") for pid in pids)
        try:
            for pid in pids:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.sampled = self.start_kb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            try:
                now = max(_status_kb(pid, "VmRSS") for pid in self.pids)
            except OSError:
                return
            self.sampled = max(self.sampled, now)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        peak = max(_status_kb(pid, "VmHWM") for pid in self.pids) if self.reset else 0
        return max(peak, self.sampled)


# --- Preparation (not measured) ------------------------------------------------------------


@dataclass
class Territory:
    holder_url: str
    dataset_id: uuid.UUID
    reuser_basic: str
    meters: list[str]


def prepare(app: Any, holder_url: str, subjects: int) -> Territory:
    """The charter, a holder and its load curve, the reuser, and `subjects` citizens linked
    to meters and consenting to energy coaching by the reuser (broker/territory.py builds
    each piece, as the gateway tests do)."""
    from broker import territory as builder
    from broker.models import Role
    from broker.service import datasets, organisations
    from common.db import unit_of_work
    from common.keyring import app_keyring
    from consent import accounts
    from examples.holders import DEFAULT_SEED
    from examples.holders.electricity import Fleet

    accounts._hasher = _OneHash(accounts._hasher)  # type: ignore[assignment]  # prep only
    fleet = Fleet(DEFAULT_SEED)
    meters = [fleet.ids.encode(i) for i in range(subjects)]
    with app.app_context():
        with unit_of_work() as session:
            builder.publish_example_charter(session, actor="bench")
        app_keyring().active()
        with unit_of_work() as session:
            # Confidential clients too (client_credentials), to get tokens over HTTP.
            _register(session, Role.HOLDER, builder.HOLDER, holder_url)
            reuser = _register(session, Role.REUSER, REUSER, None)
        with app.test_request_context(), unit_of_work() as session:
            org = organisations.get_organisation_by_slug(session, builder.HOLDER)
            dataset = datasets.register(
                session,
                holder_id=org.id,
                settings=builder.load_curve_settings(holder_url),
                actor="bench",
            )
            dataset_id = dataset.id
            holder = datasets.as_holder(org)
        run = secrets.token_hex(3)
        for start in range(0, subjects, 100):
            with unit_of_work() as session:
                for index in range(start, min(subjects, start + 100)):
                    builder.citizen(
                        session,
                        holder,
                        meters[index],
                        email=f"bench-{run}-{index}@example.org",
                        password="x" * 12,
                        actor="bench",
                    )
    return Territory(holder_url, dataset_id, basic(*reuser), meters)


def reuser_token(port: int, authorization: str) -> str:
    connection = http.client.HTTPConnection(HOST, port, timeout=READ_TIMEOUT)
    connection.request(
        "POST",
        "/oauth/token",
        body=urlencode({"grant_type": "client_credentials", "scope": "access:request"}),
        headers={
            "Authorization": authorization,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    if response.status != 200:
        raise SystemExit(f"no reuser token: {response.status} {body}")
    return str(body["access_token"])


def api(port: int, method: str, path: str, token: str, body: Any = None) -> Any:
    connection = http.client.HTTPConnection(HOST, port, timeout=READ_TIMEOUT)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    payload = None
    if body is not None:
        payload = json.dumps(body)
        headers["Content-Type"] = "application/json"
    connection.request(method, path, body=payload, headers=headers)
    response = connection.getresponse()
    data = json.loads(response.read() or b"null")
    connection.close()
    if response.status >= 300:
        raise SystemExit(f"{method} {path}: {response.status} {data}")
    return data


def grant_for(app: Any, port: int, token: str, dataset_id: uuid.UUID) -> str:
    """The reuser files its request over the API (the load curve's power is a sensitive field,
    so the committee decides); the committee's approval is made in-process."""
    from broker.service import access
    from common.db import unit_of_work

    ref = str(dataset_id)
    filed = api(
        port,
        "POST",
        "/api/v1/access-requests",
        token,
        {
            "purpose": PURPOSE,
            "mode": "individual",
            "datasets": [ref],
            "fields": {ref: ["start", "power_w"]},
            "justification": "Coaching the households who asked us to, as the charter allows.",
            "period_end": (datetime.now(UTC) + timedelta(days=90)).isoformat(),
        },
    )
    if filed["status"] == "pending":
        with app.app_context(), unit_of_work() as session:
            access.approve(session, uuid.UUID(filed["id"]), actor="bench", reason="Benchmark.")
    grants = api(port, "GET", "/api/v1/grants", token)
    if not grants:
        raise SystemExit(f"no grant: the request is {filed['status']}")
    return str(grants[0]["id"])


# --- The two readers ------------------------------------------------------------------------


@dataclass
class Result:
    records: int
    seconds: float
    bytes: int
    peak_kb: int = 0
    start_kb: int = 0

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def read_gateway(port: int, token: str, grant_id: str, window: dict[str, str]) -> Result:
    """The reuser's read: the whole streamed answer, its tail parsed for the count."""
    connection = http.client.HTTPConnection(HOST, port, timeout=READ_TIMEOUT)
    started = time.perf_counter()
    connection.request(
        "GET",
        f"/api/v1/grants/{grant_id}/records?{urlencode(window)}",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    response = connection.getresponse()
    if response.status != 200:
        raise SystemExit(f"gateway read: {response.status} {response.read()[:500]!r}")
    size = 0
    tail = b""
    while chunk := response.read(1 << 16):
        size += len(chunk)
        tail = (tail + chunk)[-(1 << 18) :]
    seconds = time.perf_counter() - started
    connection.close()
    marker = tail.rfind(b'],"count": ')
    if marker < 0:
        raise SystemExit("the gateway's answer is incomplete (no closing count)")
    closing = json.loads(b"{" + tail[marker + 2 :])
    if closing.get("complete") is not True or not closing.get("receipt"):
        raise SystemExit(f"the gateway's answer is incomplete: {closing}")
    return Result(int(closing["count"]), seconds, size)


def read_direct(holder_url: str, token: str, meters: list[str], window: dict[str, str]) -> Result:
    """The same pages from the holder: the same subjects in the same order and chunks, the
    same window, limit and kind of token, on one keep-alive connection; each page parsed."""
    from broker.service.gateway import PAGE_LIMIT, SUBJECTS_PER_CALL

    port = int(holder_url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection(HOST, port, timeout=READ_TIMEOUT)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    refs = sorted(meters)
    records = size = 0
    started = time.perf_counter()
    for first in range(0, len(refs), SUBJECTS_PER_CALL):
        chunk = refs[first : first + SUBJECTS_PER_CALL]
        cursor: str | None = None
        while True:
            query = [("subject", ref) for ref in chunk]
            query += [("since", window["since"]), ("until", window["until"])]
            if cursor:
                query.append(("cursor", cursor))
            query.append(("limit", str(PAGE_LIMIT)))
            connection.request(
                "GET", f"/datasets/load_curve/records?{urlencode(query)}", headers=headers
            )
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise SystemExit(f"holder read: {response.status} {body[:300]!r}")
            size += len(body)
            page = json.loads(body)
            records += len(page["records"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
    seconds = time.perf_counter() - started
    connection.close()
    return Result(records, seconds, size)


def holder_token(app: Any, grant_id: str, dataset_id: uuid.UUID) -> str:
    """The token the gateway sends the holder for this grant (RFC 9068, 120 s), minted the
    same way, for the direct reads."""
    from broker.models import AccessGrant, Dataset
    from broker.service import gateway, tokens
    from common.db import unit_of_work
    from common.keyring import app_keyring

    with app.app_context(), unit_of_work() as session:
        issuer = app.config["ISSUER"]
        signer = tokens.Issuer(issuer, f"{issuer}/api", app_keyring())
        grant = session.get(AccessGrant, uuid.UUID(grant_id))
        dataset = session.get(Dataset, dataset_id)
        assert grant is not None
        assert dataset is not None
        credential = gateway.holder_credential(signer, dataset, grant)
        token = None if credential is None else credential.current()
        assert token is not None
        return token


# --- Main ----------------------------------------------------------------------------------


def window_for(size: int, subjects: int) -> tuple[dict[str, str], int]:
    days = max(1, round(size / (subjects * PER_DAY)))
    until = START + timedelta(days=days)
    return {"since": START.isoformat(), "until": until.isoformat()}, subjects * days * PER_DAY


def profile(master: int, output: str) -> subprocess.Popen[bytes]:
    """py-spy sampling the server's workers (100 Hz), written as collapsed stacks on SIGINT."""
    spy = shutil.which("py-spy", path=str(ROOT / ".venv" / "bin")) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    command = [spy, "record", "--pid", str(master), "--subprocesses", "--format", "raw"]
    return subprocess.Popen([*command, "--rate", "100", "-o", output], stdout=subprocess.DEVNULL)


def worker_pids(master: int, count: int) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = _children(master)
        if len(children) >= count:
            return children
        time.sleep(0.1)
    raise SystemExit("no gunicorn worker")


def mb(kb: int) -> str:
    return f"{kb / 1024:.0f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=1000, help="consenting linked meters")
    parser.add_argument(
        "--sizes", default="100000,1000000", help="records per read (the ratio is the last's)"
    )
    parser.add_argument("--quick", action="store_true", help="200 meters, 20k and 100k records")
    parser.add_argument(
        "--py-spy",
        metavar="FILE",
        help="profile the server during the largest read (collapsed stacks; needs py-spy)",
    )
    args = parser.parse_args()
    if args.quick:
        args.subjects, args.sizes = 200, "20000,100000"
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if not (1 <= args.subjects <= 2000 and sizes and all(0 < s <= 5_000_000 for s in sizes)):
        parser.error("--subjects in [1, 2000] (the holder's meters); sizes in (0, 5e6]")

    database_url = os.environ.get("TIERS_BENCH_DATABASE_URL", DEFAULT_DB)
    instance = tempfile.mkdtemp(prefix="tiers-bench-")
    port, holder_port = free_port(), free_port()
    tiers_url, holder_url = f"http://{HOST}:{port}", f"http://{HOST}:{holder_port}"
    env = {
        **os.environ,
        "TIERS_INSTANCE": instance,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": database_url,
        "TIERS_ISSUER": tiers_url,
    }
    for name in ("CELERY_BROKER_URL", "TIERS_KEYS_DIR"):  # the read publishes nothing to wait on
        env.pop(name, None)
    os.environ.clear()
    os.environ.update(env)

    sys.path.insert(0, str(ROOT))
    from broker.app import create_app

    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count() or 1} CPUs, load {load[0]:.2f}; "
        f"database {database_url.split('@')[-1]}",
        flush=True,
    )
    server = holder = None
    try:
        started = time.perf_counter()
        reset_database(database_url)
        app = create_app()
        territory = prepare(app, holder_url, args.subjects)
        app.extensions["db.engine"].dispose()
        log, holder_log = Path(instance) / "gunicorn.log", Path(instance) / "holder.log"
        server = start_gunicorn(port, env, log)
        holder = start_holder(holder_port, tiers_url, holder_log)
        wait_healthy(server, port, log)
        wait_holder(holder, holder_port, holder_log)
        token = reuser_token(port, territory.reuser_basic)
        grant_id = grant_for(app, port, token, territory.dataset_id)
        app.extensions["db.engine"].dispose()
        pids = worker_pids(server.pid, 2)
        print(
            f"prepared in {time.perf_counter() - started:.1f} s: {args.subjects} consenting "
            f"citizens linked to meters, a grant on the load curve (start, power_w); "
            f"gunicorn with 2 sync workers, the holder in its own process",
            flush=True,
        )
        # A small read first, unmeasured: imports, connections, the log's first checkpoint.
        warm, _ = window_for(1, args.subjects)
        read_gateway(port, token, grant_id, warm)

        results: list[tuple[int, Result, Result]] = []
        for size in sizes:
            window, expected = window_for(size, args.subjects)
            direct = read_direct(
                holder_url,
                holder_token(app, grant_id, territory.dataset_id),
                territory.meters,
                window,
            )
            app.extensions["db.engine"].dispose()
            memory = PeakRss(pids)
            spy = profile(server.pid, args.py_spy) if args.py_spy and size == sizes[-1] else None
            through = read_gateway(port, token, grant_id, window)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=60)
            through.start_kb, through.peak_kb = memory.start_kb, memory.stop()
            for name, result in (("direct", direct), ("gateway", through)):
                if result.records != expected:
                    raise SystemExit(f"{name}: {result.records} records, {expected} expected")
            results.append((size, direct, through))
            print(
                f"{expected:>9,} records ({args.subjects} meters x "
                f"{expected // (args.subjects * PER_DAY)} days x {PER_DAY}):\n"
                f"  direct from the holder : {direct.rate:>9,.0f} records/s "
                f"({direct.seconds:.1f} s, {direct.bytes / 1e6:.0f} MB of pages)\n"
                f"  through the gateway    : {through.rate:>9,.0f} records/s "
                f"({through.seconds:.1f} s, {through.bytes / 1e6:.0f} MB streamed)\n"
                f"  ratio gateway/direct   : {through.rate / direct.rate:.2f}"
                f" (target >= {TARGET_RATIO})\n"
                f"  server worker RSS      : {mb(through.start_kb)} before, "
                f"peak {mb(through.peak_kb)} during the read",
                flush=True,
            )
        (_, _, first), (_, direct, last) = results[0], results[-1]
        ratio = last.rate / direct.rate
        print(
            f"\nresult: {last.rate:,.0f} records/s through the gateway vs {direct.rate:,.0f} "
            f"direct over {last.records:,} records: ratio {ratio:.2f} (target >= "
            f"{TARGET_RATIO}: {'met' if ratio >= TARGET_RATIO else 'NOT met'})"
        )
        print(
            f"peak RSS of the server worker: {mb(first.peak_kb)} at {first.records:,} records, "
            f"{mb(last.peak_kb)} at {last.records:,} ({last.records / first.records:.0f}x the "
            f"records, {last.peak_kb / first.peak_kb:.2f}x the memory)"
        )
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
        return 0
    except SystemExit:
        for name in ("gunicorn.log", "holder.log"):
            path = Path(instance) / name
            if path.exists():
                print(f"--- {name}:\n{path.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        for process in (server, holder):
            if process is not None:
                stop_gunicorn(process)
        shutil.rmtree(instance, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
