"""The revocation path for real (issue #5): a withdrawal committed in PostgreSQL, relayed by
a Celery worker over Redis, noticed by the demo electricity holder (served for real) and by
the reuser's webhook; then the worker killed with SIGKILL mid-delivery, and Redis stopped
during a withdrawal. Nothing lost, nothing recorded twice.

The module runs its OWN redis-server on a free port and its own worker, and points this
process's Celery app at them for its duration: it kills and restarts those, never the shared
Redis or the session's worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kombu.pools
import pytest
import requests
from flask import Flask, Response, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.models import AccessGrant, GrantDelivery, Notice, NoticeStatus, Organisation, Role
from broker.service import access, datasets
from charter import service as charters
from common.db import get_session, unit_of_work
from common.keyring import app_keyring
from common.outbox import OutboxMessage
from common.tasks import celery_app
from consent import accounts, links
from consent import service as consent_service
from consent.models import Consent, ConsentStatus, Mode
from examples.holders import build
from examples.holders.app import create_app as holder_app
from examples.holders.tokens import TiersKeys
from tests.conftest import ROOT
from tests.gateway.conftest import PURPOSE, Late, daily_settings, request_body, serve
from tests.system.conftest import eventually
from tests.system.live_server import free_port

pytestmark = pytest.mark.system

REUSER = "ecowatt-conseil"  # named by the charter for energy coaching


# --- our own Redis and worker, to kill at will --------------------------------------------


@dataclass
class Services:
    """A private redis-server and Celery worker; restartable."""

    live_app: Flask
    tmp: Path
    port: int = field(default_factory=free_port)
    redis: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start_redis(self) -> None:
        self.redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            probe = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"],
                capture_output=True,
                check=False,
            )
            if probe.stdout.strip() == b"PONG":
                return
            if time.monotonic() > deadline:
                raise RuntimeError("our redis-server did not start")
            time.sleep(0.1)

    def stop_redis(self) -> None:
        if self.redis is not None and self.redis.poll() is None:
            self.redis.send_signal(signal.SIGKILL)
            self.redis.wait(timeout=10)
        self.redis = None

    def start_worker(self) -> None:
        self.starts += 1
        log = self.tmp / f"worker-{self.starts}.log"
        config = self.live_app.config
        env = {
            **os.environ,
            "DATABASE_URL": config["DATABASE_URL"],
            "CELERY_BROKER_URL": self.url,
            "SECRET_KEY": config["SECRET_KEY"],
            "TIERS_KEYS_DIR": config["KEYS_DIR"],
            "TIERS_ISSUER": config["ISSUER"],
            "TIERS_OUTBOUND_LOOPBACK": "1",  # the holder and the webhook are on 127.0.0.1
        }
        with log.open("wb") as out:
            self.worker = subprocess.Popen(
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
                    "--without-heartbeat",
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while b"ready." not in log.read_bytes():
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"our Celery worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)

    def kill_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGKILL)  # kill -9: no cleanup, no ack, no rollback
            self.worker.wait(timeout=10)
        self.worker = None


def _use_broker(url: str | None) -> None:
    """Point this process's Celery app (the outbox kick, our triggers) at `url` (None: back
    to CELERY_BROKER_URL, which overrides `broker_url` but not `broker_write_url`)."""
    celery_app.conf.broker_write_url = url
    _drop_connections()


def _drop_connections() -> None:
    """Forget pooled broker connections (a restarted Redis leaves them dead). kombu keeps
    its pools in a registry by URL: clear it too, or the next lookup finds them closed."""
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    kombu.pools.reset()  # type: ignore[no-untyped-call]  # kombu is untyped


@pytest.fixture(scope="module")
def services(live_app: Flask, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    own = Services(live_app, tmp_path_factory.mktemp("notices-live"))
    shared = celery_app.conf.get("broker_write_url")
    own.start_redis()
    _use_broker(own.url)
    try:
        own.start_worker()
        yield own
    finally:
        own.kill_worker()
        own.stop_redis()
        _use_broker(shared)


# --- the territory: the demo holder served for real, a reuser's webhook --------------------


@dataclass
class Webhook:
    """The reuser's receiver: records each arrival (key, time), then waits `delay` seconds."""

    url: str = ""
    delay: float = 0.0
    arrivals: list[tuple[str, datetime]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received_keys(self) -> list[str]:
        with self.lock:
            return [key for key, _ in self.arrivals]


@dataclass
class Territory:
    live_app: Flask
    holder_url: str
    holder_id: uuid.UUID
    meters: list[str]
    webhook: Webhook
    used: int = 0

    def holder_received(self) -> dict[str, dict[str, Any]]:
        """What the holder recorded, by idempotency key (its own service, over HTTP)."""
        answer = requests.get(f"{self.holder_url}/webhooks/received", timeout=5).json()
        return {n["idempotency_key"]: n for n in answer["notices"]}

    def served_citizen(self) -> tuple[uuid.UUID, uuid.UUID]:
        """A citizen linked to a meter, consenting to coaching by the reuser, whose data the
        reuser's grant has served (as the gateway records it): (subject, consent)."""
        meter = self.meters[self.used % len(self.meters)]
        self.used += 1
        with self.live_app.app_context(), unit_of_work() as session:
            account = accounts.sign_up(
                session, email=f"n-{uuid.uuid4().hex[:10]}@example.org", password="x" * 16
            )
            holder = datasets.as_holder(session.get_one(Organisation, self.holder_id))
            issued = links.issue_code(session, subject_id=account.subject_id, holder=holder)
            links.redeem(
                session, holder=holder, code=issued.code, subject_ref=meter, actor="test"
            ).raise_refusal()
            charter = charters.current(session)
            consent = consent_service.give(
                session,
                consent_service.GiveConsent(
                    subject_id=account.subject_id,
                    purpose_id=PURPOSE,
                    terms_hash=charter.row.terms_hashes[PURPOSE],
                    recipient_id=REUSER,
                    mode=Mode.INDIVIDUAL,
                ),
            )
            now = datetime.now(UTC)
            grant_id = self.grant_id(session)
            assert grant_id is not None
            session.add(
                GrantDelivery(
                    grant_id=grant_id,
                    subject_id=account.subject_id,
                    first_served_at=now,
                    last_served_at=now,
                )
            )
            return account.subject_id, consent.id

    def grant_id(self, session: Session) -> uuid.UUID | None:
        reuser = session.scalars(select(Organisation).where(Organisation.slug == REUSER)).one()
        return session.scalars(
            select(AccessGrant.id).where(AccessGrant.organisation_id == reuser.id)
        ).first()


def _withdraw(live_app: Flask, subject_id: uuid.UUID, consent_id: uuid.UUID) -> None:
    with live_app.app_context(), unit_of_work() as session:
        consent_service.withdraw(
            session, subject_id=subject_id, consent_id=consent_id, method="portal"
        )


def _notices(live_app: Flask, consent_id: uuid.UUID) -> dict[str, Notice]:
    with live_app.app_context():
        session = get_session()
        rows = session.scalars(select(Notice).where(Notice.consent_id == consent_id)).all()
        session.close()
    return {n.recipient_role: n for n in rows}


def _delivered(live_app: Flask, consent_id: uuid.UUID) -> dict[str, Notice] | None:
    found = _notices(live_app, consent_id)
    if set(found) == {"holder", "reuser"} and all(
        n.status is NoticeStatus.DELIVERED for n in found.values()
    ):
        return found
    return None


@pytest.fixture(scope="module")
def territory(live_app: Flask, services: Services) -> Iterator[Territory]:
    webhook = Webhook()
    receiver = Flask("reuser_webhook")

    @receiver.post("/webhooks/tiers")
    def receive() -> Response:
        with webhook.lock:
            webhook.arrivals.append((request.headers.get("Idempotency-Key", ""), datetime.now(UTC)))
        if webhook.delay:
            time.sleep(webhook.delay)  # slow to answer: the worker is mid-POST meanwhile
        return jsonify(recorded=True)

    with live_app.app_context():
        app_keyring().active()
        published = app_keyring().jwks(publish_for=timedelta(days=400))
    keys_app = Flask("tiers_jwks")
    keys_app.add_url_rule("/.well-known/jwks.json", "jwks", lambda: jsonify(published))

    data = build("electricity", "tests")
    late = Late()
    with serve(keys_app) as jwks_url, serve(late) as holder_url, serve(receiver) as reuser_url:
        late.app = holder_app(
            data,
            tiers_url=live_app.config["ISSUER"],
            resource_uri=holder_url,
            keys=TiersKeys(jwks_url),
        )
        webhook.url = f"{reuser_url}/webhooks/tiers"
        with live_app.test_request_context(), unit_of_work() as session:
            holder = Organisation(
                slug=f"enedis-{uuid.uuid4().hex[:6]}",
                name="Distributeur d'électricité (démo)",
                role=Role.HOLDER,
                reuser_category=None,
                resource_uri=holder_url,
                suspended_at=None,
                webhook_url=f"{holder_url}/webhooks/tiers",
            )
            session.add(holder)
            session.flush()
            dataset = datasets.register(
                session, holder_id=holder.id, settings=daily_settings(holder_url), actor="test"
            )
            reuser = session.scalars(
                select(Organisation).where(Organisation.slug == REUSER)
            ).one_or_none()
            if reuser is None:
                reuser = Organisation(
                    slug=REUSER,
                    name="EcoWatt Conseil",
                    role=Role.REUSER,
                    reuser_category="company",
                    resource_uri=None,
                    suspended_at=None,
                )
                session.add(reuser)
            reuser.webhook_url = webhook.url
            session.flush()
            access.file_request(
                session,
                organisation_id=reuser.id,
                client_pk=None,
                data={
                    **request_body(dataset),
                    "period_end": datetime.now(UTC) + timedelta(days=90),
                },
                actor="test",
            )
            holder_id = holder.id
        meters = [s["prm"] for s in data.demo_subjects()]
        territory = Territory(live_app, holder_url, holder_id, meters, webhook)
        with live_app.app_context():
            session = get_session()
            assert territory.grant_id(session) is not None, "the charter did not permit"
            session.close()
        yield territory


# --- the tests -------------------------------------------------------------------------------


def test_a_withdrawal_is_noticed_by_the_holder_and_the_reuser(
    live_app: Flask, territory: Territory
) -> None:
    subject_id, consent_id = territory.served_citizen()
    _withdraw(live_app, subject_id, consent_id)
    found = eventually(lambda: _delivered(live_app, consent_id), seconds=20)
    holder_key, reuser_key = str(found["holder"].id), str(found["reuser"].id)
    received = territory.holder_received()
    assert received[holder_key]["deliveries"] == 1
    assert received[holder_key]["notice"]["type"] == "consent.withdrawn"
    assert received[holder_key]["notice"]["consent"] == str(consent_id)
    assert territory.webhook.received_keys().count(reuser_key) == 1


def test_a_worker_killed_mid_delivery_delivers_once_after_restart(
    live_app: Flask, territory: Territory, services: Services
) -> None:
    subject_id, consent_id = territory.served_citizen()
    territory.webhook.delay = 5.0
    try:
        _withdraw(live_app, subject_id, consent_id)
        # The reuser's webhook has the notice, and the worker waits for its answer: kill -9.
        reuser = eventually(lambda: _notices(live_app, consent_id).get("reuser"), seconds=20)
        eventually(lambda: str(reuser.id) in territory.webhook.received_keys(), seconds=20)
        services.kill_worker()
    finally:
        territory.webhook.delay = 0.0
    assert _notices(live_app, consent_id)["reuser"].status is NoticeStatus.PENDING
    services.start_worker()

    def sweep_until_delivered() -> dict[str, Notice] | None:
        # What beat does every 5 s: the killed task stays unacked in Redis for its
        # visibility timeout, so the retry comes from the sweep of pending notices.
        celery_app.tasks["broker.retry_notices"].apply_async()
        time.sleep(0.5)
        return _delivered(live_app, consent_id)

    found = eventually(sweep_until_delivered, seconds=40)
    reuser_key, holder_key = str(found["reuser"].id), str(found["holder"].id)
    keys = territory.webhook.received_keys()
    assert keys.count(reuser_key) == 2  # sent again under the same Idempotency-Key...
    mine = {k for k in keys if k in {reuser_key, holder_key}}
    assert mine == {reuser_key}  # ...so the receiver recorded one notice
    assert found["reuser"].attempts == 1  # the killed attempt never committed
    assert territory.holder_received()[holder_key]["notice"]["consent"] == str(consent_id)


def test_a_withdrawal_while_redis_is_down_is_accepted_and_noticed_when_it_returns(
    live_app: Flask, territory: Territory, services: Services
) -> None:
    subject_id, consent_id = territory.served_citizen()
    services.stop_redis()
    try:
        started = time.monotonic()
        _withdraw(live_app, subject_id, consent_id)  # commits; the kick fails and is logged
        assert time.monotonic() - started < 10  # a down broker does not hang the request
        with live_app.app_context():
            session = get_session()
            consent = session.get(Consent, consent_id)
            assert consent is not None
            assert consent.status is ConsentStatus.WITHDRAWN
            rows = session.scalars(
                select(OutboxMessage).where(OutboxMessage.topic == "consent.withdrawn")
            ).all()
            mine = [m for m in rows if m.payload.get("consent_id") == str(consent_id)]
            assert [m.delivered_at for m in mine] == [None]  # waiting, not lost
            session.close()
        assert _notices(live_app, consent_id) == {}
    finally:
        services.start_redis()

    def relay_until_delivered() -> dict[str, Notice] | None:
        # What beat does every 30 s; retried, as the worker reconnects to Redis meanwhile.
        try:
            celery_app.tasks["common.relay_outbox"].apply_async()
            celery_app.tasks["broker.retry_notices"].apply_async()
        except Exception:  # the pool may still hold a connection to the dead Redis
            _drop_connections()
        time.sleep(0.5)
        return _delivered(live_app, consent_id)

    found = eventually(relay_until_delivered, seconds=45)
    assert territory.webhook.received_keys().count(str(found["reuser"].id)) == 1
    assert territory.holder_received()[str(found["holder"].id)]["deliveries"] == 1


def test_a_closed_account_is_noticed_by_the_worker_then_erased(
    live_app: Flask, territory: Territory
) -> None:
    from audit import service as audit
    from broker.service import erasure
    from consent import closing
    from consent.models import Citizen, HolderLink

    subject_id, consent_id = territory.served_citizen()
    with live_app.app_context(), unit_of_work() as session:
        account = session.scalars(select(Citizen).where(Citizen.subject_id == subject_id)).one()
        closing.close_account(session, account, actor="test")
        account_id = account.id
    # The worker withdraws through the outbox: both recipients are told, the holder by meter.
    found = eventually(lambda: _delivered(live_app, consent_id), seconds=20)
    notice = territory.holder_received()[str(found["holder"].id)]["notice"]
    assert notice["consent"] == str(consent_id)

    def settled() -> str:
        with live_app.app_context(), unit_of_work() as session:
            return erasure.settle(session, account_id, grace=timedelta(0))

    # The account's own outbox message (grant revocation) may still be on its way.
    assert eventually(lambda: settled() == "erased", seconds=20)
    with live_app.app_context():
        session = get_session()
        assert audit.subject_tag(session, subject_id) is None
        linked = session.scalars(select(HolderLink).where(HolderLink.subject_id == subject_id))
        assert linked.all() == []
        session.close()
