"""A fake Tiers for the demo holders, served for real on a free port: its JWKS (from Tiers' own
keyring code, so the holders verify what Tiers really publishes), RFC 8414 metadata, a token
endpoint and the pairing endpoint. Holders are built per test; `serve` puts any app on a port.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from flask import Flask, Response, jsonify, request
from flask.testing import FlaskClient

from common.keyring import Keyring, SigningKey, sign
from examples.holders import build
from examples.holders.app import Fault, create_app
from examples.holders.tokens import TiersKeys
from tests.live import serve

SEED = "tests"
CLIENT_ID = "holder-electricity"
CLIENT_SECRET = "s3cret/with:odd&chars"
PAIRING_CODE = "K7QF-2MZC"


def resource_uri(name: str) -> str:
    return f"https://{name}.holders.example/api"


class FakeTiers:
    """Tiers as the holders see it. Keys live in a real `common.keyring.Keyring`."""

    def __init__(self, directory: Path) -> None:
        self.keyring = Keyring(directory)
        self.keyring.rotate()
        self.url = ""  # set once served
        self.jwks_requests = 0
        self.pairings: list[dict[str, Any]] = []
        self.issued: set[str] = set()
        self.jwks_available = True
        self.app = self._make_app()

    @property
    def key(self) -> SigningKey:
        return self.keyring.active()

    def _make_app(self) -> Flask:
        app = Flask("fake_tiers")

        @app.get("/.well-known/jwks.json")
        def jwks() -> Response | tuple[str, int]:
            self.jwks_requests += 1
            if not self.jwks_available:
                return "down", 503
            return jsonify(self.keyring.jwks(publish_for=timedelta(days=400)))

        @app.get("/.well-known/oauth-authorization-server")
        def metadata() -> Response:
            return jsonify({"issuer": self.url, "token_endpoint": f"{self.url}/oauth/token"})

        @app.post("/oauth/token")
        def token() -> tuple[Response, int]:
            auth = request.authorization
            if (
                auth is None
                or unquote(auth.username or "") != CLIENT_ID
                or unquote(auth.password or "") != CLIENT_SECRET
            ):
                return jsonify({"error": "invalid_client", "error_description": "bad secret"}), 401
            if request.form.get("grant_type") != "client_credentials":
                return jsonify({"error": "unsupported_grant_type"}), 400
            if request.form.get("scope") != "datasets:write":
                return jsonify({"error": "invalid_scope"}), 400
            issued = self.token(audience=f"{self.url}/api", scope="datasets:write")
            self.issued.add(issued)
            return jsonify({"access_token": issued, "token_type": "Bearer", "expires_in": 300}), 200

        @app.post("/api/v1/pairings")
        def pairings() -> tuple[Response, int]:
            scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
            if scheme != "Bearer" or presented not in self.issued:
                return jsonify({"type": "/problems/unauthorized", "status": 401}), 401
            body = request.get_json(silent=True) or {}
            if body.get("code") != PAIRING_CODE:
                return jsonify(
                    {
                        "type": "/problems/invalid-input",
                        "status": 400,
                        "detail": "The request is not valid.",
                        "errors": {"code": ["Unknown or expired pairing code."]},
                    }
                ), 400
            self.pairings.append(body)
            return jsonify({"status": "paired", "dataset": body.get("dataset")}), 201

        return app

    def claims(self, audience: str | list[str], **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "sub": "gateway",
            "aud": audience,
            "client_id": "tiers-gateway",
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            "scope": "datasets:read",
        }
        claims.update(overrides)
        return {key: value for key, value in claims.items() if value is not None}

    def token(self, audience: str | list[str], *, typ: str = "at+jwt", **overrides: Any) -> str:
        """An access token signed the way Tiers signs (common.keyring.sign)."""
        return sign(self.claims(audience, **overrides), self.key, typ=typ)

    def notice(self, *, typ: str = "tiers-notice+jwt", **overrides: Any) -> str:
        claims: dict[str, Any] = {
            "iss": self.url,
            "iat": int(time.time()),
            "jti": uuid.uuid4().hex,
            "type": "consent.withdrawn",
            "consent": str(uuid.uuid4()),
            "purpose": "energy-coaching",
            "subject": "12345678901234",
        }
        claims.update(overrides)
        return sign(claims, self.key, typ=typ)


@pytest.fixture
def tiers(tmp_path: Path) -> Iterator[FakeTiers]:
    fake = FakeTiers(tmp_path / "keys")
    with serve(fake.app) as url:
        fake.url = url
        yield fake


HolderFactory = Callable[..., Flask]


@pytest.fixture
def make_holder(tiers: FakeTiers) -> Iterator[HolderFactory]:
    """Build a holder app against the fake Tiers (keys re-read on any unknown kid)."""
    made: list[TiersKeys] = []

    def make(
        name: str = "electricity",
        *,
        seed: str = SEED,
        fault: str | None = None,
        refresh_interval: float = 0.0,
    ) -> Flask:
        keys = TiersKeys(tiers.url, refresh_interval=refresh_interval)
        made.append(keys)
        return create_app(
            build(name, seed),
            tiers_url=tiers.url,
            resource_uri=resource_uri(name),
            fault=Fault.parse(fault),
            keys=keys,
        )

    yield make
    for keys in made:
        keys.close()


@pytest.fixture
def bearer(tiers: FakeTiers) -> Callable[[str], dict[str, str]]:
    """Headers with a valid access token for the named holder."""

    def headers(name: str = "electricity") -> dict[str, str]:
        return {"Authorization": f"Bearer {tiers.token(resource_uri(name))}"}

    return headers


def walk(
    client: FlaskClient, path: str, params: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Every record of a query, following next_cursor; and the number of pages."""
    records: list[dict[str, Any]] = []
    pages = 0
    cursor = None
    while True:
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        response = client.get(path, query_string=query, headers=headers or {})
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        records.extend(body["records"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return records, pages


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
