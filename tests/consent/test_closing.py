"""Closing an account (GDPR art. 17): the password again, every consent withdrawn through the
usual withdrawal, sessions ended, address and password scrubbed, the rest left to the erasure
sweep (tests/broker/test_erasure.py)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from audit import service as audit
from audit.models import AuditEntry
from common.errors import NotFoundError
from common.outbox import OutboxMessage
from consent import accounts, closing, links
from consent.models import Citizen, CitizenSession, ConsentStatus, HolderLink, PairingCode
from tests.conftest import PASSWORD
from tests.consent.test_service import give

LIMIT = accounts.RateLimit(max_failures=3, window=timedelta(minutes=15))
POLICY = accounts.SessionPolicy(idle=timedelta(minutes=30), max_age=timedelta(hours=12))
HOLDER = links.Holder(uuid.uuid4(), "enedis-demo", "Électricité démo")


def close(session, citizen, password=PASSWORD, client="203.0.113.7"):
    return closing.close_own_account(
        session, citizen_id=citizen.id, password=password, client=client, limit=LIMIT
    )


@pytest.fixture
def ana(session, charter):
    citizen = accounts.sign_up(session, email="ana@example.org", password=PASSWORD)
    session.flush()
    return citizen


def outbox_topics(session):
    return sorted(session.scalars(select(OutboxMessage.topic)))


def test_closing_withdraws_every_consent_in_force_and_scrubs_the_account(session, charter, ana):
    coaching = give(session, charter, subject_id=ana.subject_id)
    observatory = give(session, charter, "energy-observatory", subject_id=ana.subject_id)
    ended = give(session, charter, "mobility-planning", subject_id=ana.subject_id)
    ended.status = ConsentStatus.WITHDRAWN  # already ended: stays as it is
    token = accounts.start_session(session, ana, policy=POLICY)
    session.flush()
    before = set(session.scalars(select(OutboxMessage.idempotency_key)))

    outcome = close(session, ana)

    assert outcome.citizen is ana
    assert outcome.refusal is None
    for consent in (coaching, observatory):
        assert consent.status is ConsentStatus.WITHDRAWN
        assert consent.events[-1].method == "account_closed"
    assert len(ended.events) == 1  # no second withdrawal of what had ended
    # The consent records stay, under the pseudonymous subject id: the proof of what was given.
    assert session.scalar(select(func.count()).where(Citizen.subject_id == ana.subject_id)) == 1
    assert ana.closed_at is not None
    assert ana.erased_at is None
    assert "@" not in ana.email
    assert ana.password_hash == accounts.CLOSED_HASH
    assert accounts.resolve_session(session, token, policy=POLICY) is None
    new = set(session.scalars(select(OutboxMessage.idempotency_key))) - before
    assert new == {
        f"consent.withdrawn:{coaching.id}:2",
        f"consent.withdrawn:{observatory.id}:2",
        f"consent.account_closed:{ana.subject_id}",
    }
    events = [e.event for e in audit.entries_for_subject(session, ana.subject_id)]
    assert events[-1] == "consent:citizen:close"
    assert "consent:citizen:reauthenticate" in events


def test_a_closed_account_signs_in_no_more_and_its_address_may_sign_up_afresh(
    session, charter, ana
):
    close(session, ana)
    refused = accounts.authenticate(
        session, email="ana@example.org", password=PASSWORD, client="198.51.100.1", limit=LIMIT
    )
    assert refused.citizen is None
    assert refused.refusal == "bad_credentials"
    again = accounts.sign_up(session, email="ana@example.org", password=PASSWORD)
    assert again.id != ana.id
    assert again.subject_id != ana.subject_id


def test_a_wrong_password_closes_nothing_and_counts_as_a_failed_sign_in(session, charter, ana):
    consent = give(session, charter, subject_id=ana.subject_id)
    token = accounts.start_session(session, ana, policy=POLICY)
    session.flush()
    outcomes = [close(session, ana, password="not the password").refusal for _ in range(4)]
    # The same limit as sign-in: a borrowed session cannot guess the password here either.
    assert outcomes == ["bad_credentials"] * 3 + ["rate_limited"]
    assert close(session, ana).refusal == "rate_limited"  # even the right one, for a while
    assert ana.closed_at is None
    assert ana.email == "ana@example.org"
    assert consent.status is ConsentStatus.GIVEN
    assert accounts.resolve_session(session, token, policy=POLICY) is not None
    assert "consent.account_closed" not in outbox_topics(session)


def test_an_account_is_closed_once(session, charter, ana):
    close(session, ana)
    with pytest.raises(NotFoundError):
        close(session, ana)
    with pytest.raises(NotFoundError):
        accounts.find_open(session, ana.email)


def test_pairing_codes_end_at_once_but_links_wait_for_the_erasure_sweep(session, charter, ana):
    issued = links.issue_code(session, subject_id=ana.subject_id, holder=HOLDER)
    links.redeem(session, holder=HOLDER, code=issued.code, subject_ref="PRM-1", actor="holder")
    links.issue_code(session, subject_id=ana.subject_id, holder=HOLDER)  # one more, not used
    session.flush()

    close(session, ana)

    codes = session.scalars(select(PairingCode).where(PairingCode.subject_id == ana.subject_id))
    assert sorted(c.ended_reason for c in codes) == ["account_closed", "used"]
    # The holder's withdrawal notice names the citizen by the identifier the link keeps.
    linked = select(func.count()).where(HolderLink.subject_id == ana.subject_id)
    assert session.scalar(linked) == 1


def test_the_operator_closes_an_account_by_its_address(session, charter, ana):
    give(session, charter, subject_id=ana.subject_id)
    closing.close_account(session, accounts.find_open(session, " Ana@Example.org"), actor="cli")
    assert ana.closed_at is not None
    entry = session.scalar(select(AuditEntry).where(AuditEntry.event == "consent:citizen:close"))
    assert entry is not None
    assert entry.actor == "cli"
    sessions = select(func.count()).where(
        CitizenSession.citizen_id == ana.id, CitizenSession.ended_at.is_(None)
    )
    assert session.scalar(sessions) == 0
