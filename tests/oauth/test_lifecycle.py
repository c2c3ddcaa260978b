"""What happens to tokens when consents end, what the audit log keeps, what is published."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from audit import service as audit
from audit.models import AuditEntry
from broker.models import Grant, Token, TokenKind
from tests.conftest import ISSUER, SignedIn
from tests.oauth.helpers import code_flow, pkce, push


@pytest.fixture
def reuser(make_client: Any) -> Any:
    return make_client("reuser", slug="ecowatt-conseil", category="company")


def _consent_id(client: FlaskClient, reuser: Any, token: str) -> str:
    seen = client.post("/oauth/introspect", data={"token": token}, auth=reuser.basic).get_json()
    return str(seen["consents"][0]["id"])


def test_withdrawal_stops_the_token_at_our_api_and_revokes_the_refresh_token(
    client: FlaskClient, citizen: SignedIn, reuser: Any, session: Session
) -> None:
    body = code_flow(client, citizen.client, reuser)
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert client.get("/api/v1/consents", headers=bearer).status_code == 200
    consent_id = _consent_id(client, reuser, body["access_token"])

    citizen.client.post(f"/api/v1/consents/{consent_id}/withdraw", headers=citizen.headers)

    assert client.get("/api/v1/consents", headers=bearer).status_code == 401
    session.expire_all()
    grant = session.scalar(select(Grant))
    assert grant is not None
    assert grant.revoked_reason == "consent_ended"  # the outbox relay ran broker.revoke_for_consent
    refresh = session.scalar(select(Token).where(Token.kind == TokenKind.REFRESH))
    assert refresh is not None
    assert refresh.revoked_at is not None


def test_a_token_acting_for_a_citizen_sees_only_that_citizen(
    client: FlaskClient, citizen: SignedIn, other_citizen: SignedIn, reuser: Any
) -> None:
    other_citizen.client.post(
        "/api/v1/consents",
        json={
            "purpose_id": "energy-observatory",
            "recipient_id": "public_service",
            "terms_hash": _terms(client, "energy-observatory"),
        },
        headers=other_citizen.headers,
    )
    body = code_flow(client, citizen.client, reuser)
    bearer = {"Authorization": f"Bearer {body['access_token']}"}

    mine = client.get("/api/v1/consents", headers=bearer).get_json()

    assert [c["purpose_id"] for c in mine] == ["energy-coaching"]
    others = other_citizen.client.get("/api/v1/consents", headers=other_citizen.headers).get_json()
    assert len(others) == 1
    assert client.get(f"/api/v1/consents/{others[0]['id']}", headers=bearer).status_code == 404


def _terms(client: FlaskClient, purpose_id: str) -> str:
    from charter.document import terms_hash
    from charter.service import current
    from common.db import get_session

    with client.application.app_context():
        return terms_hash(current(get_session()).require_purpose(purpose_id))


def test_consent_read_cannot_write(client: FlaskClient, citizen: SignedIn, reuser: Any) -> None:
    body = code_flow(client, citizen.client, reuser)
    consent_id = _consent_id(client, reuser, body["access_token"])
    response = client.post(
        f"/api/v1/consents/{consent_id}/withdraw",
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert response.status_code == 403
    assert response.get_json()["type"] == "/problems/insufficient-scope"


def test_a_client_credentials_token_cannot_act_for_a_citizen(
    client: FlaskClient, oauth_headers: Any
) -> None:
    headers = oauth_headers("city_service", "releases:read", category="public_service")
    response = client.get("/api/v1/consents", headers=headers)
    assert response.status_code == 403


def test_a_second_approval_reuses_the_consent_in_force(
    client: FlaskClient, citizen: SignedIn, reuser: Any
) -> None:
    first = code_flow(client, citizen.client, reuser)
    second = code_flow(client, citizen.client, reuser)
    assert _consent_id(client, reuser, first["access_token"]) == _consent_id(
        client, reuser, second["access_token"]
    )
    assert len(citizen.client.get("/api/v1/consents", headers=citizen.headers).get_json()) == 1


def test_every_step_is_in_the_audit_log(
    client: FlaskClient, citizen: SignedIn, reuser: Any, session: Session
) -> None:
    body = code_flow(client, citizen.client, reuser)
    client.post("/oauth/introspect", data={"token": body["access_token"]}, auth=reuser.basic)
    client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": "nope"},
        auth=reuser.basic,
    )
    client.post("/oauth/revoke", data={"token": body["refresh_token"]}, auth=reuser.basic)
    client.post("/oauth/introspect", data={"token": body["access_token"]})
    client.get("/api/v1/consents", headers={"Authorization": "Bearer forged.token.here"})
    _, challenge = pkce()
    push(client, reuser, challenge, scope="admin")

    events = {e.event for e in session.scalars(select(AuditEntry))}

    assert {
        "oauth:authorization:approve",
        "oauth:token:issue",
        "oauth:token:introspect",
        "oauth:token:refuse",
        "oauth:token:revoke",
        "oauth:client:refuse",
        "api:token:refuse",
        "oauth:authorization:refuse",
        "consent:consent:give",
    } <= events
    leaked = [
        e
        for e in session.scalars(select(AuditEntry))
        if body["access_token"] in str(audit.detail(session, e.id))
        or body["refresh_token"] in str(audit.detail(session, e.id))
    ]
    assert leaked == []  # no token in the log


def test_metadata_describes_the_server(app: Flask, client: FlaskClient) -> None:
    meta = client.get("/.well-known/oauth-authorization-server").get_json()
    assert meta["issuer"] == ISSUER
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["require_pushed_authorization_requests"] is True
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert "implicit" not in meta["grant_types_supported"]
    assert "password" not in meta["grant_types_supported"]
    assert meta["dpop_signing_alg_values_supported"]
    keys = client.get("/.well-known/jwks.json").get_json()["keys"]
    assert all("d" not in key for key in keys)


def test_a_holder_introspects_a_token_issued_for_its_api(
    client: FlaskClient, citizen: SignedIn, make_client: Any
) -> None:
    api = "https://holder.example.org/api"
    holder = make_client(
        "holder", category=None, resource_uri=api, grant_types=("client_credentials",)
    )
    other_holder = make_client(
        "holder",
        category=None,
        resource_uri="https://other.example.org",
        grant_types=("client_credentials",),
    )
    reuser = make_client("reuser", slug="ecowatt-conseil", category="company")
    from tests.conftest import REDIRECT_URI
    from tests.oauth.helpers import approve

    verifier, challenge = pkce()
    pushed = push(client, reuser, challenge, resource=api)
    query = approve(citizen.client, reuser.client_id, pushed.get_json()["request_uri"])
    token = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        auth=reuser.basic,
    ).get_json()["access_token"]

    seen = client.post("/oauth/introspect", data={"token": token}, auth=holder.basic).get_json()
    assert seen["active"] is True
    assert seen["aud"] == api
    assert seen["authorization_details"][0]["purpose"] == "energy-coaching"
    hidden = client.post("/oauth/introspect", data={"token": token}, auth=other_holder.basic)
    assert hidden.get_json() == {"active": False}


def test_an_app_sees_only_the_consents_naming_its_organisation(
    client: FlaskClient, citizen: SignedIn, reuser: Any
) -> None:
    given = citizen.client.post(
        "/api/v1/consents",
        json={
            "purpose_id": "energy-observatory",
            "recipient_id": "public_service",
            "terms_hash": _terms(client, "energy-observatory"),
        },
        headers=citizen.headers,
    )
    assert given.status_code == 201
    body = code_flow(client, citizen.client, reuser)
    bearer = {"Authorization": f"Bearer {body['access_token']}"}

    seen = client.get("/api/v1/consents", headers=bearer).get_json()

    assert [c["recipient"]["id"] for c in seen] == ["ecowatt-conseil"]
    assert (
        client.get(f"/api/v1/consents/{given.get_json()['id']}", headers=bearer).status_code == 404
    )
    assert len(citizen.client.get("/api/v1/consents", headers=citizen.headers).get_json()) == 2


def test_a_narrower_consent_in_force_is_widened_not_misreported(
    client: FlaskClient, citizen: SignedIn, reuser: Any
) -> None:
    from tests.conftest import REDIRECT_URI, form_csrf
    from tests.oauth.helpers import details

    first = citizen.client.post(
        "/api/v1/consents",
        json={
            "purpose_id": "energy-coaching",
            "recipient_id": "ecowatt-conseil",
            "terms_hash": _terms(client, "energy-coaching"),
            "data_categories": ["energy.electricity.daily"],
        },
        headers=citizen.headers,
    )
    assert first.status_code == 201
    verifier, challenge = pkce()
    wanted = details(data_categories=["energy.electricity.load_curve"])
    request_uri = push(client, reuser, challenge, authorization_details=wanted).get_json()[
        "request_uri"
    ]
    query = {"client_id": reuser.client_id, "request_uri": request_uri}
    page = citizen.client.get("/oauth/authorize", query_string=query)
    assert "remplacé" in page.get_data(as_text=True)
    answer = citizen.client.post(
        "/oauth/authorize",
        data={"csrf_token": form_csrf(page.get_data(as_text=True)), **query, "decision": "approve"},
    )
    code = answer.headers["Location"].split("code=")[1].split("&")[0]
    token = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        auth=reuser.basic,
    ).get_json()["access_token"]

    consent_id = _consent_id(client, reuser, token)
    assert consent_id != first.get_json()["id"]
    mine = {
        c["id"]: c
        for c in citizen.client.get("/api/v1/consents", headers=citizen.headers).get_json()
    }
    assert mine[first.get_json()["id"]]["status"] == "withdrawn"
    assert set(mine[consent_id]["data_categories"]) == {
        "energy.electricity.daily",
        "energy.electricity.load_curve",
    }


def test_the_consent_screen_says_what_the_scopes_allow(
    client: FlaskClient, citizen: SignedIn, reuser: Any
) -> None:
    _, challenge = pkce()
    request_uri = push(client, reuser, challenge).get_json()["request_uri"]
    page = citizen.client.get(
        "/oauth/authorize", query_string={"client_id": reuser.client_id, "request_uri": request_uri}
    ).get_data(as_text=True)
    assert "Lire les consentements que vous avez donnés" in page
    assert "365" in page or "jours" in page


def test_signing_up_from_a_consent_screen_comes_back_to_it(
    client: FlaskClient, reuser: Any, charter: Any
) -> None:
    from tests.conftest import PASSWORD, form_csrf

    _, challenge = pkce()
    request_uri = push(client, reuser, challenge).get_json()["request_uri"]
    browser = client.application.test_client()
    target = f"/oauth/authorize?client_id={reuser.client_id}&request_uri={request_uri}"
    to_sign_in = browser.get(target)
    sign_in_page = browser.get(to_sign_in.headers["Location"]).get_data(as_text=True)
    import re

    links = re.findall(r'href="(/sign-up\?next=[^"]*)"', sign_in_page)
    assert links, "the sign-in page offers no sign-up link that keeps `next`"
    sign_up_link = re.match(r"(.*)", links[-1])
    assert sign_up_link is not None
    form = browser.get(sign_up_link.group(1).replace("&amp;", "&")).get_data(as_text=True)
    sign_up_form = form[form.index('action="/sign-up"') :]
    kept = re.search(r'name="next" value="([^"]*)"', sign_up_form)
    assert kept is not None
    created = browser.post(
        "/sign-up",
        data={
            "csrf_token": form_csrf(form),
            "email": "new@example.org",
            "password": PASSWORD,
            "password_again": PASSWORD,
            "next": kept.group(1).replace("&amp;", "&"),
        },
    )
    assert created.status_code == 302
    assert created.headers["Location"] == target
