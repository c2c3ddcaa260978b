"""RFC 7591 registration at /oauth/register: an initial access token works once, errors are
RFC 7591 errors, and a refused registration leaves the token unused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from broker.models import InitialAccessToken, OAuthClient
from broker.service import clients, credentials, organisations
from common.clock import frozen, utcnow
from tests.broker import keys

REDIRECT = "https://lab.example.org/callback"
METADATA = {
    "client_name": "Lab app",
    "redirect_uris": [REDIRECT],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "client_secret_basic",
    "scope": "access:request",
    "logo_uri": "https://lab.example.org/logo.png",  # not understood: ignored (RFC 7591 §2)
}


@pytest.fixture
def lab(session, charter):
    org = organisations.create_organisation(
        session,
        slug="energy-lab",
        name="Energy Lab",
        role="reuser",
        reuser_category="research",
        actor="test",
    )
    session.commit()
    return org


@pytest.fixture
def token(session, lab):
    issued = clients.issue_initial_access_token(session, organisation_id=lab.id, actor="test")
    session.commit()
    return issued


def bearer(value):
    return {"Authorization": f"Bearer {value}"}


def client_count(session):
    return session.scalar(select(func.count()).select_from(OAuthClient))


def unused(session, value):
    session.expire_all()
    row = session.scalar(
        select(InitialAccessToken).where(
            InitialAccessToken.token_hash == credentials.hash_value(value)
        )
    )
    return row.used_at is None


def register(client, token, **changes):
    return client.post("/oauth/register", json={**METADATA, **changes}, headers=bearer(token))


def test_a_client_registers_itself_and_gets_rfc_7591_information(client, session, lab, token):
    response = register(client, token)
    assert response.status_code == 201, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    info = response.get_json()
    assert info["client_id"].startswith("tc_")
    assert info["client_secret"]
    assert info["client_secret_expires_at"] == 0
    assert abs(info["client_id_issued_at"] - utcnow().timestamp()) < 60
    assert info["client_name"] == "Lab app"
    assert info["redirect_uris"] == [REDIRECT]
    assert info["grant_types"] == ["authorization_code", "refresh_token"]
    assert info["response_types"] == ["code"]
    assert info["token_endpoint_auth_method"] == "client_secret_basic"
    assert info["scope"] == "access:request"
    assert info["dpop_bound_access_tokens"] is False
    assert "logo_uri" not in info
    stored = session.scalar(select(OAuthClient).where(OAuthClient.client_id == info["client_id"]))
    assert stored.registered_by == "dcr"
    assert stored.organisation_id == lab.id
    assert credentials.check_secret(stored, info["client_secret"])
    assert not unused(session, token)


def test_a_private_key_jwt_client_registers_its_public_keys(client, session, token):
    jwk_set = keys.jwks(keys.ec_public_jwk())
    response = register(
        client,
        token,
        token_endpoint_auth_method="private_key_jwt",
        jwks=jwk_set,
        dpop_bound_access_tokens=True,
    )
    assert response.status_code == 201, response.get_json()
    info = response.get_json()
    assert "client_secret" not in info
    assert "client_secret_expires_at" not in info
    assert info["jwks"] == jwk_set
    assert info["dpop_bound_access_tokens"] is True


def test_a_used_token_registers_nothing_more(client, session, token):
    assert register(client, token).status_code == 201
    response = register(client, token, client_name="Second")
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert client_count(session) == 1


def test_an_expired_token_registers_nothing(client, session, lab):
    start = utcnow()
    with frozen(start) as move_to:
        value = clients.issue_initial_access_token(
            session, organisation_id=lab.id, ttl=timedelta(hours=1), actor="test"
        )
        session.commit()
        move_to(start + timedelta(hours=2))
        response = register(client, value)
    assert response.status_code == 401
    assert client_count(session) == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("made-up-token"),
        {"Authorization": "Basic bGFiOnNlY3JldA=="},
        {"Authorization": "Bearer "},
        bearer("x" * 600),
    ],
)
def test_without_a_valid_token_nothing_is_registered_and_no_hint_is_given(
    client, session, token, headers
):
    response = client.post("/oauth/register", json={"redirect_uris": "nonsense"}, headers=headers)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert "errors" not in response.get_json()
    assert "WWW-Authenticate" in response.headers
    assert client_count(session) == 0
    assert unused(session, token)


@pytest.mark.parametrize(
    "uris",
    [
        ["http://lab.example.org/callback"],
        ["https://*.example.org/callback"],
        ["https://lab.example.org/callback#x"],
        [],
        "https://lab.example.org/callback",
    ],
)
def test_bad_redirect_uris_are_invalid_redirect_uri(client, session, token, uris):
    response = register(client, token, redirect_uris=uris)
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid_redirect_uri"
    assert "redirect_uris" in body["error_description"]
    assert body["error_description"].isascii()
    assert "redirect_uris" in body["errors"]
    assert client_count(session) == 0
    assert unused(session, token)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"scope": "admin"}, "scope"),
        ({"scope": None}, "scope"),
        ({"grant_types": ["implicit"], "response_types": None}, "grant_types"),
        ({"grant_types": ["password"], "response_types": None}, "grant_types"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "jwks"),
        (
            {
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": keys.jwks(keys.ec_private_jwk()),
            },
            "jwks",
        ),
        ({"token_endpoint_auth_method": "client_secret_post"}, "token_endpoint_auth_method"),
        ({"jwks_uri": "https://lab.example.org/jwks.json"}, "jwks_uri"),
        ({"response_types": ["token"]}, "response_types"),
        ({"client_name": 42}, "client_name"),
        ({"dpop_bound_access_tokens": "perhaps"}, "dpop_bound_access_tokens"),
    ],
)
def test_bad_metadata_is_invalid_client_metadata_and_keeps_the_token(
    client, session, token, changes, field
):
    body = {k: v for k, v in {**METADATA, **changes}.items() if v is not None}
    response = client.post("/oauth/register", json=body, headers=bearer(token))
    assert response.status_code == 400, response.get_json()
    answer = response.get_json()
    assert answer["error"] == "invalid_client_metadata"
    assert field in answer["errors"], answer
    assert answer["error_description"]
    assert client_count(session) == 0
    assert unused(session, token)
    assert register(client, token).status_code == 201  # the token still works once


def test_a_body_that_is_not_json_is_invalid_client_metadata(client, session, token):
    response = client.post(
        "/oauth/register", data="{nope", content_type="application/json", headers=bearer(token)
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_client_metadata"
    assert unused(session, token)


def test_registration_needs_no_csrf_token_and_no_cookie(app, token):
    fresh = app.test_client(use_cookies=False)
    assert register(fresh, token).status_code == 201


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        "text",
        {"redirect_uris": [None, 42]},
        {"grant_types": []},
        {"grant_types": [None]},
        {"client_name": "nul\x00byte"},
        {"scope": "\x00"},
        {"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "RSA"}]}},
        {"token_endpoint_auth_method": "private_key_jwt", "jwks": "keys"},
        {"token_endpoint_auth_method": None},
        {"response_types": "code"},
    ],
)
def test_no_metadata_makes_registration_fail_with_a_500(client, session, token, payload):
    body = {**METADATA, **payload} if isinstance(payload, dict) else payload
    response = client.post("/oauth/register", json=body, headers=bearer(token))
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"] in ("invalid_client_metadata", "invalid_redirect_uri")
    assert client_count(session) == 0
    assert unused(session, token)
