"""OAuth2 clients of organisations, registered by the charter committee or by themselves
under RFC 7591 with an initial access token.

Secrets and initial access tokens leave here once, in clear, and are stored only as SHA-256
hashes (credentials.hash_value). Every change appends an audit entry in the caller's
transaction; nothing commits here.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from audit import service as audit
from broker.models import AuthMethod, Grant, InitialAccessToken, OAuthClient, Role
from broker.service import credentials, scopes
from broker.service.organisations import check_name, get_organisation, url_problem
from common.clock import utcnow
from common.errors import (
    ConflictError,
    InvalidInputError,
    InvalidTokenError,
    NotFoundError,
)

MAX_REDIRECT_URIS = 10
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
REFUSED_GRANTS = {
    "implicit": "The implicit grant is not supported (RFC 9700 §2.1.2): "
    "use authorization_code with PKCE.",
    "password": "The resource owner password grant is not supported (RFC 9700 §2.4): "
    "use authorization_code with PKCE.",
}
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MAX_JWKS_KEYS = 10
DEFAULT_IAT_TTL = timedelta(hours=24)
MAX_IAT_TTL = timedelta(days=30)
REGISTERED_BY = ("committee", "dcr")


# --- clients ----------------------------------------------------------------------------


def _coerce_method(method: AuthMethod | str, errors: dict[str, list[str]]) -> AuthMethod | None:
    try:
        return AuthMethod(method)
    except ValueError:
        errors["auth_method"] = [f"Must be one of: {', '.join(m.value for m in AuthMethod)}."]
        return None


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _check_grant_types(grant_types: object, errors: dict[str, list[str]]) -> list[str]:
    if not isinstance(grant_types, list | tuple) or not all(
        isinstance(g, str) for g in grant_types
    ):
        errors["grant_types"] = ["A list of grant types."]
        return []
    grants = _unique(grant_types)
    messages = [REFUSED_GRANTS[g] for g in grants if g in REFUSED_GRANTS]
    unknown = [g for g in grants if g not in GRANT_TYPES and g not in REFUSED_GRANTS]
    if unknown:
        messages.append(
            f"Unsupported: {', '.join(unknown)}; must be among: {', '.join(GRANT_TYPES)}."
        )
    if not grants:
        messages.append("At least one grant type.")
    elif "refresh_token" in grants and "authorization_code" not in grants:
        messages.append("refresh_token comes only with authorization_code.")
    if messages:
        errors["grant_types"] = messages
    return grants


def _check_redirect_uris(
    uris: object, grants: Sequence[str], errors: dict[str, list[str]]
) -> list[str]:
    if not isinstance(uris, list | tuple):
        errors["redirect_uris"] = ["A list of URLs."]
        return []
    clean = _unique(u for u in uris if isinstance(u, str))
    messages = [p for p in (url_problem(u, what="redirect URI") for u in uris) if p]
    if len(clean) > MAX_REDIRECT_URIS:
        messages.append(f"At most {MAX_REDIRECT_URIS} redirect URIs.")
    if "authorization_code" in grants and not uris:
        messages.append("The authorization_code grant needs at least one redirect URI.")
    if uris and "authorization_code" not in grants and "grant_types" not in errors:
        messages.append("Redirect URIs are used only by the authorization_code grant.")
    if messages:
        errors["redirect_uris"] = messages
    return clean


def _jwk_problem(key: object, index: int) -> str | None:
    """Why one JWK is not a public signing key we accept, or None."""
    where = f"Key {index + 1}"
    if not isinstance(key, Mapping):
        return f"{where}: a JSON object."
    private = sorted(PRIVATE_JWK_MEMBERS & set(key))
    if private:
        return f"{where}: contains private members ({', '.join(private)}); send public keys only."
    if key.get("use") not in (None, "sig"):
        return f'{where}: "use" must be "sig".'
    try:
        parsed = jwt.PyJWK(dict(key)).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return f"{where}: not a valid JWK."
    if isinstance(parsed, ec.EllipticCurvePublicKey) and isinstance(parsed.curve, ec.SECP256R1):
        return None
    if isinstance(parsed, rsa.RSAPublicKey):
        if 2048 <= parsed.key_size <= 8192:  # bigger keys only cost the token endpoint time
            return None
        return f"{where}: RSA keys need from 2048 to 8192 bits."
    if isinstance(parsed, ed25519.Ed25519PublicKey):
        return None
    return f"{where}: must be EC P-256, RSA (2048 bits or more) or OKP Ed25519."


def _check_jwks(
    jwks: object, method: AuthMethod | None, errors: dict[str, list[str]]
) -> dict[str, Any] | None:
    if method is not AuthMethod.PRIVATE_KEY_JWT:
        if jwks is not None:
            errors["jwks"] = ["Keys are used only with private_key_jwt."]
        return None
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(keys, list) or not keys:
        errors["jwks"] = [
            'private_key_jwt (RFC 7523) needs a JWK Set {"keys": [...]} with at least one '
            "public key."
        ]
        return None
    messages = [p for p in (_jwk_problem(k, i) for i, k in enumerate(keys)) if p]
    if len(keys) > MAX_JWKS_KEYS:
        messages.append(f"At most {MAX_JWKS_KEYS} keys.")
    if messages:
        errors["jwks"] = messages
        return None
    return {"keys": [dict(k) for k in keys]}


def _check_scope(
    scope: object, role: Role, grants: Sequence[str], errors: dict[str, list[str]]
) -> str:
    if not isinstance(scope, str):
        errors["scope"] = ["A space-separated list of scopes."]
        return ""
    requested = scopes.parse(scope)
    allowed = scopes.allowed_for(role)
    messages: list[str] = []
    unknown = scopes.unknown(requested)
    if not requested:
        messages.append(f"At least one scope among: {', '.join(sorted(allowed))}.")
    elif unknown:
        messages.append(f"Unknown scope: {', '.join(unknown)}.")
    elif not requested <= allowed:
        messages.append(
            f"A {role.value} organisation's clients may hold only: {', '.join(sorted(allowed))}."
        )
    if requested & scopes.CITIZEN_SCOPES and "authorization_code" not in grants:
        messages.append(
            "consent:* act for one citizen: they need the authorization_code grant "
            "(the citizen's own authorization)."
        )
    if messages:
        errors["scope"] = messages
    return " ".join(sorted(requested))


def create_client(
    session: Session,
    *,
    organisation_id: uuid.UUID,
    name: str,
    auth_method: AuthMethod | str,
    redirect_uris: Sequence[str] = (),
    grant_types: Sequence[str],
    scope: str,
    jwks: Mapping[str, Any] | None = None,
    dpop_bound: bool = False,
    registered_by: str = "committee",
    actor: str,
) -> tuple[OAuthClient, str | None]:
    """Register a client of an organisation; returns it and, for client_secret_basic, its
    secret in clear (the only time it exists outside the caller: only its hash is stored).

    InvalidInputError names every field that breaks a rule: scopes beyond the role, refused
    grants, inexact or insecure redirect URIs, private_key_jwt without public keys, a public
    client outside the code flow. NotFoundError for an unknown organisation, ConflictError
    for a suspended one.
    """
    organisation = get_organisation(session, organisation_id)
    if organisation.suspended_at is not None:
        raise ConflictError("This organisation is suspended: it cannot get new clients.")
    if registered_by not in REGISTERED_BY:
        raise ValueError(f"registered_by must be one of {REGISTERED_BY}")
    errors: dict[str, list[str]] = {}
    clean_name = check_name(name, errors)
    method = _coerce_method(auth_method, errors)
    grants = _check_grant_types(grant_types, errors)
    uris = _check_redirect_uris(redirect_uris, grants, errors)
    keys = _check_jwks(jwks, method, errors) if method is not None else None
    clean_scope = _check_scope(scope, organisation.role, grants, errors)
    if method is AuthMethod.NONE and (
        "authorization_code" not in grants or "client_credentials" in grants
    ):
        errors.setdefault("auth_method", []).append(
            "A public client (none) may use only authorization_code (with PKCE), "
            "never client_credentials."
        )
    if not isinstance(dpop_bound, bool):
        errors["dpop_bound"] = ["Must be true or false."]
    if errors:
        raise InvalidInputError("The client is not valid.", fields=errors)
    secret = secrets.token_urlsafe(32) if method is AuthMethod.CLIENT_SECRET_BASIC else None
    client = OAuthClient(
        id=uuid.uuid4(),
        client_id="tc_" + secrets.token_urlsafe(12),
        organisation=organisation,
        name=clean_name,
        auth_method=method,
        secret_hash=credentials.hash_value(secret) if secret else None,
        jwks=keys,
        redirect_uris=uris,
        grant_types=grants,
        scope=clean_scope,
        dpop_bound=dpop_bound,
        registered_by=registered_by,
        revoked_at=None,
    )
    session.add(client)
    session.flush()
    audit.append(
        session,
        event="admin:client:create" if registered_by == "committee" else "oauth:client:register",
        actor=actor,
        detail={
            "organisation": organisation.slug,
            "client_id": client.client_id,
            "auth_method": client.auth_method.value,
            "grant_types": grants,
            "scope": clean_scope,
            "registered_by": registered_by,
        },
    )
    return client, secret


def get_client(session: Session, client_id: str, *, lock: bool = False) -> OAuthClient:
    """One client by its client_id, or NotFoundError."""
    query = select(OAuthClient).where(OAuthClient.client_id == client_id)
    client = session.scalar(query.with_for_update(of=OAuthClient) if lock else query)
    if client is None:
        raise NotFoundError("No such client.")
    return client


def list_clients(
    session: Session, organisation_id: uuid.UUID, *, include_revoked: bool = True
) -> list[OAuthClient]:
    """An organisation's clients, oldest first. NotFoundError for an unknown organisation."""
    get_organisation(session, organisation_id)
    query = select(OAuthClient).where(OAuthClient.organisation_id == organisation_id)
    if not include_revoked:
        query = query.where(OAuthClient.revoked_at.is_(None))
    return list(session.scalars(query.order_by(OAuthClient.created_at, OAuthClient.client_id)))


def revoke_client(session: Session, *, client_id: str, actor: str) -> OAuthClient:
    """Revoke a client and every grant it holds (so its tokens die at commit). Idempotent."""
    client = get_client(session, client_id, lock=True)
    if client.revoked_at is not None:
        return client
    now = utcnow()
    client.revoked_at = now
    revoked = session.execute(
        update(Grant)
        .where(Grant.client_pk == client.id, Grant.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason="client_revoked")
        .execution_options(synchronize_session=False)
    )
    audit.append(
        session,
        event="admin:client:revoke",
        actor=actor,
        detail={
            "organisation": client.organisation.slug,
            "client_id": client.client_id,
            "grants_revoked": int(getattr(revoked, "rowcount", 0) or 0),
        },
    )
    return client


# --- RFC 7591 dynamic registration ------------------------------------------------------


def issue_initial_access_token(
    session: Session,
    *,
    organisation_id: uuid.UUID,
    ttl: timedelta = DEFAULT_IAT_TTL,
    actor: str,
) -> str:
    """An initial access token (RFC 7591 §3) letting one organisation register one client
    by itself: returned in clear once, stored hashed, single use, valid for `ttl`."""
    organisation = get_organisation(session, organisation_id)
    if organisation.suspended_at is not None:
        raise ConflictError("This organisation is suspended: it cannot register clients.")
    if not timedelta(0) < ttl <= MAX_IAT_TTL:
        raise InvalidInputError(
            "The lifetime is not valid.",
            fields={"ttl": [f"More than zero and at most {MAX_IAT_TTL.days} days."]},
        )
    token = secrets.token_urlsafe(32)
    row = InitialAccessToken(
        id=uuid.uuid4(),
        token_hash=credentials.hash_value(token),
        organisation_id=organisation.id,
        expires_at=utcnow() + ttl,
        used_at=None,
    )
    session.add(row)
    session.flush()
    audit.append(
        session,
        event="admin:initial_access_token:issue",
        actor=actor,
        detail={
            "organisation": organisation.slug,
            "token": str(row.id),
            "expires_at": row.expires_at.isoformat(),
        },
    )
    return token


def get_initial_access_token(session: Session, token: str) -> InitialAccessToken:
    """The stored row of a token (to show its expiry), or NotFoundError."""
    row = session.scalar(
        select(InitialAccessToken).where(
            InitialAccessToken.token_hash == credentials.hash_value(token)
        )
    )
    if row is None:
        raise NotFoundError("No such initial access token.")
    return row


_REFUSED = "The initial access token is unknown, already used or expired."
_CHALLENGE = 'Bearer error="invalid_token"'


def initial_access_token_is_valid(session: Session, token: str) -> bool:
    """Whether `token` could register a client now (a read; `register_client` decides)."""
    row = session.scalar(
        select(InitialAccessToken).where(
            InitialAccessToken.token_hash == credentials.hash_value(token),
            InitialAccessToken.used_at.is_(None),
            InitialAccessToken.expires_at > utcnow(),
        )
    )
    return row is not None


# RFC 7591 metadata name -> create_client argument (and back, for field messages).
METADATA_FIELDS = {
    "client_name": "name",
    "token_endpoint_auth_method": "auth_method",
    "redirect_uris": "redirect_uris",
    "grant_types": "grant_types",
    "scope": "scope",
    "jwks": "jwks",
    "dpop_bound_access_tokens": "dpop_bound",
}
_METADATA_FOR = {arg: meta for meta, arg in METADATA_FIELDS.items()}


def register_client(
    session: Session, *, initial_access_token: str, metadata: Mapping[str, Any]
) -> tuple[OAuthClient, str | None]:
    """RFC 7591: register a client with an initial access token, consumed atomically (two
    concurrent registrations with one token: exactly one wins).

    InvalidTokenError for an unknown, used or expired token or a suspended organisation;
    InvalidInputError with fields named by their RFC 7591 metadata names. On any error the
    caller's rollback leaves the token unused.
    """
    now = utcnow()
    token_hash = credentials.hash_value(initial_access_token)
    consumed = session.execute(
        update(InitialAccessToken)
        .where(
            InitialAccessToken.token_hash == token_hash,
            InitialAccessToken.used_at.is_(None),
            InitialAccessToken.expires_at > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if getattr(consumed, "rowcount", 0) != 1:
        raise InvalidTokenError(_REFUSED, challenge=_CHALLENGE)
    row = session.scalar(
        select(InitialAccessToken).where(InitialAccessToken.token_hash == token_hash)
    )
    assert row is not None  # noqa: S101 (just updated)
    organisation = get_organisation(session, row.organisation_id)
    if organisation.suspended_at is not None:
        raise InvalidTokenError(_REFUSED, challenge=_CHALLENGE)
    name = metadata.get("client_name") or f"{organisation.name} (DCR)"
    try:
        return create_client(
            session,
            organisation_id=organisation.id,
            name=name,
            auth_method=metadata.get("token_endpoint_auth_method") or "client_secret_basic",
            redirect_uris=metadata.get("redirect_uris") or [],
            grant_types=metadata.get("grant_types") or ["authorization_code"],
            scope=metadata.get("scope") or "",
            jwks=metadata.get("jwks"),
            dpop_bound=bool(metadata.get("dpop_bound_access_tokens", False)),
            registered_by="dcr",
            actor=f"organisation:{organisation.slug}",
        )
    except InvalidInputError as exc:
        raise InvalidInputError(
            exc.detail, fields={_METADATA_FOR.get(k, k): v for k, v in exc.fields.items()}
        ) from exc
