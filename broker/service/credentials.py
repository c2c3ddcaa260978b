"""Client authentication (client_secret_basic, private_key_jwt) and the replay cache.

RFC 7523 client assertions: `iss` = `sub` = client_id, `aud` = the issuer identifier (a
string, as draft-ietf-oauth-security-topics-update and FAPI 2.0 require; the token
endpoint URL and arrays are refused), a lifetime of at most 5 minutes, and a `jti` that is
accepted once. DPoP proofs use the same replay cache under their key's thumbprint.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker.models import AuthMethod, OAuthClient, Organisation, SeenJti
from common import jose
from common.clock import utcnow
from common.errors import UnauthorizedError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 300
MAX_CLIENT_ID = 64  # oauth_client.client_id is String(64)


def hash_value(value: str) -> str:
    """SHA-256 hex of a random credential: what the database keeps instead of the value."""
    return hashlib.sha256(value.encode()).hexdigest()


def find_client(session: Session, client_id: str) -> OAuthClient | None:
    """A client that may still act: not revoked, its organisation not suspended."""
    if not client_id or len(client_id) > 64:
        return None
    client = session.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id))
    if client is None or client.revoked_at is not None:
        return None
    if client.organisation.suspended_at is not None:
        return None
    return client


@dataclass(frozen=True)
class Caller:
    """An authenticated client, as the introspection and revocation endpoints need it."""

    pk: uuid.UUID
    client_id: str
    resource_uri: str | None  # the organisation's API, when it is a holder's


def caller_of(client: OAuthClient) -> Caller:
    return Caller(client.id, client.client_id, client.organisation.resource_uri)


# Built once: composing a statement costs more CPU than running it (see bench/introspection.py).
# Its columns are labelled so that tokens.py can put them beside a token's in one query.
BASIC_CALLER = (
    select(
        OAuthClient.id.label("caller_pk"),
        OAuthClient.secret_hash.label("caller_secret_hash"),
        Organisation.resource_uri.label("caller_resource_uri"),
    )
    .join(Organisation, OAuthClient.organisation_id == Organisation.id)
    .where(
        OAuthClient.client_id == bindparam("client_id"),
        OAuthClient.auth_method == AuthMethod.CLIENT_SECRET_BASIC,
        OAuthClient.revoked_at.is_(None),
        Organisation.suspended_at.is_(None),
    )
)


def plausible_client_id(client_id: str) -> bool:
    """Worth a query: not empty, and no longer than any client_id Tiers issues."""
    return bool(client_id) and len(client_id) <= MAX_CLIENT_ID


def authenticate_basic(session: Session, client_id: str, secret: str) -> Caller | None:
    """client_secret_basic in one query (Core on the session's connection: no ORM layer)."""
    if not plausible_client_id(client_id):
        return basic_caller(None, client_id, secret)
    row = session.connection().execute(BASIC_CALLER, {"client_id": client_id}).one_or_none()
    return basic_caller(row, client_id, secret)


def basic_caller(row: Any, client_id: str, secret: str) -> Caller | None:
    """The caller a row with BASIC_CALLER's columns (or None) stands for if `secret` is its
    client's, else None.

    The secret is hashed and compared whatever the row, so an unknown client_id takes as long
    as a wrong secret."""
    stored = row.caller_secret_hash if row is not None else None
    matches = hmac.compare_digest(stored or hash_value(""), hash_value(secret))
    if row is None or stored is None or not matches:
        return None
    return Caller(row.caller_pk, client_id, row.caller_resource_uri)


def check_secret(client: OAuthClient, secret: str) -> bool:
    if client.auth_method is not AuthMethod.CLIENT_SECRET_BASIC or client.secret_hash is None:
        return False
    return hmac.compare_digest(client.secret_hash, hash_value(secret))


def remember_jti(session: Session, *, issuer: str, jti: str, ttl_seconds: int) -> None:
    """Accept `jti` from `issuer` once within `ttl_seconds` (UnauthorizedError on replay).

    The unique index decides, so two workers racing with the same proof cannot both pass;
    a savepoint keeps the caller's transaction usable after the refusal.
    """
    now = utcnow()
    try:
        with session.begin_nested():
            session.add(
                SeenJti(issuer=issuer, jti=jti, expires_at=now + timedelta(seconds=ttl_seconds))
            )
    except IntegrityError:
        raise UnauthorizedError("This proof was already used (replay).") from None


def purge_seen(session: Session) -> int:
    """Drop replay-cache rows whose proofs could no longer be accepted anyway."""
    result = session.execute(delete(SeenJti).where(SeenJti.expires_at < utcnow()))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def authenticate_assertion(
    session: Session, *, assertion: str, client_id: str | None, issuer: str
) -> OAuthClient:
    """RFC 7523 §2.2 `private_key_jwt`: verify the assertion with the client's registered keys."""
    try:
        claims_peek = jose.unverified_claims(assertion)
    except jose.JoseError as exc:
        raise UnauthorizedError(f"The client assertion is not valid: {exc}") from None
    sub = claims_peek.get("sub")
    if not isinstance(sub, str) or (client_id is not None and client_id != sub):
        raise UnauthorizedError("The client assertion's `sub` must be the client_id.")
    client = find_client(session, sub)
    if client is None or client.auth_method is not AuthMethod.PRIVATE_KEY_JWT:
        raise UnauthorizedError("Unknown client, or it does not use private_key_jwt.")
    keys = {k.get("kid"): k for k in (client.jwks or {}).get("keys", []) if isinstance(k, dict)}
    try:
        claims = jose.verify(
            assertion,
            keys=keys.get,
            algorithms=jose.CLIENT_ALGORITHMS,
            typ=None,
            issuer=client.client_id,
            audience=issuer,
            required=("iss", "sub", "aud", "exp", "jti"),
            max_age=MAX_ASSERTION_LIFETIME,
        )
    except jose.JoseError as exc:
        raise UnauthorizedError(f"The client assertion is not valid: {exc}") from None
    if claims["aud"] != issuer:  # a string, the issuer itself: no arrays, no endpoint URLs
        raise UnauthorizedError("The client assertion's `aud` must be the issuer identifier.")
    if _lifetime(claims) > MAX_ASSERTION_LIFETIME:
        raise UnauthorizedError("The client assertion lives too long (5 minutes at most).")
    remember_jti(session, issuer=client.client_id, jti=str(claims["jti"])[:128], ttl_seconds=600)
    return client


def _lifetime(claims: dict[str, Any]) -> int:
    exp = int(claims["exp"])
    start = int(claims.get("iat", utcnow().timestamp()))
    return exp - start
