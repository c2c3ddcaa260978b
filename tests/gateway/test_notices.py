"""Withdrawal notices: signed, delivered to the holder (served for real) and to the reuser
that received the citizen's data, retried with backoff, dead-lettered, retried by the
committee, and confirmed by the reuser; planning twice sends nothing twice."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import requests
from flask import Flask, Response, jsonify, request
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.models import Notice, NoticeStatus
from broker.service import erasure
from broker.tasks import deliver_notice, notify_withdrawal
from common.clock import frozen, utcnow
from consent import accounts, closing
from consent import service as consent_service
from consent.models import Citizen as Account
from consent.models import HolderLink
from examples.holders.tokens import TiersKeys, verify_notice
from tests.conftest import ISSUER
from tests.gateway.conftest import Citizen, Territory, request_body, serve

WINDOW = {"since": "2025-03-01T00:00:00+00:00", "until": "2025-03-03T00:00:00+00:00"}


@dataclass
class Receiver:
    """A reuser's webhook, served for real; `status` is what it answers."""

    url: str = ""
    status: int = 201
    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()
    app = Flask("reuser_webhook")

    @app.post("/webhooks/tiers")
    def webhook() -> Response:
        with state.lock:
            state.received.append(
                {
                    "key": request.headers.get("Idempotency-Key"),
                    "type": request.mimetype,
                    "body": request.get_data(as_text=True),
                }
            )
        response = jsonify(recorded=True)
        response.status_code = state.status
        return response

    with serve(app) as url:
        state.url = f"{url}/webhooks/tiers"
        yield state


@pytest.fixture
def served_citizen(
    client: FlaskClient,
    session: Session,
    territory: Territory,
    reuser: dict[str, str],
    receiver: Receiver,
) -> tuple[Citizen, str]:
    """A consenting citizen whose data EcoWatt received; webhooks registered for both."""
    from broker.models import Organisation

    territory.holder.organisation.webhook_url = f"{territory.holder.url}/webhooks/tiers"
    ecowatt = session.scalars(
        select(Organisation).where(Organisation.slug == "ecowatt-conseil")
    ).one()
    ecowatt.webhook_url = receiver.url
    session.commit()
    citizen = territory.citizen(territory.holder.subjects[0])
    client.post(
        "/api/v1/access-requests", json=request_body(territory.holder.dataset), headers=reuser
    )
    grant_id = client.get("/api/v1/grants", headers=reuser).get_json()[0]["id"]
    read = client.get(f"/api/v1/grants/{grant_id}/records", query_string=WINDOW, headers=reuser)
    pseudonym = json.loads(read.get_data())["records"][0]["subject"]
    return citizen, pseudonym


def _withdraw(session: Session, citizen: Citizen) -> None:
    assert citizen.consent_id is not None
    consent_service.withdraw(
        session, subject_id=citizen.subject_id, consent_id=citizen.consent_id, method="portal"
    )
    session.commit()  # the outbox relays it to broker.notify_withdrawal (eagerly here)


def test_a_withdrawal_is_noticed_by_the_holder_and_the_reuser_each_in_its_own_terms(
    client: FlaskClient,
    session: Session,
    territory: Territory,
    receiver: Receiver,
    served_citizen: tuple[Citizen, str],
    jwks_url: str,
) -> None:
    citizen, pseudonym = served_citizen
    _withdraw(session, citizen)
    rows = session.scalars(select(Notice).where(Notice.consent_id == citizen.consent_id)).all()
    assert {(n.recipient_role, n.status) for n in rows} == {
        ("holder", NoticeStatus.DELIVERED),
        ("reuser", NoticeStatus.DELIVERED),
    }
    # The holder verified and recorded it (its own service, over HTTP): its meter number.
    received = requests.get(f"{territory.holder.url}/webhooks/received", timeout=5).json()[
        "notices"
    ]
    assert [r["deliveries"] for r in received] == [1]
    assert received[0]["notice"]["subject"] == citizen.meter
    assert received[0]["notice"]["type"] == "consent.withdrawn"
    # The reuser got a JWS it can verify against Tiers' JWKS, naming its own pseudonym.
    (got,) = receiver.received
    assert got["type"] == "application/jose"
    claims = verify_notice(got["body"], TiersKeys(jwks_url), issuer=ISSUER)
    assert claims["subject"] == pseudonym
    assert claims["consent"] == str(citizen.consent_id)
    assert got["key"] == claims["jti"]
    assert citizen.meter not in got["body"]


def test_planning_twice_sends_nothing_twice(
    session: Session, receiver: Receiver, served_citizen: tuple[Citizen, str]
) -> None:
    citizen, _ = served_citizen
    _withdraw(session, citizen)
    assert notify_withdrawal.apply(args=[str(citizen.consent_id)]).get() == 0
    assert len(receiver.received) == 1
    assert len(session.scalars(select(Notice)).all()) == 2


def test_a_failing_webhook_is_retried_with_backoff_then_dead_then_retried_by_the_committee(
    app: Flask,
    client: FlaskClient,
    session: Session,
    receiver: Receiver,
    served_citizen: tuple[Citizen, str],
    oauth_headers: Any,
    reuser: dict[str, str],
) -> None:
    citizen, _ = served_citizen
    receiver.status = 500
    app.config["NOTICE_MAX_ATTEMPTS"] = 2
    _withdraw(session, citizen)
    notice = session.scalars(select(Notice).where(Notice.recipient_role == "reuser")).one()
    assert (notice.status, notice.attempts, notice.last_error) == (
        NoticeStatus.PENDING,
        1,
        "answered 500",
    )
    assert notice.next_attempt_at > notice.last_attempt_at
    deliver_notice.apply(args=[str(notice.id)])
    session.expire_all()
    assert (notice.status, notice.attempts) == (NoticeStatus.DEAD, 2)
    assert deliver_notice.apply(args=[str(notice.id)]).get() is False  # dead: not sent again
    assert len(receiver.received) == 2

    committee = oauth_headers("committee", "admin", category=None)
    dead = client.get("/api/v1/admin/notices", query_string={"status": "dead"}, headers=committee)
    assert [n["id"] for n in dead.get_json()] == [str(notice.id)]
    assert (
        client.get(
            "/api/v1/admin/notices", query_string={"status": "lost"}, headers=committee
        ).status_code
        == 422
    )
    assert client.get("/api/v1/admin/notices", headers=reuser).status_code == 403
    receiver.status = 201
    retried = client.post(f"/api/v1/admin/notices/{notice.id}/retry", headers=committee)
    assert retried.status_code == 200
    session.expire_all()
    assert notice.status is NoticeStatus.DELIVERED
    assert (
        client.post(f"/api/v1/admin/notices/{notice.id}/retry", headers=committee).status_code
        == 409
    )


def test_the_reuser_confirms_deletion_of_its_own_notices_only(
    client: FlaskClient,
    session: Session,
    served_citizen: tuple[Citizen, str],
    reuser: dict[str, str],
    other_reuser: dict[str, str],
) -> None:
    citizen, _ = served_citizen
    _withdraw(session, citizen)
    (mine,) = client.get("/api/v1/notices", headers=reuser).get_json()
    assert client.get("/api/v1/notices", headers=other_reuser).get_json() == []
    url = f"/api/v1/notices/{mine['id']}/deletion"
    assert client.post(url, headers=other_reuser).status_code == 404
    confirmed = client.post(url, headers=reuser)
    assert confirmed.status_code == 200
    first = confirmed.get_json()["deletion_confirmed_at"]
    assert first is not None
    assert client.post(url, headers=reuser).get_json()["deletion_confirmed_at"] == first
    assert (
        client.post(f"/api/v1/notices/{uuid.uuid4()}/deletion", headers=reuser).status_code == 404
    )


def test_the_citizen_sees_who_was_told_and_who_confirmed_erasure(
    app: Flask,
    client: FlaskClient,
    session: Session,
    served_citizen: tuple[Citizen, str],
    reuser: dict[str, str],
) -> None:
    from consent.accounts import SessionPolicy, start_session
    from consent.models import Citizen as Account

    citizen, _ = served_citizen
    _withdraw(session, citizen)
    (mine,) = client.get("/api/v1/notices", headers=reuser).get_json()
    client.post(f"/api/v1/notices/{mine['id']}/deletion", headers=reuser)
    account = session.scalars(select(Account).where(Account.subject_id == citizen.subject_id)).one()
    token = start_session(
        session,
        account,
        policy=SessionPolicy(app.config["CITIZEN_SESSION_IDLE"], app.config["CITIZEN_SESSION_MAX"]),
    )
    session.commit()
    browser = app.test_client()
    with browser.session_transaction() as cookie:
        cookie["sid"] = token
    page = browser.get(f"/me/consents/{citizen.consent_id}", headers={"Accept-Language": "fr"})
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert html.count('data-testid="recipient-row"') == 2
    assert "remis le" in html
    assert "confirmé le" in html
    # Another citizen sees neither this consent nor its recipients.
    from tests.conftest import sign_in

    stranger = sign_in(app, session)
    assert stranger.client.get(f"/me/consents/{citizen.consent_id}").status_code == 404


def test_the_committee_sees_dead_letters_and_sends_them_again(
    app: Flask, session: Session, receiver: Receiver, served_citizen: tuple[Citizen, str]
) -> None:
    from broker.service import organisations
    from tests.conftest import form_csrf, sign_in

    citizen, _ = served_citizen
    receiver.status = 503
    app.config["NOTICE_MAX_ATTEMPTS"] = 1
    _withdraw(session, citizen)
    member = sign_in(app, session)
    organisations.add_committee_member(session, member.email, actor="test")
    session.commit()
    page = member.client.get("/admin/notices").get_data(as_text=True)
    assert page.count('data-testid="retry-notice"') == 1
    assert "answered 503" in page
    receiver.status = 201
    notice = session.scalars(select(Notice).where(Notice.status == NoticeStatus.DEAD)).one()
    url = f"/admin/notices/{notice.id}/retry"
    no_token = member.client.post(url)
    assert no_token.status_code == 403
    assert "Session expirée" in no_token.get_data(as_text=True)  # the CSRF page, not a role refusal
    done = member.client.post(url, data={"csrf_token": form_csrf(page)})
    assert done.status_code == 302
    session.expire_all()
    assert notice.status is NoticeStatus.DELIVERED
    outsider = sign_in(app, session)
    assert outsider.client.get("/admin/notices").status_code == 403


def test_a_closed_account_is_erased_only_once_its_holder_was_told_by_the_link(
    app: Flask,
    client: FlaskClient,
    session: Session,
    territory: Territory,
    receiver: Receiver,
    served_citizen: tuple[Citizen, str],
    oauth_headers: Any,
) -> None:

    citizen, _ = served_citizen
    account = session.scalars(select(Account).where(Account.subject_id == citizen.subject_id)).one()
    closing.close_account(session, account, actor="test")
    session.commit()
    # The relay handed the withdrawal to Celery, and the worker was lost before it planned the
    # notices: the outbox message is delivered, and no notice exists.
    for notice in session.scalars(select(Notice)).all():
        session.delete(notice)
    session.commit()

    def sweep() -> str:
        with frozen(utcnow() + timedelta(hours=2)):
            (citizen_id,) = accounts.closed_awaiting_erasure(session)
            outcome = erasure.settle(session, citizen_id, grace=timedelta(hours=1))
        session.commit()
        return outcome

    receiver.status = 500  # the reuser's service is down for a while
    assert sweep() == "waiting"  # the sweep planned them again, and they are pending
    planned = session.scalars(select(Notice)).all()
    assert {(n.recipient_role, n.status) for n in planned} == {
        ("holder", NoticeStatus.PENDING),
        ("reuser", NoticeStatus.PENDING),
    }
    for notice in planned:
        deliver_notice.apply(args=[str(notice.id)])
    session.expire_all()
    statuses = {n.recipient_role: n.status for n in session.scalars(select(Notice))}
    assert statuses == {"holder": NoticeStatus.DELIVERED, "reuser": NoticeStatus.PENDING}
    app.config["NOTICE_MAX_ATTEMPTS"] = 1
    assert sweep() == "waiting"  # the reuser's notice is still pending
    reuser_notice = session.scalars(select(Notice).where(Notice.recipient_role == "reuser")).one()
    deliver_notice.apply(args=[str(reuser_notice.id)])  # dead now: settled for the sweep
    assert sweep() == "erased"

    # Once at the closing (the notice the lost worker's run had sent), once planned again by
    # the sweep: both name the citizen by the meter their link kept.
    received = requests.get(f"{territory.holder.url}/webhooks/received", timeout=5).json()
    assert [r["notice"]["subject"] for r in received["notices"]] == [citizen.meter] * 2
    links = select(HolderLink).where(HolderLink.subject_id == citizen.subject_id)
    assert session.scalars(links).all() == []
    # The dead notice cannot be retried: nothing could name the citizen any more.
    committee = oauth_headers("committee", "admin", category=None)
    retried = client.post(f"/api/v1/admin/notices/{reuser_notice.id}/retry", headers=committee)
    assert retried.status_code == 409
    assert "erased" in retried.get_json()["detail"]
