"""A real worker, a real broker, committed data: what eager mode only emulates."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from charter import service as charters
from charter.document import terms_hash
from common.clock import frozen, utcnow
from common.db import get_session, unit_of_work
from common.outbox import OutboxMessage
from common.tasks import celery_app
from consent import accounts, service
from consent.models import Consent, ConsentStatus
from tests.system.conftest import eventually

pytestmark = pytest.mark.system


def _give(live_app, purpose_id="energy-coaching", duration_days=None):
    with live_app.app_context(), unit_of_work() as session:
        citizen = accounts.sign_up(
            session, email=f"sys-{uuid.uuid4().hex[:10]}@example.org", password="x" * 16
        )
        charter = charters.current(session)
        purpose = charter.require_purpose(purpose_id)
        consent = service.give(
            session,
            service.GiveConsent(
                subject_id=citizen.subject_id,
                purpose_id=purpose.id,
                terms_hash=terms_hash(purpose),
                recipient_id=purpose.recipient_ids[0],
                duration_days=duration_days,
            ),
        )
        return citizen.subject_id, consent.id


def _message(live_app, topic, consent_id):
    with live_app.app_context():
        session = get_session()
        rows = session.scalars(select(OutboxMessage).where(OutboxMessage.topic == topic)).all()
        found = [m for m in rows if m.payload.get("consent_id") == str(consent_id)]
        session.close()
        return found[0] if found else None


def test_a_committed_withdrawal_is_relayed_by_the_worker(live_app, worker):
    subject_id, consent_id = _give(live_app)
    with live_app.app_context(), unit_of_work() as session:
        service.withdraw(session, subject_id=subject_id, consent_id=consent_id, method="api")
    delivered = eventually(
        lambda: (m := _message(live_app, "consent.withdrawn", consent_id)) and m.delivered_at
    )
    assert delivered is not None


def test_the_worker_sweeps_an_expired_consent(live_app, worker):
    with frozen(utcnow() - timedelta(days=3)):
        _, consent_id = _give(live_app, purpose_id="energy-observatory", duration_days=1)
    celery_app.tasks["consent.sweep"].apply_async()

    def expired():
        with live_app.app_context():
            session = get_session()
            status = session.get(Consent, consent_id).status
            session.close()
            return status is ConsentStatus.EXPIRED

    assert eventually(expired)
    assert _message(live_app, "consent.expired", consent_id) is not None


def test_a_message_left_undelivered_is_picked_up_by_the_periodic_relay(live_app, worker):
    with live_app.app_context(), unit_of_work() as session:
        message = OutboxMessage(
            topic="test.nobody-listens",
            payload={"n": 1},
            idempotency_key=f"test:{uuid.uuid4()}",
            delivered_at=None,
            attempts=0,
        )
        session.add(message)
        session.info.pop("outbox_published", None)  # as if the process died before the kick
    celery_app.tasks["common.relay_outbox"].apply_async()  # what beat does every 30 s

    def delivered():
        with live_app.app_context():
            session = get_session()
            row = session.get(OutboxMessage, message.id)
            session.close()
            return row.delivered_at

    assert eventually(delivered)
