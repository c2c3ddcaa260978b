"""Tokens: issue (RFC 9068 JWT access tokens, rotating refresh tokens), redeem codes,
introspect (RFC 7662), revoke (RFC 7009), and check them where Tiers is the resource.

Every answer about a token comes from the *current* state: its grant not revoked, its
client and organisation still active, and every consent it relies on still in force. So a
withdrawal stops every token that relies on the consent from its commit on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, true, update
from sqlalchemy.orm import Session

from audit import service as audit
from broker.models import (
    AuthorizationCode,
    Grant,
    GrantConsent,
    OAuthClient,
    Organisation,
    Role,
    Token,
    TokenKind,
)
from broker.service import scopes
from broker.service.credentials import (
    BASIC_CALLER,
    Caller,
    basic_caller,
    hash_value,
    plausible_client_id,
)
from common import jose
from common.clock import as_utc, utcnow
from common.keyring import Keyring, sign
from consent import service as consents
from consent.models import ConsentStatus

ACCESS_TTL = timedelta(minutes=5)
REFRESH_TTL = timedelta(days=30)  # absolute: rotation never extends the grant's life


class GrantError(Exception):
    """An RFC 6749 §5.2 token error (`error` code and a description for the client)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True)
class Issuer:
    """Who signs and for which audience: the running server's identity."""

    issuer: str
    api_audience: str
    keyring: Keyring


def _actor(client: OAuthClient | Caller) -> str:
    return f"client:{client.client_id}"


def issue(
    session: Session, grant: Grant, issuer: Issuer, *, refresh: bool, grant_type: str
) -> dict[str, Any]:
    """An access token (and a refresh token when the grant allows) for `grant`."""
    now = utcnow()
    jti = secrets.token_urlsafe(16)
    claims: dict[str, Any] = {
        "iss": issuer.issuer,
        "sub": str(grant.subject_id) if grant.subject_id else grant.client.client_id,
        "aud": grant.audience,
        "client_id": grant.client.client_id,
        "iat": int(now.timestamp()),
        "exp": int((now + ACCESS_TTL).timestamp()),
        "jti": jti,
        "scope": grant.scope,
    }
    if grant.authorization_details:
        claims["authorization_details"] = grant.authorization_details
        claims["consent_ids"] = grant.consent_ids
    if grant.dpop_jkt:
        claims["cnf"] = {"jkt": grant.dpop_jkt}
    access_token = sign(claims, issuer.keyring.active(), typ="at+jwt")
    session.add(
        Token(
            grant_id=grant.id,
            kind=TokenKind.ACCESS,
            token_hash=hash_value(access_token),
            jti=jti,
            expires_at=now + ACCESS_TTL,
            used_at=None,
            revoked_at=None,
        )
    )
    response: dict[str, Any] = {
        "access_token": access_token,
        "token_type": "DPoP" if grant.dpop_jkt else "Bearer",
        "expires_in": int(ACCESS_TTL.total_seconds()),
        "scope": grant.scope,
    }
    if grant.authorization_details:
        response["authorization_details"] = grant.authorization_details
    if refresh:
        refresh_token = secrets.token_urlsafe(32)
        session.add(
            Token(
                grant_id=grant.id,
                kind=TokenKind.REFRESH,
                token_hash=hash_value(refresh_token),
                jti=None,
                expires_at=as_utc(grant.created_at or now) + REFRESH_TTL,
                used_at=None,
                revoked_at=None,
            )
        )
        response["refresh_token"] = refresh_token
    audit.append(
        session,
        event="oauth:token:issue",
        actor=_actor(grant.client),
        subject_id=grant.subject_id,
        decision="permit",
        detail={
            "grant_type": grant_type,
            "grant": str(grant.id),
            "jti": jti,
            "dpop": bool(grant.dpop_jkt),
        },
    )
    return response


def client_credentials(
    session: Session,
    client: OAuthClient,
    issuer: Issuer,
    *,
    scope: str | None,
    resource: str | None,
    dpop_jkt: str | None,
) -> dict[str, Any]:
    """RFC 6749 §4.4: the client acting for its own organisation (never for a citizen)."""
    allowed = scopes.parse(client.scope) & scopes.allowed_for(client.organisation.role)
    allowed -= scopes.CITIZEN_SCOPES
    requested = scopes.parse(scope) if scope else allowed
    if not requested or not requested <= allowed:
        raise GrantError("invalid_scope", "The client may not hold this scope.")
    _require_dpop_if_bound(client, dpop_jkt)
    grant = Grant(
        id=uuid.uuid4(),
        client_pk=client.id,
        client=client,
        code_id=None,
        subject_id=None,
        scope=" ".join(sorted(requested)),
        authorization_details=[],
        consent_ids=[],
        audience=_audience(session, issuer, resource),
        dpop_jkt=dpop_jkt,
        revoked_at=None,
        revoked_reason=None,
        created_at=utcnow(),
    )
    session.add(grant)
    return issue(session, grant, issuer, refresh=False, grant_type="client_credentials")


def _require_dpop_if_bound(client: OAuthClient, dpop_jkt: str | None) -> None:
    if client.dpop_bound and dpop_jkt is None:
        raise GrantError("invalid_dpop_proof", "This client must send a DPoP proof.")


def _audience(session: Session, issuer: Issuer, resource: str | None) -> str:
    if resource is None or resource == issuer.api_audience:
        return issuer.api_audience
    holder = session.scalar(
        select(Organisation).where(
            Organisation.resource_uri == resource, Organisation.role == Role.HOLDER
        )
    )
    if holder is None:
        raise GrantError("invalid_target", "resource is not an API this territory knows.")
    return resource


def pkce_matches(verifier: str, challenge: str) -> bool:
    if not 43 <= len(verifier) <= 128:
        return False
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return hmac.compare_digest(computed, challenge)


def redeem_code(
    session: Session,
    client: OAuthClient,
    issuer: Issuer,
    *,
    code: str,
    redirect_uri: str | None,
    verifier: str | None,
    dpop_jkt: str | None,
) -> dict[str, Any]:
    """Exchange a code once. The UPDATE … WHERE used_at IS NULL decides races (exactly one
    wins); a second use is an attack, so every token issued from the code is revoked."""
    if not verifier:
        raise GrantError("invalid_request", "code_verifier is required (PKCE).")
    now = utcnow()
    code_hash = hash_value(code)
    claimed = session.execute(
        update(AuthorizationCode)
        .where(
            AuthorizationCode.code_hash == code_hash,
            AuthorizationCode.client_pk == client.id,
            AuthorizationCode.used_at.is_(None),
        )
        .values(used_at=now)
    )
    row = session.scalar(select(AuthorizationCode).where(AuthorizationCode.code_hash == code_hash))
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        if row is not None and row.client_pk == client.id and row.used_at is not None:
            revoked = revoke_grants_of_code(session, row.id)
            audit.append(
                session,
                event="oauth:code:replay",
                actor=_actor(client),
                subject_id=row.subject_id,
                decision="deny",
                reason="code_replay",
                detail={"revoked_grants": revoked},
            )
        raise GrantError("invalid_grant", "The code is unknown, used, or another client's.")
    assert row is not None  # noqa: S101 (the UPDATE matched it)
    if as_utc(row.expires_at) <= now:
        raise GrantError("invalid_grant", "The code has expired.")
    if redirect_uri != row.redirect_uri:
        raise GrantError("invalid_grant", "redirect_uri differs from the authorization request.")
    if not pkce_matches(verifier, row.code_challenge):
        raise GrantError("invalid_grant", "code_verifier does not match the code_challenge.")
    if row.dpop_jkt is not None and dpop_jkt != row.dpop_jkt:
        raise GrantError("invalid_dpop_proof", "The code is bound to another DPoP key.")
    _require_dpop_if_bound(client, dpop_jkt)
    _require_consents(session, row.consent_ids)
    grant = Grant(
        id=uuid.uuid4(),
        client_pk=client.id,
        client=client,
        code_id=row.id,
        subject_id=row.subject_id,
        scope=row.scope,
        authorization_details=row.authorization_details,
        consent_ids=row.consent_ids,
        audience=_audience(session, issuer, row.resource),
        dpop_jkt=dpop_jkt,
        revoked_at=None,
        revoked_reason=None,
        created_at=now,
    )
    grant.consent_links = [GrantConsent(consent_id=uuid.UUID(c)) for c in row.consent_ids]
    session.add(grant)
    refresh = "refresh_token" in client.grant_types
    return issue(session, grant, issuer, refresh=refresh, grant_type="authorization_code")


def _require_consents(session: Session, consent_ids: list[str]) -> None:
    found = consents.statuses(session, consent_ids)
    if any(status is not ConsentStatus.GIVEN for status in found.values()):
        raise GrantError("invalid_grant", "A consent behind this grant is no longer in force.")


def revoke_grants_of_code(session: Session, code_id: uuid.UUID) -> int:
    grants = session.scalars(select(Grant).where(Grant.code_id == code_id)).all()
    for grant in grants:
        _revoke_grant(grant, "code_replay")
    return len(grants)


def _revoke_grant(grant: Grant, reason: str) -> None:
    if grant.revoked_at is None:
        grant.revoked_at = utcnow()
        grant.revoked_reason = reason


def refresh(
    session: Session,
    client: OAuthClient,
    issuer: Issuer,
    *,
    refresh_token: str,
    dpop_jkt: str | None,
) -> dict[str, Any]:
    """Rotate: the old refresh token is spent, a new pair is issued in the same grant. A
    spent token coming back means it was stolen: the whole grant (family) is revoked."""
    now = utcnow()
    token_hash = hash_value(refresh_token)
    claimed = session.execute(
        update(Token)
        .where(
            Token.token_hash == token_hash,
            Token.kind == TokenKind.REFRESH,
            Token.used_at.is_(None),
            Token.revoked_at.is_(None),
            # Another client presenting this token must not spend it.
            Token.grant_id.in_(select(Grant.id).where(Grant.client_pk == client.id)),
        )
        .values(used_at=now)
    )
    token = session.scalar(select(Token).where(Token.token_hash == token_hash))
    if token is None or token.kind is not TokenKind.REFRESH or token.grant.client_pk != client.id:
        raise GrantError("invalid_grant", "Unknown refresh token, or another client's.")
    grant = token.grant
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        if token.used_at is not None and grant.revoked_at is None:
            _revoke_grant(grant, "refresh_replay")
            audit.append(
                session,
                event="oauth:refresh:replay",
                actor=_actor(client),
                subject_id=grant.subject_id,
                decision="deny",
                reason="refresh_replay",
                detail={"grant": str(grant.id)},
            )
        raise GrantError("invalid_grant", "This refresh token was already used or revoked.")
    if grant.revoked_at is not None or as_utc(token.expires_at) <= now:
        raise GrantError("invalid_grant", "The grant was revoked or has expired.")
    if grant.dpop_jkt is not None and dpop_jkt != grant.dpop_jkt:
        raise GrantError("invalid_dpop_proof", "The refresh token is bound to another DPoP key.")
    try:
        _require_consents(session, grant.consent_ids)
    except GrantError:
        _revoke_grant(grant, "consent_ended")
        raise
    response = issue(session, grant, issuer, refresh=False, grant_type="refresh_token")
    new_refresh = secrets.token_urlsafe(32)
    session.add(
        Token(
            grant_id=grant.id,
            kind=TokenKind.REFRESH,
            token_hash=hash_value(new_refresh),
            jti=None,
            expires_at=token.expires_at,
            used_at=None,
            revoked_at=None,
        )
    )
    response["refresh_token"] = new_refresh
    return response


@dataclass(frozen=True)
class TokenView:
    """What judging a token needs, read in one query (the hot path of introspection and of
    every API call): the token, its grant, its client and the client's organisation."""

    kind: TokenKind
    jti: str | None
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None
    token_hash: str
    grant_id: uuid.UUID
    client_pk: uuid.UUID
    client_id: str
    subject_id: uuid.UUID | None
    scope: str
    authorization_details: list[dict[str, Any]]
    consent_ids: list[str]
    audience: str
    dpop_jkt: str | None
    grant_revoked_at: datetime | None
    client_revoked_at: datetime | None
    organisation_id: uuid.UUID
    organisation_slug: str
    organisation_role: Role
    organisation_category: str | None
    organisation_suspended_at: datetime | None


_VIEW = (
    select(
        Token.kind.label("kind"),
        Token.jti.label("jti"),
        Token.created_at.label("issued_at"),
        Token.expires_at.label("expires_at"),
        Token.used_at.label("used_at"),
        Token.revoked_at.label("revoked_at"),
        Token.token_hash.label("token_hash"),
        Grant.id.label("grant_id"),
        Grant.client_pk.label("client_pk"),
        OAuthClient.client_id.label("client_id"),
        Grant.subject_id.label("subject_id"),
        Grant.scope.label("scope"),
        Grant.authorization_details.label("authorization_details"),
        Grant.consent_ids.label("consent_ids"),
        Grant.audience.label("audience"),
        Grant.dpop_jkt.label("dpop_jkt"),
        Grant.revoked_at.label("grant_revoked_at"),
        OAuthClient.revoked_at.label("client_revoked_at"),
        Organisation.id.label("organisation_id"),
        Organisation.slug.label("organisation_slug"),
        Organisation.role.label("organisation_role"),
        Organisation.reuser_category.label("organisation_category"),
        Organisation.suspended_at.label("organisation_suspended_at"),
    )
    .join(Grant, Token.grant_id == Grant.id)
    .join(OAuthClient, Grant.client_pk == OAuthClient.id)
    .join(Organisation, OAuthClient.organisation_id == Organisation.id)
)


# Built once: composing a statement costs more CPU than running it (see bench/introspection.py).
_VIEW_BY_HASH = _VIEW.where(Token.token_hash == bindparam("token_hash"))
_VIEW_BY_JTI = _VIEW.where(Token.jti == bindparam("jti"))
# Introspection by a client_secret_basic caller: the caller and the token in one round trip.
# The token side is outer-joined, so an unknown token still returns the caller's row.
_TOKEN = _VIEW_BY_HASH.subquery("token")
_BASIC_CALLER_AND_TOKEN = BASIC_CALLER.add_columns(*_TOKEN.c).outerjoin(_TOKEN, true())
_VIEW_FIELDS = tuple(_TOKEN.c.keys())


def _token_hash(value: str) -> str | None:
    """The hash a token is looked up by; None for a value no token can have."""
    if not value or len(value) > jose.MAX_TOKEN_BYTES:
        return None
    return hash_value(value)


def view_by_hash(session: Session, value: str) -> TokenView | None:
    """The token whose value is `value` (looked up by its hash), or None.

    Core on the session's connection, as for every statement of this hot path: the ORM layer
    would add nothing to a read of plain columns but its CPU."""
    token_hash = _token_hash(value)
    if token_hash is None:
        return None
    row = session.connection().execute(_VIEW_BY_HASH, {"token_hash": token_hash}).one_or_none()
    return TokenView(**row._asdict()) if row is not None else None


def view_by_jti(session: Session, jti: str) -> TokenView | None:
    row = session.connection().execute(_VIEW_BY_JTI, {"jti": jti}).one_or_none()
    return TokenView(**row._asdict()) if row is not None else None


@dataclass(frozen=True)
class TokenState:
    """A token as it stands now; `active` is False with a `reason` otherwise."""

    active: bool
    reason: str
    consents: dict[str, ConsentStatus] | None = None


def state(session: Session, token: TokenView | None, *, now: datetime | None = None) -> TokenState:
    """Whether `token` may be used right now, judged from the current state of everything."""
    if token is None:
        return TokenState(False, "unknown")
    now = now or utcnow()
    if token.revoked_at is not None or token.grant_revoked_at is not None:
        return TokenState(False, "revoked")
    if as_utc(token.expires_at) <= now:
        return TokenState(False, "expired")
    if token.kind is TokenKind.REFRESH and token.used_at is not None:
        return TokenState(False, "rotated")
    if token.client_revoked_at is not None or token.organisation_suspended_at is not None:
        return TokenState(False, "client_revoked")
    found = consents.statuses(session, token.consent_ids)
    if any(status is not ConsentStatus.GIVEN for status in found.values()):
        return TokenState(False, "consent_ended", found)
    return TokenState(True, "active", found)


def introspect(session: Session, caller: Caller, value: str) -> dict[str, Any]:
    """RFC 7662 from the current state. A caller learns about a token only if it is the
    token's client or its audience (the holder whose API the token names); otherwise the
    answer is `{"active": false}`, as for an unknown token."""
    return _answer(session, caller, view_by_hash(session, value))


def introspect_basic(
    session: Session, client_id: str, secret: str, value: str
) -> dict[str, Any] | None:
    """`introspect` for a client_secret_basic caller, its authentication included: None when
    the client fails it. One query reads the caller and the token; the token side is never
    used for a caller that failed."""
    token_hash = _token_hash(value) or ""  # "" matches no token: the caller is still read
    row = None
    if plausible_client_id(client_id):
        row = (
            session.connection()
            .execute(_BASIC_CALLER_AND_TOKEN, {"client_id": client_id, "token_hash": token_hash})
            .one_or_none()
        )
    caller = basic_caller(row, client_id, secret)
    if caller is None or row is None:
        return None
    token = None
    if row.kind is not None:  # never NULL in a token row: NULL means no token matched
        token = TokenView(**{name: getattr(row, name) for name in _VIEW_FIELDS})
    return _answer(session, caller, token)


def _answer(session: Session, caller: Caller, token: TokenView | None) -> dict[str, Any]:
    """The RFC 7662 answer about `token` to `caller`, judged now and audited."""
    judged = state(session, token)
    if token is not None and not (
        caller.pk == token.client_pk
        or (caller.resource_uri is not None and caller.resource_uri == token.audience)
    ):
        token, judged = None, TokenState(False, "not_audience")
    audit.append(
        session,
        event="oauth:token:introspect",
        actor=f"client:{caller.client_id}",
        subject_id=token.subject_id if token else None,
        decision="active" if judged.active else "inactive",
        reason=judged.reason,
    )
    if not judged.active or token is None:
        return {"active": False}
    body: dict[str, Any] = {
        "active": True,
        "token_type": "DPoP" if token.dpop_jkt else "Bearer",
        "client_id": token.client_id,
        "scope": token.scope,
        "sub": str(token.subject_id) if token.subject_id else token.client_id,
        "aud": token.audience,
        "exp": int(as_utc(token.expires_at).timestamp()),
        "iat": int(as_utc(token.issued_at).timestamp()),
    }
    if token.jti:
        body["jti"] = token.jti
    if token.dpop_jkt:
        body["cnf"] = {"jkt": token.dpop_jkt}
    if token.authorization_details:
        body["authorization_details"] = token.authorization_details
        body["consents"] = [
            {"id": cid, "status": status.value} for cid, status in (judged.consents or {}).items()
        ]
    return body


def find(session: Session, value: str) -> Token | None:
    if not value or len(value) > jose.MAX_TOKEN_BYTES:
        return None
    return session.scalar(select(Token).where(Token.token_hash == hash_value(value)))


def revoke(session: Session, caller: Caller, value: str) -> None:
    """RFC 7009: revoking a refresh token revokes its grant; an access token, itself.
    Another client's token, or an unknown one, is left alone and answered the same (200)."""
    token = find(session, value)
    if token is None or token.grant.client_pk != caller.pk:
        audit.append(
            session,
            event="oauth:token:revoke",
            actor=_actor(caller),
            decision="ignore",
            reason="unknown_or_foreign",
        )
        return
    if token.kind is TokenKind.REFRESH:
        _revoke_grant(token.grant, "revoked_by_client")
    elif token.revoked_at is None:
        token.revoked_at = utcnow()
    audit.append(
        session,
        event="oauth:token:revoke",
        actor=_actor(caller),
        subject_id=token.grant.subject_id,
        decision="revoked",
        detail={"kind": token.kind.value, "grant": str(token.grant_id)},
    )


def revoke_for_consent(session: Session, consent_id: str) -> int:
    """A consent ended: revoke every grant that relies on it (refresh tokens included).
    Introspection already answers inactive from the commit of the withdrawal; this makes
    it permanent. Idempotent (outbox delivery may repeat)."""
    hit = session.scalars(
        select(Grant)
        .join(GrantConsent, GrantConsent.grant_id == Grant.id)
        .where(GrantConsent.consent_id == uuid.UUID(consent_id), Grant.revoked_at.is_(None))
    ).all()
    return _revoke_all(session, hit, "consent_ended", detail={"consent": consent_id})


def revoke_for_subject(session: Session, subject_id: str) -> int:
    """A citizen closed their account: revoke every grant that acts for them, those that
    rest on no consent (a `consent:read` app, say) included. Idempotent."""
    subject = uuid.UUID(subject_id)
    hit = session.scalars(
        select(Grant).where(Grant.subject_id == subject, Grant.revoked_at.is_(None))
    ).all()
    return _revoke_all(session, hit, "account_closed", subject_id=subject)


def _revoke_all(
    session: Session,
    grants: Sequence[Grant],
    reason: str,
    *,
    subject_id: uuid.UUID | None = None,
    detail: dict[str, str] | None = None,
) -> int:
    """Revoke these grants and every token they issued, in one audit entry; how many."""
    for grant in grants:
        _revoke_grant(grant, reason)
        session.execute(
            update(Token)
            .where(Token.grant_id == grant.id, Token.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    if grants:
        audit.append(
            session,
            event="oauth:grant:revoke",
            actor="system",
            subject_id=subject_id,
            reason=reason,
            detail={**(detail or {}), "grants": len(grants)},
        )
    return len(grants)
