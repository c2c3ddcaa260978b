"""The committee's page of access requests and grants (CSRF, a reason every time, 403 to
anyone else), and the public register of approved reuses."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from broker.models import AccessGrant
from broker.service import organisations
from tests.conftest import SignedIn, form_csrf, sign_in
from tests.gateway.conftest import ServedHolder, request_body


def _member(app: Flask, session: Session) -> SignedIn:
    signed_in = sign_in(app, session)
    organisations.add_committee_member(session, signed_in.email, actor="test")
    session.commit()
    return signed_in


def _pending(client: FlaskClient, holder: ServedHolder, reuser: dict[str, str]) -> str:
    dataset = str(holder.dataset.id)
    body = request_body(holder.dataset, fields={dataset: ["date", "district"]})
    filed = client.post("/api/v1/access-requests", json=body, headers=reuser).get_json()
    assert filed["status"] == "pending"
    return str(filed["id"])


def test_the_committee_approves_on_its_page_with_a_reason(
    app: Flask,
    client: FlaskClient,
    session: Session,
    electricity: ServedHolder,
    reuser: dict[str, str],
) -> None:
    request_id = _pending(client, electricity, reuser)
    member = _member(app, session)
    page = member.client.get("/admin/access")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert request_id in html
    assert "purposes.energy-coaching.data_categories" in html
    csrf = form_csrf(html)
    url = f"/admin/access-requests/{request_id}/approve"
    # No CSRF token: refused, nothing decided.
    no_token = member.client.post(url, data={"reason": "ok"})
    assert no_token.status_code == 403
    assert "Session expirée" in no_token.get_data(as_text=True)  # the CSRF page, not a role refusal
    # No reason: the form says so, nothing decided.
    blank = member.client.post(url, data={"csrf_token": csrf, "reason": ""})
    assert blank.status_code == 422
    assert session.scalar(select(func.count()).select_from(AccessGrant)) == 0
    done = member.client.post(url, data={"csrf_token": csrf, "reason": "Needed to advise."})
    assert done.status_code == 302
    assert session.scalar(select(func.count()).select_from(AccessGrant)) == 1
    again = member.client.post(url, data={"csrf_token": csrf, "reason": "twice"})
    assert again.status_code == 409


def test_a_citizen_who_is_not_on_the_committee_gets_403(
    app: Flask,
    client: FlaskClient,
    session: Session,
    electricity: ServedHolder,
    reuser: dict[str, str],
) -> None:
    request_id = _pending(client, electricity, reuser)
    citizen = sign_in(app, session)
    assert citizen.client.get("/admin/access").status_code == 403
    # A valid CSRF token of their own session: refused for not being on the committee.
    answer = citizen.client.post(
        f"/admin/access-requests/{request_id}/approve",
        data={"csrf_token": citizen.csrf, "reason": "me"},
    )
    assert answer.status_code == 403
    assert "comité" in answer.get_data(as_text=True)
    assert session.scalar(select(func.count()).select_from(AccessGrant)) == 0
    assert client.get("/admin/access").status_code in (302, 303)  # anonymous: sign in first


def test_suspending_on_the_page_shows_in_the_public_register(
    app: Flask,
    client: FlaskClient,
    session: Session,
    electricity: ServedHolder,
    reuser: dict[str, str],
) -> None:
    empty = client.get("/registre")
    assert empty.status_code == 200
    assert 'data-testid="register-row"' not in empty.get_data(as_text=True)
    client.post("/api/v1/access-requests", json=request_body(electricity.dataset), headers=reuser)
    register = client.get("/registre", headers={"Accept-Language": "fr"}).get_data(as_text=True)
    assert register.count('data-testid="register-row"') == 1
    assert "Organisation reuser" in register  # who
    assert "Consommation quotidienne" in register  # which data
    assert "en cours" in register
    member = _member(app, session)
    grant = session.scalars(select(AccessGrant)).one()
    csrf = form_csrf(member.client.get("/admin/access").get_data(as_text=True))
    member.client.post(
        f"/admin/grants/{grant.id}/suspend", data={"csrf_token": csrf, "reason": "Complaint."}
    )
    assert "suspendue" in client.get("/registre").get_data(as_text=True)
    wrong = member.client.post(
        f"/admin/grants/{grant.id}/explode", data={"csrf_token": csrf, "reason": "x"}
    )
    assert wrong.status_code == 404


def test_the_register_never_shows_refused_or_pending_requests(
    client: FlaskClient, electricity: ServedHolder, reuser: dict[str, str], oauth_headers: Any
) -> None:
    _pending(client, electricity, reuser)
    stranger = oauth_headers("reuser", "access:request", category="company")
    client.post("/api/v1/access-requests", json=request_body(electricity.dataset), headers=stranger)
    assert 'data-testid="register-row"' not in client.get("/registre").get_data(as_text=True)
