"""The demo reuser's webhook: Tiers' signed withdrawal notices only, each recorded once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask, jsonify
from flask.testing import FlaskClient

from common.keyring import Keyring, sign
from examples.reuser.app import create_app
from tests.gateway.conftest import serve


@pytest.fixture
def tiers(tmp_path: Path) -> Iterator[tuple[str, Keyring]]:
    keyring = Keyring(tmp_path / "keys")
    keyring.rotate()
    app = Flask("fake_tiers_jwks")
    app.add_url_rule(
        "/.well-known/jwks.json",
        "jwks",
        lambda: jsonify(keyring.jwks(publish_for=timedelta(days=9))),
    )
    with serve(app) as url:
        yield url, keyring


@pytest.fixture
def reuser(tiers: tuple[str, Keyring], tmp_path: Path) -> FlaskClient:
    url, _ = tiers
    return create_app(url, tmp_path / "unused.json").test_client()


def _notice(issuer: str, keyring: Keyring, **overrides: object) -> str:
    claims = {
        "iss": issuer,
        "iat": int(time.time()),
        "jti": str(uuid.uuid4()),
        "type": "consent.withdrawn",
        "subject": "pseudonym",
        **overrides,
    }
    return sign(claims, keyring.active(), typ="tiers-notice+jwt")


def test_a_signed_notice_is_recorded_once(reuser: FlaskClient, tiers: tuple[str, Keyring]) -> None:
    url, keyring = tiers
    body = _notice(url, keyring)
    headers = {"Content-Type": "application/jose", "Idempotency-Key": "k1"}
    assert reuser.post("/webhooks/tiers", data=body, headers=headers).status_code == 201
    again = reuser.post("/webhooks/tiers", data=body, headers=headers)
    assert again.status_code == 200
    assert again.get_json()["duplicate"] is True
    (entry,) = reuser.get("/webhooks/received").get_json()["notices"]
    assert entry["deliveries"] == 2
    assert entry["notice"]["subject"] == "pseudonym"


def test_anything_else_is_refused(
    reuser: FlaskClient, tiers: tuple[str, Keyring], tmp_path: Path
) -> None:
    url, keyring = tiers
    headers = {"Content-Type": "application/jose", "Idempotency-Key": "k2"}
    forged = Keyring(tmp_path / "forged")
    forged.rotate()
    cases = [
        (_notice(url, forged), headers),  # not Tiers' key
        (_notice("https://elsewhere.example", keyring), headers),  # another issuer
        (_notice(url, keyring), {"Content-Type": "application/jose"}),  # no idempotency key
        (_notice(url, keyring), {"Content-Type": "application/json", "Idempotency-Key": "k3"}),
        ("not a jws", headers),
    ]
    for body, sent in cases:
        assert reuser.post("/webhooks/tiers", data=body, headers=sent).status_code == 400
    assert reuser.get("/webhooks/received").get_json()["notices"] == []
