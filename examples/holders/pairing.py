"""Linking a citizen to a holder account, the holder's half (docs/holder-protocol.md, "Linking a
citizen"): the citizen types Tiers' one-time code into the holder's service, which sends it with
its own subject identifier, authenticated by a client_credentials token (scope datasets:write).

Endpoints come from Tiers' RFC 8414 metadata, whose `issuer` must be the URL we were given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

SCOPE = "datasets:write"
TIMEOUT = 10  # seconds per call to Tiers


class PairingError(Exception):
    """Tiers refused or could not be reached; `str(error)` says which and why."""


@dataclass(frozen=True)
class Pairing:
    code: str
    subject: str
    dataset: str

    def body(self) -> dict[str, str]:
        return {"code": self.code, "subject": self.subject, "dataset": self.dataset}


def _reason(response: requests.Response) -> str:
    """An OAuth error (RFC 6749 §5.2) or a problem's detail (RFC 9457), else the status."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if not isinstance(body, dict):
        return f"HTTP {response.status_code}"
    if "error" in body:
        return f"{body['error']}: {body.get('error_description') or ''}".rstrip(": ")
    detail = body.get("detail") or body.get("title") or ""
    errors = body.get("errors")
    if isinstance(errors, dict) and errors:
        detail += " " + "; ".join(f"{name}: {messages}" for name, messages in errors.items())
    return f"HTTP {response.status_code} {detail}".strip()


class TiersClient:
    """The holder's client of Tiers: client_secret_basic, Bearer tokens, nothing kept on disk."""

    def __init__(
        self,
        tiers_url: str,
        client_id: str,
        client_secret: str,
        *,
        http: requests.Session | None = None,
    ) -> None:
        self.tiers_url = tiers_url.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.http = http or requests.Session()

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            return self.http.request(method, url, timeout=TIMEOUT, allow_redirects=False, **kwargs)
        except requests.RequestException as exc:
            raise PairingError(f"Tiers does not answer at {url} ({type(exc).__name__}).") from None

    def token_endpoint(self) -> str:
        url = f"{self.tiers_url}/.well-known/oauth-authorization-server"
        response = self._send("GET", url)
        if response.status_code != 200:
            raise PairingError(f"Tiers' metadata: {_reason(response)}")
        try:
            metadata = response.json()
        except ValueError:
            raise PairingError("Tiers' metadata is not JSON.") from None
        if not isinstance(metadata, dict) or metadata.get("issuer") != self.tiers_url:
            raise PairingError(
                f"Tiers' metadata names another issuer than {self.tiers_url} (RFC 8414 §3.3)."
            )
        endpoint = metadata.get("token_endpoint")
        if not isinstance(endpoint, str):
            raise PairingError("Tiers' metadata has no token_endpoint.")
        return endpoint

    def access_token(self) -> str:
        """A client_credentials token for Tiers' API (RFC 6749 §4.4, client_secret_basic with
        the id and secret form-encoded first, §2.3.1)."""
        response = self._send(
            "POST",
            self.token_endpoint(),
            data={"grant_type": "client_credentials", "scope": SCOPE},
            auth=(quote(self.client_id, safe=""), quote(self.client_secret, safe="")),
        )
        if response.status_code != 200:
            raise PairingError(f"Tiers refused a token: {_reason(response)}")
        try:
            body = response.json()
        except ValueError:
            raise PairingError("Tiers' token response is not JSON.") from None
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise PairingError("Tiers' token response has no access_token.")
        if str(body.get("token_type", "")).lower() != "bearer":
            raise PairingError(f"Tiers issued a {body.get('token_type')} token, not Bearer.")
        return str(body["access_token"])

    def pair(self, pairing: Pairing) -> dict[str, Any]:
        """Bind the code to our subject id at Tiers; the 201 body, or PairingError."""
        token = self.access_token()
        response = self._send(
            "POST",
            f"{self.tiers_url}/api/v1/pairings",
            json=pairing.body(),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )
        if response.status_code != 201:
            raise PairingError(f"Tiers refused the pairing: {_reason(response)}")
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {"result": body}

    def close(self) -> None:
        self.http.close()
