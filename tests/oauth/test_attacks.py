"""Each attack on tokens and flows is refused (shared/research/anchors-security-audit.md §4)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from audit.models import AuditEntry
from broker.models import Grant
from common.clock import frozen, utcnow
from common.keyring import app_keyring
from tests.conftest import ISSUER, REDIRECT_URI, SignedIn
from tests.oauth.helpers import approve, code_flow, pkce, push

API = "/api/v1/consents"


@pytest.fixture
def reuser(make_client: Any) -> Any:
    return make_client("reuser", slug="ecowatt-conseil", category="company")


@pytest.fixture
def tokens(client: FlaskClient, citizen: SignedIn, reuser: Any) -> dict[str, Any]:
    return code_flow(client, citizen.client, reuser)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(signature)}"


def _claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def _call(client: FlaskClient, token: str) -> Any:
    return client.get(API, headers={"Authorization": f"Bearer {token}"})


def _refused(response: Any) -> None:
    assert response.status_code == 401, response.get_json()
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["type"] == "/problems/invalid-token"


def test_the_genuine_token_works(client: FlaskClient, tokens: dict[str, Any]) -> None:
    response = _call(client, tokens["access_token"])
    assert response.status_code == 200
    assert len(response.get_json()) == 1


def test_alg_none_is_refused(client: FlaskClient, tokens: dict[str, Any]) -> None:
    header = {
        "alg": "none",
        "typ": "at+jwt",
        "kid": jwt.get_unverified_header(tokens["access_token"])["kid"],
    }
    _refused(_call(client, _forge(header, _claims(tokens["access_token"]))))


def test_hs256_signed_with_our_public_key_is_refused(
    arranging_app: Flask, client: FlaskClient, tokens: dict[str, Any]
) -> None:
    key = app_keyring().active()
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "at+jwt", "kid": key.kid}
    unsigned = _forge(header, _claims(tokens["access_token"])).rsplit(".", 1)[0]
    signature = hmac.new(public_pem, unsigned.encode(), hashlib.sha256).digest()
    _refused(_call(client, f"{unsigned}.{_b64(signature)}"))


@pytest.mark.parametrize("where", ["jwk", "jku", "x5u"])
def test_a_key_named_in_the_header_is_never_used(
    arranging_app: Flask, client: FlaskClient, tokens: dict[str, Any], where: str
) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    public = jwt.algorithms.ECAlgorithm.to_jwk(attacker.public_key(), as_dict=True)
    headers: dict[str, Any] = {"typ": "at+jwt", "kid": app_keyring().active().kid}
    headers[where] = public if where == "jwk" else "https://attacker.example/keys"
    forged = jwt.encode(
        _claims(tokens["access_token"]), attacker, algorithm="ES256", headers=headers
    )
    _refused(_call(client, forged))


def test_unknown_crit_is_refused(
    arranging_app: Flask, client: FlaskClient, tokens: dict[str, Any]
) -> None:
    key = app_keyring().active()
    forged = jwt.encode(
        _claims(tokens["access_token"]),
        key.private_key,
        algorithm="ES256",
        headers={"kid": key.kid, "typ": "at+jwt", "crit": ["x-unknown"], "x-unknown": 1},
    )
    _refused(_call(client, forged))


def test_an_id_token_like_jwt_without_typ_is_refused(
    arranging_app: Flask, client: FlaskClient, tokens: dict[str, Any]
) -> None:
    key = app_keyring().active()
    claims = {**_claims(tokens["access_token"]), "aud": "tc_some_client"}
    forged = jwt.encode(
        claims, key.private_key, algorithm="ES256", headers={"kid": key.kid, "typ": None}
    )
    _refused(_call(client, forged))


def test_a_token_for_another_audience_is_refused(
    client: FlaskClient, citizen: SignedIn, make_client: Any, session: Session
) -> None:
    holder_api = "https://holder.example.org/api"
    make_client(
        "holder", category=None, resource_uri=holder_api, grant_types=("client_credentials",)
    )
    reuser = make_client("reuser", slug="ecowatt-conseil", category="company")
    verifier, challenge = pkce()
    pushed = push(client, reuser, challenge, resource=holder_api)
    assert pushed.status_code == 201, pushed.get_json()
    query = approve(citizen.client, reuser.client_id, pushed.get_json()["request_uri"])
    issued = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        auth=reuser.basic,
    ).get_json()
    assert _claims(issued["access_token"])["aud"] == holder_api
    _refused(_call(client, issued["access_token"]))  # a holder's token is no use at Tiers' API


def test_an_expired_token_is_refused(client: FlaskClient, tokens: dict[str, Any]) -> None:
    with frozen(utcnow() + timedelta(minutes=6)):
        _refused(_call(client, tokens["access_token"]))


def test_a_token_in_the_query_string_is_refused(
    client: FlaskClient, tokens: dict[str, Any]
) -> None:
    response = client.get(API, query_string={"access_token": tokens["access_token"]})
    assert response.status_code == 401


def test_a_replayed_code_is_refused_and_revokes_what_it_issued(
    client: FlaskClient, citizen: SignedIn, reuser: Any, session: Session
) -> None:
    verifier, challenge = pkce()
    pushed = push(client, reuser, challenge)
    query = approve(citizen.client, reuser.client_id, pushed.get_json()["request_uri"])
    form = {
        "grant_type": "authorization_code",
        "code": query["code"][0],
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    first = client.post("/oauth/token", data=form, auth=reuser.basic)
    assert first.status_code == 200
    assert _call(client, first.get_json()["access_token"]).status_code == 200

    second = client.post("/oauth/token", data=form, auth=reuser.basic)

    assert second.status_code == 400
    assert second.get_json()["error"] == "invalid_grant"
    _refused(_call(client, first.get_json()["access_token"]))
    refreshed = client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": first.get_json()["refresh_token"]},
        auth=reuser.basic,
    )
    assert refreshed.status_code == 400
    assert session.scalar(select(AuditEntry).where(AuditEntry.event == "oauth:code:replay"))


def test_a_replayed_refresh_token_revokes_the_whole_family(
    client: FlaskClient, tokens: dict[str, Any], reuser: Any, session: Session
) -> None:
    old = tokens["refresh_token"]
    rotated = client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": old},
        auth=reuser.basic,
    )
    assert rotated.status_code == 200
    new = rotated.get_json()
    assert new["refresh_token"] != old
    assert _call(client, new["access_token"]).status_code == 200

    replay = client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": old},
        auth=reuser.basic,
    )

    assert replay.status_code == 400
    assert replay.get_json()["error"] == "invalid_grant"
    _refused(_call(client, new["access_token"]))
    _refused(_call(client, tokens["access_token"]))
    after = client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": new["refresh_token"]},
        auth=reuser.basic,
    )
    assert after.status_code == 400
    grant = session.scalar(select(Grant))
    assert grant is not None
    assert grant.revoked_reason == "refresh_replay"


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"redirect_uri": REDIRECT_URI + "/"}, "invalid_request"),
        ({"redirect_uri": REDIRECT_URI.replace("callback", "callbacK")}, "invalid_request"),
        ({"redirect_uri": REDIRECT_URI + "?x=1"}, "invalid_request"),
        ({"scope": "admin"}, "invalid_scope"),
    ],
)
def test_bad_pushed_requests_are_refused(
    client: FlaskClient, reuser: Any, overrides: dict[str, Any], error: str
) -> None:
    _, challenge = pkce()
    response = push(client, reuser, challenge, **overrides)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == error


def test_a_verifier_without_a_matching_challenge_is_refused(
    client: FlaskClient, citizen: SignedIn, reuser: Any
) -> None:
    verifier, challenge = pkce()
    pushed = push(client, reuser, challenge)
    query = approve(citizen.client, reuser.client_id, pushed.get_json()["request_uri"])
    for wrong in (None, pkce()[0], verifier[:42]):
        form = {
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": REDIRECT_URI,
        }
        if wrong:
            form["code_verifier"] = wrong
        response = client.post("/oauth/token", data=form, auth=reuser.basic)
        assert response.status_code == 400
        assert response.get_json()["error"] in ("invalid_request", "invalid_grant")


def test_a_code_redeemed_with_another_redirect_uri_is_refused(
    client: FlaskClient, citizen: SignedIn, reuser: Any
) -> None:
    verifier, challenge = pkce()
    pushed = push(client, reuser, challenge)
    query = approve(citizen.client, reuser.client_id, pushed.get_json()["request_uri"])
    response = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": REDIRECT_URI + "x",
            "code_verifier": verifier,
        },
        auth=reuser.basic,
    )
    assert response.get_json()["error"] == "invalid_grant"


def test_a_code_older_than_60_seconds_is_refused(
    client: FlaskClient, citizen: SignedIn, reuser: Any
) -> None:
    verifier, challenge = pkce()
    pushed = push(client, reuser, challenge)
    query = approve(citizen.client, reuser.client_id, pushed.get_json()["request_uri"])
    with frozen(utcnow() + timedelta(seconds=61)):
        response = client.post(
            "/oauth/token",
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier,
            },
            auth=reuser.basic,
        )
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"


def test_a_client_cannot_use_another_clients_code_or_tokens(
    client: FlaskClient, citizen: SignedIn, reuser: Any, make_client: Any
) -> None:
    other = make_client("reuser", category="company")
    verifier, challenge = pkce()
    pushed = push(client, reuser, challenge)
    query = approve(citizen.client, reuser.client_id, pushed.get_json()["request_uri"])
    stolen = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        auth=other.basic,
    )
    assert stolen.status_code == 400
    assert stolen.get_json()["error"] == "invalid_grant"
    genuine = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        auth=reuser.basic,
    )
    assert genuine.status_code == 200  # the other client's attempt did not burn the code
    issued = genuine.get_json()
    assert (
        client.post(
            "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]},
            auth=other.basic,
        ).get_json()["error"]
        == "invalid_grant"
    )
    still_good = client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]},
        auth=reuser.basic,
    )
    assert still_good.status_code == 200  # B's attempt did not spend A's refresh token
    issued = still_good.get_json()
    client.post("/oauth/revoke", data={"token": issued["access_token"]}, auth=other.basic)
    assert _call(client, issued["access_token"]).status_code == 200  # B cannot revoke A's token
    seen = client.post(
        "/oauth/introspect", data={"token": issued["access_token"]}, auth=other.basic
    )
    assert seen.get_json() == {"active": False}


def test_introspection_needs_client_authentication(
    client: FlaskClient, tokens: dict[str, Any], reuser: Any
) -> None:
    for auth in (None, (reuser.client_id, "wrong-secret")):
        response = client.post(
            "/oauth/introspect", data={"token": tokens["access_token"]}, auth=auth
        )
        assert response.status_code == 401
        assert "active" not in response.get_json()


@pytest.mark.parametrize(
    "grant_type", ["password", "implicit", "urn:ietf:params:oauth:grant-type:device_code"]
)
def test_no_password_or_implicit_grant(client: FlaskClient, reuser: Any, grant_type: str) -> None:
    response = client.post(
        "/oauth/token",
        data={"grant_type": grant_type, "username": "a", "password": "b"},
        auth=reuser.basic,
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "unsupported_grant_type"


def test_revocation_makes_the_access_token_unusable(
    client: FlaskClient, tokens: dict[str, Any], reuser: Any
) -> None:
    response = client.post(
        "/oauth/revoke", data={"token": tokens["access_token"]}, auth=reuser.basic
    )
    assert response.status_code == 200
    _refused(_call(client, tokens["access_token"]))
    unknown = client.post(
        "/oauth/revoke", data={"token": "nothing-like-a-token"}, auth=reuser.basic
    )
    assert unknown.status_code == 200


def test_an_oversized_token_is_refused_without_a_500(client: FlaskClient) -> None:
    response = client.get(API, headers={"Authorization": "Bearer " + "a" * 50_000})
    assert response.status_code == 401
    assert response.get_json()["type"] == "/problems/invalid-token"


def test_the_issuer_is_ours(tokens: dict[str, Any]) -> None:
    claims = _claims(tokens["access_token"])
    assert claims["iss"] == ISSUER
    assert jwt.get_unverified_header(tokens["access_token"])["typ"] == "at+jwt"
