"""Checking what Tiers signs, the way another organisation's service would: with PyJWT and
Tiers' published keys only (this package imports nothing of Tiers).

Access tokens (RFC 9068, `typ: at+jwt`) and withdrawal notices (`typ: tiers-notice+jwt`) are
ES256 JWS whose key is looked up by `kid` in `{issuer}/.well-known/jwks.json`, fetched and cached
here. The key never comes from the token itself: `jwk`, `jku`, `x5u` and `x5c` headers are
ignored, and `alg` is pinned before anything else is read (RFC 8725 §3.1, §3.11).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

ALGORITHM = "ES256"
ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 (a media type)
NOTICE_TYP = "tiers-notice+jwt"
# RFC 9068 §2.2: what every JWT access token carries.
ACCESS_TOKEN_CLAIMS = ("iss", "aud", "exp", "iat", "sub", "client_id", "jti")
NOTICE_CLAIMS = ("iss", "iat", "jti", "type")
LEEWAY = 5  # seconds of clock skew; Tiers and the holders run on the same host in the demo
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k", "oth"})

log = logging.getLogger(__name__)


class TokenError(Exception):
    """A token or notice that must not be trusted; `str(error)` is safe to send back."""


class KeysUnavailableError(Exception):
    """Tiers' JWKS could not be read, so nothing can be checked now (answer 503, not 401)."""


class TiersKeys:
    """Tiers' public signing keys by `kid`, fetched from its JWKS and cached.

    Refreshed when older than `ttl`, and on an unknown `kid` (key rotation) at most once per
    `refresh_interval`, so a stream of forged `kid`s cannot turn into a stream of fetches.
    """

    def __init__(
        self,
        issuer: str,
        *,
        ttl: float = 300.0,
        refresh_interval: float = 10.0,
        timeout: float = 5.0,
        http: requests.Session | None = None,
    ) -> None:
        self.url = f"{issuer.rstrip('/')}/.well-known/jwks.json"
        self.ttl = ttl
        self.refresh_interval = refresh_interval
        self.timeout = timeout
        self._http = http or requests.Session()
        self._keys: dict[str, Mapping[str, Any]] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = threading.Lock()
        self.fetches = 0  # for tests and the curious

    def get(self, kid: str) -> Mapping[str, Any] | None:
        """The published key `kid`, or None; KeysUnavailableError if none was ever read."""
        with self._lock:
            now = time.monotonic()
            fresh = self._fetched_at is not None and now - self._fetched_at < self.ttl
            if not (fresh and kid in self._keys) and self._may_fetch(now):
                self._attempted_at = now
                try:
                    self._refresh(now)
                except KeysUnavailableError:
                    if self._fetched_at is None:
                        raise
                    log.warning("Tiers' JWKS is unreachable; using the keys read before")
            if self._fetched_at is None:
                raise KeysUnavailableError(f"{self.url} has not been read yet")
            return self._keys.get(kid)

    def _may_fetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.refresh_interval

    def _refresh(self, now: float) -> None:
        self.fetches += 1
        try:
            response = self._http.get(self.url, timeout=self.timeout, allow_redirects=False)
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise KeysUnavailableError(f"cannot read {self.url}: {type(exc).__name__}") from None
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list):
            raise KeysUnavailableError(f"{self.url} is not a JWK Set")
        self._keys = {
            key["kid"]: key
            for key in keys
            if isinstance(key, dict) and isinstance(key.get("kid"), str) and key["kid"]
        }
        self._fetched_at = now

    def close(self) -> None:
        self._http.close()


def _media_type(value: str) -> str:
    """RFC 7515 §4.1.9: `typ` compares case-insensitively and may omit `application/`."""
    return value.lower().removeprefix("application/")


def _public_key(jwk: Mapping[str, Any]) -> EllipticCurvePublicKey:
    """The P-256 verification key of a JWK from Tiers' set, refused unless it is exactly that."""
    if _PRIVATE_MEMBERS & set(jwk):
        raise TokenError("the published key has private members")
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise TokenError("the published key is not a P-256 key")
    if jwk.get("alg", ALGORITHM) != ALGORITHM or jwk.get("use", "sig") != "sig":
        raise TokenError("the published key is not an ES256 signing key")
    try:
        key = jwt.PyJWK(dict(jwk), algorithm=ALGORITHM).key
    except (jwt.PyJWTError, ValueError, TypeError):
        raise TokenError("the published key is malformed") from None
    if not isinstance(key, EllipticCurvePublicKey):
        raise TokenError("the published key is not a public key")
    return key


def verify(
    token: str,
    keys: TiersKeys,
    *,
    typ: str,
    issuer: str,
    audience: str | None,
    required: Sequence[str],
    leeway: float = LEEWAY,
) -> dict[str, Any]:
    """The claims of a JWS signed by Tiers; TokenError if anything is off, KeysUnavailableError
    if Tiers' keys cannot be read."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenError("not a compact JWS") from None
    if header.get("alg") != ALGORITHM:  # `none`, HS256 with the public key as secret, ...
        raise TokenError(f"alg must be {ALGORITHM}")
    actual_typ = header.get("typ")
    if not isinstance(actual_typ, str) or _media_type(actual_typ) != _media_type(typ):
        raise TokenError(f"typ must be {typ}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenError("no kid in the header")
    jwk = keys.get(kid)  # only Tiers' JWKS: never the header's jwk, jku, x5u or x5c
    if jwk is None:
        raise TokenError("signed with a key Tiers does not publish")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            _public_key(jwk),
            algorithms=[ALGORITHM],
            issuer=issuer,
            audience=audience,
            leeway=leeway,
            options={"require": list(required), "verify_aud": audience is not None},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("expired") from None
    except jwt.ImmatureSignatureError:
        raise TokenError("not valid yet") from None
    except jwt.InvalidAudienceError:
        raise TokenError("issued for another audience") from None
    except jwt.InvalidIssuerError:
        raise TokenError("issued by someone else") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"no {exc.claim} claim") from None
    except jwt.InvalidSignatureError:
        raise TokenError("the signature does not verify") from None
    except jwt.PyJWTError:
        raise TokenError("invalid claims") from None
    return claims


def verify_access_token(
    token: str, keys: TiersKeys, *, issuer: str, audience: str, leeway: float = LEEWAY
) -> dict[str, Any]:
    """An RFC 9068 access token from Tiers for this holder's resource URI."""
    claims = verify(
        token,
        keys,
        typ=ACCESS_TOKEN_TYP,
        issuer=issuer,
        audience=audience,
        required=ACCESS_TOKEN_CLAIMS,
        leeway=leeway,
    )
    if "cnf" in claims:
        # RFC 9449 §7.1: a sender-constrained token is never accepted as a bearer token.
        raise TokenError("bound to a key (cnf): not usable as a bearer token")
    return claims


def verify_notice(token: str, keys: TiersKeys, *, issuer: str) -> dict[str, Any]:
    """A signed notice from Tiers (docs/holder-protocol.md, "Notices"). Its age is not checked:
    a withdrawal delivered late after retries must still be acted on."""
    return verify(token, keys, typ=NOTICE_TYP, issuer=issuer, audience=None, required=NOTICE_CLAIMS)
