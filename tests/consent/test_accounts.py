"""Citizens' accounts: Argon2id hashes, pseudonymous subject ids, rate-limited sign-in,
server-side sessions that expire."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from audit import service as audit
from audit.models import AuditEntry
from broker.app import create_app
from common.clock import frozen, utcnow
from common.errors import ConflictError, InvalidInputError
from consent import accounts
from consent.models import Citizen, SignInFailure
from tests.conftest import PASSWORD, settings

LIMIT = accounts.RateLimit(max_failures=3, window=timedelta(minutes=15))
POLICY = accounts.SessionPolicy(idle=timedelta(minutes=30), max_age=timedelta(hours=12))


def sign_in(session, email, password, client="203.0.113.7"):
    return accounts.authenticate(
        session, email=email, password=password, client=client, limit=LIMIT
    )


def test_a_new_citizen_gets_a_pseudonymous_subject_and_an_argon2id_hash(session, app):
    citizen = accounts.sign_up(session, email="Ana@Example.org ", password=PASSWORD)
    assert citizen.email == "ana@example.org"
    assert citizen.password_hash.startswith("$argon2id$")
    assert PASSWORD not in citizen.password_hash
    assert "ana" not in str(citizen.subject_id)
    assert citizen.subject_id != citizen.id


def test_an_address_is_taken_once_and_short_passwords_are_refused(session, app):
    accounts.sign_up(session, email="a@example.org", password=PASSWORD)
    with pytest.raises(ConflictError):
        accounts.sign_up(session, email="A@example.org", password=PASSWORD)
    with pytest.raises(InvalidInputError) as caught:
        accounts.sign_up(session, email="b@example.org", password="short")
    assert "password" in caught.value.fields


def test_sign_in_with_the_right_password_and_refusal_with_a_wrong_one(session, app):
    accounts.sign_up(session, email="a@example.org", password=PASSWORD)
    assert sign_in(session, "a@example.org", PASSWORD).citizen is not None
    refused = sign_in(session, "a@example.org", "wrong password!")
    assert refused.citizen is None
    assert refused.refusal == "bad_credentials"
    unknown = sign_in(session, "nobody@example.org", PASSWORD)
    assert unknown.refusal == "bad_credentials"  # same answer: no account enumeration


def test_failed_sign_ins_are_rate_limited_even_with_the_right_password_then_forgiven(session, app):
    accounts.sign_up(session, email="a@example.org", password=PASSWORD)
    start = utcnow()
    with frozen(start) as move_to:
        for _ in range(LIMIT.max_failures):
            assert sign_in(session, "a@example.org", "guess").refusal == "bad_credentials"
        blocked = sign_in(session, "a@example.org", PASSWORD)
        assert blocked.refusal == "rate_limited"
        assert blocked.retry_after == 900
        move_to(start + LIMIT.window + timedelta(seconds=1))
        assert sign_in(session, "a@example.org", PASSWORD).citizen is not None
    failures = session.scalar(select(func.count()).select_from(SignInFailure))
    assert failures == LIMIT.max_failures
    stored = session.scalars(select(SignInFailure.email_tag)).all()
    assert all("a@example.org" not in tag for tag in stored)


def test_every_sign_in_and_failure_is_audited_without_the_address(session, app):
    citizen = accounts.sign_up(session, email="a@example.org", password=PASSWORD)
    sign_in(session, "a@example.org", PASSWORD)
    sign_in(session, "a@example.org", "nope")
    entries = session.scalars(
        select(AuditEntry).where(AuditEntry.event == "consent:citizen:sign_in")
    ).all()
    assert [e.decision for e in entries] == ["permit", "deny"]
    assert all("a@example.org" not in repr(e.__dict__) for e in entries)
    assert {e.subject_tag for e in entries} == {entries[0].subject_tag}
    assert citizen.email not in repr(audit.detail(session, entries[0].id))


def test_sessions_expire_when_idle_and_after_their_maximum_age(session, app):
    citizen = accounts.sign_up(session, email="a@example.org", password=PASSWORD)
    start = utcnow()
    with frozen(start) as move_to:
        token = accounts.start_session(session, citizen, policy=POLICY)
        session.flush()  # as its request's commit would
        move_to(start + timedelta(minutes=29))
        assert accounts.resolve_session(session, token, policy=POLICY).citizen.id == citizen.id
        move_to(start + timedelta(minutes=29 + 31))
        assert accounts.resolve_session(session, token, policy=POLICY) is None
        fresh = accounts.start_session(session, citizen, policy=POLICY)
        session.flush()
        for minutes in range(25, 13 * 60, 25):  # active all day: the absolute limit still ends it
            move_to(start + timedelta(minutes=60 + minutes))
            alive = accounts.resolve_session(session, fresh, policy=POLICY)
            if minutes >= 12 * 60:
                assert alive is None
                break
            assert alive is not None
            assert alive.citizen.id == citizen.id


def test_sign_out_ends_the_session_on_the_server(session, app):
    citizen = accounts.sign_up(session, email="a@example.org", password=PASSWORD)
    token = accounts.start_session(session, citizen, policy=POLICY)
    accounts.end_session(session, token)
    session.flush()
    assert accounts.resolve_session(session, token, policy=POLICY) is None
    assert accounts.resolve_session(session, "forged-token", policy=POLICY) is None


def test_no_email_is_stored_outside_the_account_table(session, app):
    accounts.sign_up(session, email="unique-marker@example.org", password=PASSWORD)
    sign_in(session, "unique-marker@example.org", "bad")
    for model in (AuditEntry, SignInFailure):
        for row in session.scalars(select(model)).all():
            assert "unique-marker" not in repr(row.__dict__)
    assert session.scalar(select(func.count()).select_from(Citizen)) == 1


def test_requests_that_write_nothing_still_slide_the_idle_timeout(citizen):
    start = utcnow()
    with frozen(start) as move_to:
        for minutes in (20, 40, 60):  # 20 minutes apart: under the 30-minute idle limit
            move_to(start + timedelta(minutes=minutes))
            assert citizen.client.get("/api/v1/me").status_code == 200
        move_to(start + timedelta(minutes=60 + 31))
        assert citizen.client.get("/api/v1/me").status_code == 401


def test_a_failed_session_lookup_still_renders_the_error_page(
    session, session_factory, monkeypatch
):
    app = create_app(settings(TESTING=False))  # as served: unexpected errors become pages
    app.extensions["db.sessionmaker"] = session_factory
    citizen = accounts.sign_up(session, email="a@example.org", password=PASSWORD)
    token = accounts.start_session(session, citizen, policy=POLICY)
    session.commit()
    client = app.test_client()
    with client.session_transaction() as browser:
        browser["sid"] = token

    def fail(db_session, *_args, **_kwargs):
        # A statement that fails in the request's own transaction: on PostgreSQL that
        # transaction is then aborted, and only a rollback lets the error page read again.
        db_session.connection().execute(text("SELECT no_such_column FROM citizen"))

    monkeypatch.setattr(accounts, "resolve_session", fail)
    response = client.get("/me/consents/")
    assert response.status_code == 500
    assert "Erreur inattendue" in response.get_data(as_text=True)  # the portal's own page
