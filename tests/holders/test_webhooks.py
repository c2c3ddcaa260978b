"""Withdrawal notices from Tiers: a compact JWS checked against Tiers' JWKS (typ
tiers-notice+jwt), recorded once per Idempotency-Key however often it arrives."""

from __future__ import annotations

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from tests.holders.conftest import FakeTiers, HolderFactory, serve

JOSE = {"Content-Type": "application/jose"}


def test_a_notice_is_recorded_once_however_often_it_is_delivered(
    make_holder: HolderFactory, tiers: FakeTiers
) -> None:
    with serve(make_holder()) as url:
        notice = tiers.notice(subject="12345678901234", consent="c-1")
        first = requests.post(
            f"{url}/webhooks/tiers",
            data=notice,
            headers={**JOSE, "Idempotency-Key": "w-1"},
            timeout=5,
        )
        assert first.status_code == 201
        assert first.json()["duplicate"] is False
        # a retry, re-signed by the relay (new jti, new iat): the same key, so the same notice
        retry = requests.post(
            f"{url}/webhooks/tiers",
            data=tiers.notice(subject="12345678901234", consent="c-1"),
            headers={**JOSE, "Idempotency-Key": "w-1"},
            timeout=5,
        )
        assert retry.status_code == 200
        assert retry.json() == {**first.json(), "duplicate": True}
        other = requests.post(
            f"{url}/webhooks/tiers",
            data=tiers.notice(consent="c-2"),
            headers={**JOSE, "Idempotency-Key": "w-2"},
            timeout=5,
        )
        assert other.status_code == 201
        received = requests.get(f"{url}/webhooks/received", timeout=5).json()["notices"]
    assert [n["idempotency_key"] for n in received] == ["w-1", "w-2"]
    assert received[0]["deliveries"] == 2
    assert received[0]["notice"]["consent"] == "c-1"
    assert received[0]["notice"]["type"] == "consent.withdrawn"
    assert received[0]["notice"]["subject"] == "12345678901234"


def test_a_notice_tiers_did_not_sign_is_refused(
    make_holder: HolderFactory, tiers: FakeTiers
) -> None:
    client = make_holder().test_client()
    attacker = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(
        {"iss": tiers.url, "iat": 1, "jti": "j", "type": "consent.withdrawn"},
        attacker,
        algorithm="ES256",
        headers={"typ": "tiers-notice+jwt", "kid": tiers.key.kid},
    )
    cases = {
        "signature does not verify": forged,
        "typ must be tiers-notice+jwt": tiers.notice(typ="at+jwt"),
        "someone else": tiers.notice(iss="https://evil.example"),
        "no type claim": tiers.notice(type=None),
        "not a compact JWS": "hello",
    }
    for number, (reason, body) in enumerate(cases.items()):
        response = client.post(
            "/webhooks/tiers", data=body, headers={**JOSE, "Idempotency-Key": f"bad-{number}"}
        )
        assert response.status_code == 400, reason
        assert response.mimetype == "application/problem+json"
        assert reason in response.get_json()["detail"]
    assert client.get("/webhooks/received").get_json() == {"notices": []}


def test_a_notice_needs_its_media_type_and_idempotency_key(
    make_holder: HolderFactory, tiers: FakeTiers
) -> None:
    client = make_holder().test_client()
    no_key = client.post("/webhooks/tiers", data=tiers.notice(), headers=JOSE)
    assert no_key.status_code == 400
    assert set(no_key.get_json()["errors"]) == {"Idempotency-Key"}
    as_json = client.post(
        "/webhooks/tiers",
        json={"notice": tiers.notice()},
        headers={"Idempotency-Key": "k"},
    )
    assert as_json.status_code == 415
    too_big = client.post(
        "/webhooks/tiers", data="x" * 20_000, headers={**JOSE, "Idempotency-Key": "k"}
    )
    assert too_big.status_code == 413
    assert too_big.mimetype == "application/problem+json"
