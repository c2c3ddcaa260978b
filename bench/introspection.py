#!/usr/bin/env python
"""Benchmark (not a test): token introspections per second through `POST /oauth/introspect`
(RFC 7662, client_secret_basic), against the same server's bare JSON endpoint
`GET /api/v1/health`, in one run.

PostgreSQL (`tiers_bench`, schema reset and migrated), gunicorn with 2 sync workers,
concurrent clients on loopback. A holder organisation (with its own API, the resource URI)
introspects access tokens that a reuser obtained for that API (client_credentials with
`resource`), as a holder's API does before serving a request. The tokens are minted
in-process right before the timed phase (they live 5 minutes); only answers `"active": true`
count. As in production, a Celery broker is set (the Redis database of consent_writes.py; nothing
is sent to it) and the access log's integrator runs every 2 s in a process of its own; with
`--eager` it runs inside every request instead, as in tests and the demo.

    .venv/bin/python bench/introspection.py [--seconds 10] [--clients 8] [--tokens 300] [--eager]

Prints both rates and their ratio (target >= 0.5). Exit code 0 whatever the ratio (it is a
measurement); 1 only when the bench itself cannot run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import itertools
import json
import multiprocessing
import os
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

# The plumbing of consent_writes.py (same directory): phases, CPU accounting, gunicorn.
from consent_writes import (
    DEFAULT_BROKER,
    DEFAULT_DB,
    HOST,
    REQUEST_TIMEOUT,
    add_profile_argument,
    call,
    errors,
    flush_broker,
    free_port,
    reset_database,
    run_phase,
    start_gunicorn,
    stop_gunicorn,
    wait_healthy,
)

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 0.5
ACCESS_TOKEN_LIFE = 300  # seconds (broker.service.tokens.ACCESS_TTL): the phase must fit in it
INTEGRATOR_PERIOD = 2.0  # seconds: broker/config.py's beat schedule for audit.integrate


def introspect(port: int, authorization: str, token: str) -> str:
    """One introspection on a short connection: "active", "inactive" or the HTTP status."""
    connection = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT)
    try:
        connection.request(
            "POST",
            "/oauth/introspect",
            body=urlencode({"token": token}),
            headers={
                "Authorization": authorization,
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
        )
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    if response.status != 200:
        return str(response.status)
    return "active" if json.loads(data).get("active") is True else "inactive"


def basic(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: form-urlencoded id and secret, then HTTP Basic."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(pair).decode()


# --- Preparation (not measured) ------------------------------------------------------------


def _register(session: Any, role: Any, slug: str, resource_uri: str | None) -> tuple[str, str]:
    """An organisation of `role` and one client_secret_basic client (client_credentials)."""
    from broker.models import AuthMethod, OAuthClient, Organisation, Role
    from broker.service import scopes
    from broker.service.credentials import hash_value

    secret = secrets.token_urlsafe(32)
    org = Organisation(
        slug=slug,
        name=f"Bench {slug}",
        role=role,
        reuser_category="company" if role is Role.REUSER else None,
        resource_uri=resource_uri,
        suspended_at=None,
    )
    client = OAuthClient(
        client_id=f"bench_{uuid.uuid4().hex[:12]}",
        organisation=org,
        name=f"App of {slug}",
        auth_method=AuthMethod.CLIENT_SECRET_BASIC,
        secret_hash=hash_value(secret),
        jwks=None,
        redirect_uris=[],
        grant_types=["client_credentials"],
        scope=" ".join(sorted(scopes.ROLE_SCOPES[role])),
        dpop_bound=False,
        registered_by="committee",
        revoked_at=None,
    )
    session.add_all([org, client])
    return client.client_id, secret


def prepare(app: Any) -> tuple[str, str, str]:
    """Publish the charter, make the signing key, register a holder (with its API) and a
    reuser, both confidential. Returns the holder's Basic header, the reuser's client_id and
    the holder's resource URI (for minting)."""
    from broker.models import Role
    from broker.service import publish_charter
    from common.db import unit_of_work
    from common.keyring import app_keyring

    run = secrets.token_hex(4)
    resource_uri = f"https://holder-{run}.example.org/api"
    with app.app_context():
        with unit_of_work() as session:
            source = (ROOT / "examples" / "charter.yaml").read_text(encoding="utf-8")
            publish_charter(session, source, actor="bench")
        app_keyring().active()  # made now, not by two workers racing
        with unit_of_work() as session:
            holder = _register(session, Role.HOLDER, f"holder-{run}", resource_uri)
            reuser_id, _ = _register(session, Role.REUSER, f"reuser-{run}", None)
    return basic(*holder), reuser_id, resource_uri


def mint(app: Any, reuser_id: str, resource_uri: str, count: int) -> list[str]:
    """`count` live access tokens of the reuser for the holder's API, as /oauth/token would
    issue them (broker.service.tokens.client_credentials: a grant, a token row, an audit row)."""
    from broker.service import tokens
    from broker.service.credentials import find_client
    from common.db import unit_of_work
    from common.keyring import app_keyring

    with app.app_context(), unit_of_work() as session:
        issuer = app.config["ISSUER"]
        signer = tokens.Issuer(issuer, f"{issuer}/api", app_keyring())
        client = find_client(session, reuser_id)
        assert client is not None
        return [
            tokens.client_credentials(
                session, client, signer, scope=None, resource=resource_uri, dpop_jkt=None
            )["access_token"]
            for _ in range(count)
        ]


# --- The access log's integrator, as Celery beat runs it -----------------------------------


def _integrate_every(period: float, stop: Any, sealed: Any) -> None:
    """In its own process (as a Celery worker is): audit.integrate every `period` seconds."""
    from audit import tasks
    from broker.app import create_app

    app = create_app()
    while not stop.wait(period):
        with app.app_context():
            done = tasks.integrate.run()
        with sealed.get_lock():
            sealed.value += done


class Integrator:
    """Seals the introspections' audit rows every 2 s in a separate process, as production
    does with a broker. Without one, `audit.tasks` would run the integrator inside every
    request that appended a row: 11 more statements and two more commits per introspection,
    which is the test and demo set-up, not a server's."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self.stop = context.Event()
        self.sealed = context.Value("q", 0)
        self.process = context.Process(
            target=_integrate_every, args=(INTEGRATOR_PERIOD, self.stop, self.sealed)
        )

    def __enter__(self) -> Integrator:
        if self.enabled:
            self.process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        self.stop.set()
        self.process.join(timeout=60)
        if self.process.is_alive():
            self.process.kill()


# --- Main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured lead-in per phase")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--tokens", type=int, default=300, help="live access tokens to cycle")
    parser.add_argument(
        "--eager",
        action="store_true",
        help="no CELERY_BROKER_URL: the integrator runs inside every request (tests, the demo)",
    )
    add_profile_argument(parser)
    args = parser.parse_args()
    if not (args.seconds > 0 and 0 <= args.warmup <= 60 and 1 <= args.clients <= 256):
        parser.error("--seconds > 0, --warmup in [0, 60], --clients in [1, 256]")
    if args.seconds + args.warmup > ACCESS_TOKEN_LIFE - 30:
        parser.error(f"--seconds + --warmup must stay under {ACCESS_TOKEN_LIFE - 30} s")
    if not (1 <= args.workers <= 64 and 1 <= args.tokens <= 10_000):
        parser.error("--workers in [1, 64], --tokens in [1, 10000]")

    database_url = os.environ.get("TIERS_BENCH_DATABASE_URL", DEFAULT_DB)
    instance = tempfile.mkdtemp(prefix="tiers-bench-")
    port = free_port()
    env = {
        **os.environ,
        "TIERS_INSTANCE": instance,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": database_url,
        "TIERS_ISSUER": f"http://{HOST}:{port}",  # the issuer is the server's real URL
    }
    env.pop("TIERS_KEYS_DIR", None)
    env.pop("CELERY_BROKER_URL", None)
    if not args.eager:
        # As in production: with a broker, commits only kick Celery (introspection publishes
        # nothing) and the access log is sealed by beat, here the Integrator process.
        env["CELERY_BROKER_URL"] = DEFAULT_BROKER
    os.environ.clear()
    os.environ.update(env)  # create_app() in this process reads the same settings

    sys.path.insert(0, str(ROOT))
    from broker.app import create_app

    print(
        f"machine: {os.cpu_count() or 1} CPUs, load average {os.getloadavg()[0]:.1f}; database "
        f"{database_url.split('@')[-1]}; integrator: "
        f"{'in every request (--eager)' if args.eager else 'every 2 s, own process'}",
        flush=True,
    )
    server = None
    try:
        started = time.perf_counter()
        flush_broker(env.get("CELERY_BROKER_URL"))
        reset_database(database_url)
        app = create_app()
        authorization, reuser_id, resource_uri = prepare(app)
        log = Path(instance) / "gunicorn.log"
        server = start_gunicorn(args.workers, port, env, log, args.profile)
        wait_healthy(server, port, log)
        print(
            f"prepared in {time.perf_counter() - started:.1f} s: a holder introspecting a "
            f"reuser's tokens for its API; {args.clients} clients, {args.workers} gunicorn "
            f"workers, {args.warmup:g} s warm-up + {args.seconds:g} s per phase",
            flush=True,
        )

        # Bare endpoint: the ceiling of this server, machine and client.
        def bare_job(_index: int) -> Callable[[], str | None]:
            return lambda: str(call(port, "GET", "/api/v1/health").status)

        bare = run_phase(args.clients, args.warmup, args.seconds, bare_job, "200", server.pid)
        bare_rate = bare.ok / bare.elapsed
        print(
            f"bare GET /api/v1/health: {bare_rate:.1f} req/s ({bare.ok} requests, "
            f"{errors(bare, '200')} errors)",
            flush=True,
        )
        if bare.cpu:
            print(bare.cpu, flush=True)

        # Started before minting, so its start-up is over when the timed phase begins; it
        # seals the minted tokens' rows, then the introspections' (its CPU counts as "rest of
        # machine").
        with Integrator(enabled=not args.eager) as integrator:
            minted_at = time.perf_counter()
            live_tokens = mint(app, reuser_id, resource_uri, args.tokens)
            app.extensions["db.engine"].dispose()
            minting = time.perf_counter() - minted_at
            print(f"minted {len(live_tokens)} access tokens in {minting:.1f} s", flush=True)
            first = introspect(port, authorization, live_tokens[0])
            if first != "active":
                raise SystemExit(f"a fresh token is not active at introspection: {first}")

            # Introspections: each client cycles over the tokens from its own offset.
            def introspect_job(index: int) -> Callable[[], str | None]:
                order = itertools.cycle(live_tokens[index:] + live_tokens[:index])
                return lambda: introspect(port, authorization, next(order))

            checks = run_phase(
                args.clients, args.warmup, args.seconds, introspect_job, "active", server.pid
            )
            check_rate = checks.ok / checks.elapsed
            print(
                f"POST /oauth/introspect: {check_rate:.1f} introspections/s ({checks.ok} active, "
                f"{errors(checks, 'active')} errors, over {checks.elapsed:.1f} s)",
                flush=True,
            )
            if checks.cpu:
                print(checks.cpu, flush=True)
        if integrator.enabled:
            print(f"the integrator sealed {integrator.sealed.value} audit rows meanwhile")
    finally:
        if server is not None:
            stop_gunicorn(server)
        shutil.rmtree(instance, ignore_errors=True)

    ratio = check_rate / bare_rate if bare_rate else 0.0
    verdict = "met" if ratio >= TARGET_RATIO else "NOT MET"
    print(f"ratio introspection/bare: {ratio:.2f} (target >= {TARGET_RATIO}: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
