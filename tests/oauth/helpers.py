"""What an OAuth2 client does: PKCE pairs, pushed requests, a citizen's approval, DPoP proofs."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from flask.testing import FlaskClient

from policies.service import DATA_ACCESS
from tests.conftest import REDIRECT_URI, form_csrf

COACHING = "energy-coaching"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def details(purpose: str = COACHING, **extra: Any) -> str:
    return json.dumps([{"type": DATA_ACCESS, "purpose": purpose, "mode": "individual", **extra}])


def par_params(challenge: str, **overrides: Any) -> dict[str, str]:
    params = {
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "scope": "consent:read",
        "state": "st-" + secrets.token_hex(4),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "authorization_details": details(),
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def push(client: FlaskClient, registered: Any, challenge: str, **overrides: Any) -> Any:
    return client.post("/oauth/par", data=par_params(challenge, **overrides), auth=registered.basic)


def approve(browser: FlaskClient, client_id: str, request_uri: str) -> dict[str, list[str]]:
    """The citizen opens the consent screen and clicks "J'accepte"; returns the redirect query."""
    page = browser.get(
        "/oauth/authorize", query_string={"client_id": client_id, "request_uri": request_uri}
    )
    assert page.status_code == 200, page.get_data(as_text=True)
    answer = browser.post(
        "/oauth/authorize",
        data={
            "csrf_token": form_csrf(page.get_data(as_text=True)),
            "client_id": client_id,
            "request_uri": request_uri,
            "decision": "approve",
        },
    )
    assert answer.status_code == 303, answer.get_data(as_text=True)
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT_URI)
    return parse_qs(urlsplit(location).query)


def code_flow(client: FlaskClient, browser: FlaskClient, registered: Any) -> dict[str, Any]:
    """PAR, approval, token exchange: the token response."""
    verifier, challenge = pkce()
    pushed = push(client, registered, challenge)
    assert pushed.status_code == 201, pushed.get_json()
    query = approve(browser, registered.client_id, pushed.get_json()["request_uri"])
    answer = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        auth=registered.basic,
    )
    assert answer.status_code == 200, answer.get_json()
    return dict(answer.get_json())


class DpopKey:
    """A client's DPoP key pair, making proofs (RFC 9449 §4.2)."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        public = jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        self.jwk = {k: public[k] for k in ("kty", "crv", "x", "y")}

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
        iat: int | None = None,
        jti: str | None = None,
        typ: str = "dpop+jwt",
    ) -> str:
        claims: dict[str, Any] = {
            "jti": jti or uuid.uuid4().hex,
            "htm": method,
            "htu": url,
            "iat": iat if iat is not None else int(time.time()),
        }
        if nonce:
            claims["nonce"] = nonce
        if access_token:
            digest = hashlib.sha256(access_token.encode()).digest()
            claims["ath"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        return jwt.encode(
            claims, self.private, algorithm="ES256", headers={"typ": typ, "jwk": self.jwk}
        )
