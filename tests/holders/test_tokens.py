"""A personal dataset opens only to an access token Tiers signed for this holder: ES256, typ
at+jwt, Tiers' issuer, this holder's resource as audience, not expired, and a key that Tiers
publishes in its JWKS, never one the token brings along."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask, Response, jsonify

from examples.holders.electricity import Fleet
from examples.holders.tokens import TiersKeys
from tests.holders.conftest import SEED, FakeTiers, HolderFactory, b64, resource_uri, serve

RECORDS = "/datasets/daily/records"
PRM = Fleet(SEED).meter(0).prm
RESOURCE = resource_uri("electricity")


def _get(app: Flask, token: str | None, scheme: str = "Bearer") -> Any:
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    return app.test_client().get(
        RECORDS, query_string={"subject": PRM, "limit": 2}, headers=headers
    )


def _refused(response: Any, reason: str) -> None:
    assert response.status_code == 401, response.get_json()
    assert response.mimetype == "application/problem+json"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith(f'Bearer realm="{RESOURCE}"')
    assert 'error="invalid_token"' in challenge
    assert reason in response.get_json()["detail"]


def _forge(header: dict[str, Any], claims: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> str:
    return jwt.encode(claims, key, algorithm="ES256", headers=header)


def test_a_token_tiers_signed_for_this_holder_opens_the_data(
    make_holder: HolderFactory, tiers: FakeTiers
) -> None:
    app = make_holder()
    response = _get(app, tiers.token(RESOURCE))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert len(response.get_json()["records"]) == 2
    # RFC 9068 allows an audience array, and typ may be spelt with its media-type prefix
    assert _get(app, tiers.token([RESOURCE, "https://other.example"])).status_code == 200
    assert _get(app, tiers.token(RESOURCE, typ="application/at+JWT")).status_code == 200


def test_no_token_is_a_bare_bearer_challenge(make_holder: HolderFactory) -> None:
    app = make_holder()
    response = _get(app, None)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == f'Bearer realm="{RESOURCE}"'  # RFC 6750 §3.1
    assert _get(app, "abc", scheme="Basic").status_code == 401
    assert _get(app, "", scheme="Bearer").status_code == 401


def test_an_unsigned_token_is_refused(make_holder: HolderFactory, tiers: FakeTiers) -> None:
    header = {"alg": "none", "typ": "at+jwt", "kid": tiers.key.kid}
    claims = tiers.claims(RESOURCE)
    token = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."
    _refused(_get(make_holder(), token), "alg must be ES256")


def test_the_public_key_as_an_hmac_secret_is_refused(
    make_holder: HolderFactory, tiers: FakeTiers
) -> None:
    public_pem = tiers.key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": tiers.key.kid}).encode())
    payload = b64(json.dumps(tiers.claims(RESOURCE)).encode())
    mac = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    _refused(_get(make_holder(), f"{header}.{payload}.{b64(mac)}"), "alg must be ES256")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"aud": resource_uri("gas")}, "another audience"),  # a token for another holder
        ({"aud": "http://tiers.test/api"}, "another audience"),  # a token for Tiers' own API
        ({"exp": int(time.time()) - 60}, "expired"),
        ({"iss": "https://evil.example"}, "someone else"),
        ({"client_id": None}, "no client_id claim"),
        ({"exp": None}, "no exp claim"),
        ({"iat": int(time.time()) + 3600}, "not valid yet"),
        ({"cnf": {"jkt": "x" * 43}}, "bound to a key"),
    ],
)
def test_claims_that_do_not_fit_are_refused(
    make_holder: HolderFactory, tiers: FakeTiers, overrides: dict[str, Any], reason: str
) -> None:
    _refused(_get(make_holder(), tiers.token(RESOURCE, **overrides)), reason)


def test_another_typ_is_refused(make_holder: HolderFactory, tiers: FakeTiers) -> None:
    app = make_holder()
    _refused(_get(app, tiers.token(RESOURCE, typ="JWT")), "typ must be at+jwt")
    _refused(_get(app, tiers.token(RESOURCE, typ="tiers-notice+jwt")), "typ must be at+jwt")


def test_a_tampered_token_is_refused(make_holder: HolderFactory, tiers: FakeTiers) -> None:
    header, _, signature = tiers.token(RESOURCE).split(".")
    claims = b64(json.dumps(tiers.claims(RESOURCE, sub="someone-else")).encode())
    _refused(_get(make_holder(), f"{header}.{claims}.{signature}"), "signature does not verify")


def test_a_key_carried_by_the_token_is_never_used(
    make_holder: HolderFactory, tiers: FakeTiers
) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    attacker_jwk = jwt.algorithms.ECAlgorithm.to_jwk(attacker.public_key(), as_dict=True)
    served: list[str] = []
    evil = Flask("evil")

    @evil.get("/jwks.json")
    def evil_jwks() -> Response:
        served.append("jwks")
        return jsonify({"keys": [{**attacker_jwk, "kid": "evil"}]})

    app = make_holder()
    claims = tiers.claims(RESOURCE)
    with serve(evil) as evil_url:
        # Tiers' kid, the attacker's key in `jwk`: verified against Tiers' key, so it fails
        token = _forge(
            {"typ": "at+jwt", "kid": tiers.key.kid, "jwk": attacker_jwk}, claims, attacker
        )
        _refused(_get(app, token), "signature does not verify")
        # an unknown kid with the key in `jwk`, or a `jku` to fetch it from: unknown key
        for extra in ({"jwk": attacker_jwk}, {"jku": f"{evil_url}/jwks.json"}, {"x5u": evil_url}):
            token = _forge({"typ": "at+jwt", "kid": "evil", **extra}, claims, attacker)
            _refused(_get(app, token), "a key Tiers does not publish")
    assert served == []


def test_an_unknown_kid_is_refused_and_a_rotated_key_is_picked_up(
    make_holder: HolderFactory, tiers: FakeTiers
) -> None:
    app = make_holder()
    assert _get(app, tiers.token(RESOURCE)).status_code == 200
    attacker = ec.generate_private_key(ec.SECP256R1())
    _refused(
        _get(app, _forge({"typ": "at+jwt", "kid": "nobody"}, tiers.claims(RESOURCE), attacker)),
        "a key Tiers does not publish",
    )
    tiers.keyring.rotate()  # Tiers rotates: the new kid is unknown to the holder's cache
    assert _get(app, tiers.token(RESOURCE)).status_code == 200


def test_unknown_kids_cannot_make_the_holder_hammer_tiers(
    make_holder: HolderFactory, tiers: FakeTiers
) -> None:
    app = make_holder(refresh_interval=60)
    assert _get(app, tiers.token(RESOURCE)).status_code == 200
    before = tiers.jwks_requests
    attacker = ec.generate_private_key(ec.SECP256R1())
    for number in range(5):
        token = _forge({"typ": "at+jwt", "kid": f"k{number}"}, tiers.claims(RESOURCE), attacker)
        assert _get(app, token).status_code == 401
    assert tiers.jwks_requests - before <= 1


def test_tiers_keys_unreachable_is_a_503_not_a_401(
    make_holder: HolderFactory, tiers: FakeTiers
) -> None:
    tiers.jwks_available = False
    response = _get(make_holder(), tiers.token(RESOURCE))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    # once read, the keys keep verifying while Tiers' JWKS is down
    tiers.jwks_available = True
    keys = TiersKeys(tiers.url, ttl=0.0, refresh_interval=0.0)
    assert keys.get(tiers.key.kid) is not None
    tiers.jwks_available = False
    assert keys.get(tiers.key.kid) is not None
    keys.close()


def test_a_published_key_that_is_not_p256_is_not_used(
    make_holder: HolderFactory, tiers: FakeTiers, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_holder()
    real = tiers.keyring.jwks

    def with_private_member(**kwargs: Any) -> dict[str, Any]:
        document = real(**kwargs)
        return {"keys": [{**key, "d": "leaked"} for key in document["keys"]]}

    monkeypatch.setattr(tiers.keyring, "jwks", with_private_member)
    _refused(_get(app, tiers.token(RESOURCE)), "private members")
