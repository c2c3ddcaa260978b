"""The authorization code flow with PAR, PKCE and RAR, end to end through the test client."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.models import Token
from consent.models import Consent
from tests.conftest import REDIRECT_URI, SignedIn
from tests.oauth.helpers import COACHING, approve, code_flow, pkce, push


@pytest.fixture
def reuser(make_client: Any) -> Any:
    return make_client("reuser", slug="ecowatt-conseil", category="company")


@pytest.fixture
def holder(make_client: Any) -> Any:
    return make_client(
        "holder",
        category=None,
        grant_types=("client_credentials",),
        redirect_uris=(),
        resource_uri="https://holder.example.org/api",
    )


def test_full_flow_issues_a_jwt_bound_to_the_consent_it_created(
    client: FlaskClient, citizen: SignedIn, reuser: Any, session: Session
) -> None:
    body = code_flow(client, citizen.client, reuser)

    assert body["token_type"] == "Bearer"
    assert body["refresh_token"]
    [detail] = body["authorization_details"]
    assert detail["purpose"] == COACHING
    consent = session.scalar(select(Consent).where(Consent.subject_id == citizen.subject_id))
    assert consent is not None
    assert consent.method == "oauth"
    assert consent.recipient_id == "ecowatt-conseil"
    rows = session.scalars(select(Token)).all()
    assert body["access_token"] not in {r.token_hash for r in rows}  # stored hashed only
    assert body["refresh_token"] not in {r.token_hash for r in rows}


def test_introspection_answers_from_the_current_consent_state(
    client: FlaskClient, citizen: SignedIn, reuser: Any, holder: Any
) -> None:
    body = code_flow(client, citizen.client, reuser)

    seen = client.post("/oauth/introspect", data={"token": body["access_token"]}, auth=reuser.basic)
    assert seen.status_code == 200
    answer = seen.get_json()
    assert answer["active"] is True
    assert answer["sub"] == str(citizen.subject_id)
    [consent] = answer["consents"]
    assert consent["status"] == "given"

    withdrawn = citizen.client.post(
        f"/api/v1/consents/{consent['id']}/withdraw", headers=citizen.headers
    )
    assert withdrawn.status_code == 200

    again = client.post(
        "/oauth/introspect", data={"token": body["access_token"]}, auth=reuser.basic
    )
    assert again.get_json() == {"active": False}
    refreshed = client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
        auth=reuser.basic,
    )
    assert refreshed.status_code == 400
    assert refreshed.get_json()["error"] == "invalid_grant"


def test_the_authorization_response_names_the_issuer(
    app: Flask, client: FlaskClient, citizen: SignedIn, reuser: Any
) -> None:
    _, challenge = pkce()
    pushed = push(client, reuser, challenge, state="xyz")
    query = approve(citizen.client, reuser.client_id, pushed.get_json()["request_uri"])

    assert query["iss"] == [app.config["ISSUER"]]
    assert query["state"] == ["xyz"]
    assert set(query) == {"code", "state", "iss"}
    assert REDIRECT_URI
