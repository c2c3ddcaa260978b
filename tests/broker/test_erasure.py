"""The erasure sweep: what a closed account leaves goes once its withdrawals are settled, and
not before; grants acting for the citizen are revoked as soon as the closing commits."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from anonymize.models import Contribution
from audit import service as audit
from audit.models import AuditEntry, AuditorAccount
from audit.service import browse
from broker.models import CommitteeMember, Grant, Notice, NoticeStatus, Token
from broker.service import erasure, organisations, tokens
from common.clock import frozen, utcnow
from common.errors import NotFoundError
from common.keyring import app_keyring
from common.outbox import OutboxMessage
from consent import accounts, closing, links
from consent.models import ConsentStatus, HolderLink
from tests.conftest import ISSUER, PASSWORD
from tests.consent.test_service import give

GRACE = timedelta(hours=1)
HOLDER = links.Holder(uuid.uuid4(), "enedis-demo", "Électricité démo")


@pytest.fixture
def ana(session, charter):
    """A citizen with a consent, a link at a holder, a release counter, and roles."""
    citizen = accounts.sign_up(session, email="ana@example.org", password=PASSWORD)
    give(session, charter, subject_id=citizen.subject_id)
    issued = links.issue_code(session, subject_id=citizen.subject_id, holder=HOLDER)
    links.redeem(session, holder=HOLDER, code=issued.code, subject_ref="PRM-1", actor="holder")
    session.add(Contribution(subject_id=citizen.subject_id, period="2026", releases=1, rho_units=5))
    session.add(CommitteeMember(citizen_id=citizen.id, note="test"))
    browse.add_auditor(
        session, citizen_id=citizen.id, subject_id=citizen.subject_id, organisation=None
    )
    session.commit()
    return citizen


def count(session, query):
    return session.scalar(select(func.count()).select_from(query.subquery()))


def left_of(session, citizen):
    """What the sweep erases, counted."""
    subject = citizen.subject_id
    return {
        "links": count(session, select(HolderLink).where(HolderLink.subject_id == subject)),
        "counters": count(session, select(Contribution).where(Contribution.subject_id == subject)),
        "committee": count(
            session, select(CommitteeMember).where(CommitteeMember.citizen_id == citizen.id)
        ),
        "auditor": count(
            session, select(AuditorAccount).where(AuditorAccount.citizen_id == citizen.id)
        ),
        "log": len(audit.entries_for_subject(session, subject)),
    }


def sweep(session, *, after=GRACE + timedelta(minutes=1), grace=GRACE):
    """One round of broker.erase_closed_accounts, `after` from now: how many were erased."""
    outcomes = []
    with frozen(utcnow() + after):
        for citizen_id in accounts.closed_awaiting_erasure(session):
            outcomes.append(erasure.settle(session, citizen_id, grace=grace))
            session.commit()
    return outcomes.count("erased")


def test_a_closed_account_is_erased_after_the_grace_period_and_only_once(session, ana):
    closing.close_account(session, ana, actor="cli")
    session.commit()  # eager Celery: the withdrawal's outbox messages are delivered at commit
    before = left_of(session, ana)
    assert before["links"] == 1
    assert before["counters"] == 1
    assert before["log"] > 0

    assert sweep(session, after=timedelta(minutes=30)) == 0  # within the grace period
    assert left_of(session, ana) == before

    assert sweep(session) == 1
    assert left_of(session, ana) == {
        "links": 0,
        "counters": 0,
        "committee": 0,
        "auditor": 0,
        "log": 0,
    }
    assert ana.erased_at is not None
    assert audit.subject_tag(session, ana.subject_id) is None  # the tag is unlinkable now
    removals = select(AuditEntry.event).where(AuditEntry.event.like("%:remove"))
    assert set(session.scalars(removals)) == {"admin:committee:remove", "audit:auditor:remove"}
    assert sweep(session) == 0  # idempotent
    # An account erased, or open, or unknown, is not one the sweep settles.
    for citizen_id in (ana.id, uuid.uuid4()):
        assert erasure.settle(session, citizen_id, grace=GRACE) == "skipped"


def test_an_open_account_is_never_erased(session, ana):
    assert sweep(session, after=timedelta(days=400)) == 0
    assert left_of(session, ana)["log"] > 0


def test_a_pending_notice_holds_the_erasure_until_it_is_settled(session, ana, make_client):
    recipient = make_client("holder").model.organisation
    consent_id = closing.service.list_for_subject(session, ana.subject_id)[0].id
    closing.close_account(session, ana, actor="cli")
    notice = Notice(
        consent_id=consent_id,
        subject_id=ana.subject_id,
        organisation=recipient,
        kind="consent.withdrawn",
        purpose_id="energy-coaching",
        recipient_role="holder",
        status=NoticeStatus.PENDING,
        next_attempt_at=utcnow(),
    )
    session.add(notice)
    session.commit()

    assert sweep(session) == 0  # the holder is still to be told, by the identifier the link keeps
    assert left_of(session, ana)["links"] == 1

    notice.status = NoticeStatus.DEAD  # given up on: the committee's dead letters
    session.commit()
    assert sweep(session) == 1
    assert left_of(session, ana)["links"] == 0


def test_a_withdrawal_still_in_the_outbox_holds_the_erasure(session, ana):
    closing.close_account(session, ana, actor="cli")
    session.flush()  # not committed: nothing relayed yet
    # Only the consent's withdrawal is still on its way (its grants not yet revoked).
    pending = session.scalars(select(OutboxMessage).where(OutboxMessage.delivered_at.is_(None)))
    for message in pending:
        if message.topic != "consent.withdrawn":
            message.delivered_at = utcnow()
    session.flush()
    with frozen(utcnow() + GRACE * 2):
        assert erasure.still_telling(session, ana.subject_id)
        assert erasure.settle(session, ana.id, grace=GRACE) == "waiting"
    assert ana.erased_at is None


def test_a_consent_given_while_the_account_closed_is_withdrawn_at_the_next_round(
    session, charter, ana
):
    closing.close_account(session, ana, actor="cli")
    session.commit()
    raced = give(session, charter, "energy-observatory", subject_id=ana.subject_id)
    session.commit()

    assert sweep(session, after=timedelta(minutes=10)) == 0  # within the grace period...
    assert raced.status is ConsentStatus.WITHDRAWN  # ...but withdrawn at once, and told
    assert raced.events[-1].method == "account_closed"
    assert sweep(session) == 1


def test_what_is_logged_about_an_erased_citizen_names_no_one(session, ana):
    closing.close_account(session, ana, actor="cli")
    session.commit()
    assert sweep(session) == 1
    placeholder = ana.email
    # Someone tries the closed account's placeholder; a late task revokes again.
    refused = accounts.authenticate(
        session,
        email=placeholder,
        password=PASSWORD,
        client="198.51.100.1",
        limit=accounts.RateLimit(5, timedelta(minutes=15)),
    )
    assert refused.refusal == "bad_credentials"
    tokens.revoke_for_subject(session, str(ana.subject_id))
    session.commit()
    assert audit.subject_tag(session, ana.subject_id) is None
    assert audit.entries_for_subject(session, ana.subject_id) == []
    with pytest.raises(NotFoundError):  # nor can a role bring the account back
        organisations.add_committee_member(session, placeholder)


def test_closing_revokes_the_grants_that_act_for_the_citizen_and_theirs_only(
    session, charter, ana, make_client, client
):
    app_client = make_client("reuser").model
    other = accounts.sign_up(session, email="bo@example.org", password=PASSWORD)
    session.flush()
    issuer = tokens.Issuer(ISSUER, f"{ISSUER}/api", app_keyring())

    def grant_for(subject_id):
        grant = Grant(
            id=uuid.uuid4(),
            client=app_client,
            client_pk=app_client.id,
            code_id=None,
            subject_id=subject_id,
            scope="consent:read",
            authorization_details=[],
            consent_ids=[],  # rests on no consent: a withdrawal alone would not reach it
            audience=f"{ISSUER}/api",
            dpop_jkt=None,
            revoked_at=None,
            revoked_reason=None,
        )
        session.add(grant)
        body = tokens.issue(session, grant, issuer, refresh=True, grant_type="authorization_code")
        session.commit()
        return grant, {"Authorization": f"Bearer {body['access_token']}"}

    mine, my_bearer = grant_for(ana.subject_id)
    theirs, their_bearer = grant_for(other.subject_id)
    assert client.get("/api/v1/consents", headers=my_bearer).status_code == 200

    closing.close_account(session, ana, actor="cli")
    session.commit()  # eager Celery: consent.account_closed reaches broker.revoke_for_subject

    session.refresh(mine)
    session.refresh(theirs)
    assert mine.revoked_reason == "account_closed"
    left = select(func.count()).where(Token.grant_id == mine.id, Token.revoked_at.is_(None))
    assert session.scalar(left) == 0  # the refresh token too
    assert client.get("/api/v1/consents", headers=my_bearer).status_code == 401
    assert theirs.revoked_at is None
    assert client.get("/api/v1/consents", headers=their_bearer).status_code == 200
