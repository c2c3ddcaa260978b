"""Organisations and their OAuth2 clients, managed by the charter committee; RFC 7591
self-registration with an initial access token; the committee's own members.

Secrets and initial access tokens leave here once, in clear, and are stored only as SHA-256
hashes. Every change appends an audit entry in the caller's transaction; nothing commits here.
"""

from __future__ import annotations

import enum
import re
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audit import service as audit
from broker.models import (
    AuthMethod,
    CommitteeMember,
    Grant,
    InitialAccessToken,
    OAuthClient,
    Organisation,
    Role,
)
from broker.service import credentials, scopes
from charter import service as charters
from charter.document import CharterDocument
from common.clock import utcnow
from common.errors import (
    ConflictError,
    InvalidInputError,
    InvalidTokenError,
    NotFoundError,
)
from consent.accounts import normalize_email
from consent.models import Citizen

SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*\Z")  # the charter's ids for named reusers
MAX_SLUG, MAX_NAME, MAX_URI, MAX_REDIRECT_URIS = 64, 200, 500, 10
# The charter's reuser category says who an organisation is to the citizens who consent.
CATEGORY_REQUIRED = frozenset({Role.REUSER, Role.CITY_SERVICE, Role.OBSERVATORY})
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
REFUSED_GRANTS = {
    "implicit": "The implicit grant is not supported (RFC 9700 §2.1.2): "
    "use authorization_code with PKCE.",
    "password": "The resource owner password grant is not supported (RFC 9700 §2.4): "
    "use authorization_code with PKCE.",
}
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})  # RFC 8252 §7.3
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MAX_JWKS_KEYS = 10
DEFAULT_IAT_TTL = timedelta(hours=24)
MAX_IAT_TTL = timedelta(days=30)
REGISTERED_BY = ("committee", "dcr")


class _Unset(enum.Enum):
    UNSET = enum.auto()


UNSET = _Unset.UNSET  # "leave as it is", distinct from None ("clear it")


# --- secrets ----------------------------------------------------------------------------


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a random secret (256-bit values need no slow hash; see models).

    The same function as credentials.hash_value, which the token endpoint checks with.
    """
    return credentials.hash_value(secret)


def check_secret(client: OAuthClient, secret: str) -> bool:
    """Whether `secret` is this client_secret_basic client's secret (constant time)."""
    return credentials.check_secret(client, secret)


# --- organisations ----------------------------------------------------------------------


def _coerce_role(role: Role | str, errors: dict[str, list[str]]) -> Role | None:
    try:
        return Role(role)
    except ValueError:
        errors["role"] = [f"Must be one of: {', '.join(r.value for r in Role)}."]
        return None


def _url_problem(uri: object, *, what: str, query: bool = True) -> str | None:
    """Why `uri` is not an acceptable absolute https URL (http only on loopback), or None."""
    if not isinstance(uri, str) or not uri:
        return f"A {what} must be a non-empty string."
    if len(uri) > MAX_URI:
        return f"{uri[:60]}…: a {what} has at most {MAX_URI} characters."
    if "*" in uri:
        return f"{uri}: wildcards are not allowed; a {what} is compared exactly."
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in uri):
        return f"{uri!r}: spaces and control characters are not allowed."
    try:
        parts = urlsplit(uri)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return f"{uri}: not a valid URL."
    if not parts.scheme or not host:
        return f"{uri}: a {what} must be an absolute URL."
    if "#" in uri:
        return f"{uri}: a {what} must not contain a fragment (RFC 6749 §3.1.2)."
    if parts.username is not None or parts.password is not None:
        return f"{uri}: a {what} must not contain credentials."
    if not query and parts.query:
        return f"{uri}: a {what} must not contain a query (RFC 8707 §2)."
    if parts.scheme == "https":
        return None
    if parts.scheme == "http":
        if host in LOOPBACK_HOSTS:
            return None
        return f"{uri}: http is allowed only on loopback (localhost, 127.0.0.1); use https."
    return f"{uri}: a {what} must use https."


def _named_category(doc: CharterDocument, slug: str) -> str | None:
    """The reuser category the charter gives `slug` when a purpose names it as a reuser."""
    for purpose in doc.purposes:
        for reuser in purpose.named_reusers:
            if reuser.id == slug:
                return reuser.category
    return None


def _check_category(
    session: Session,
    role: Role,
    category: str | None,
    slug: str,
    errors: dict[str, list[str]],
) -> None:
    """The reuser category must be one of the current charter's; some roles need one."""
    if category is None:
        if role in CATEGORY_REQUIRED:
            errors["reuser_category"] = [
                f"A {role.value} organisation needs a reuser category of the charter."
            ]
        return
    charter = charters.current_or_none(session)
    if charter is None:
        errors["reuser_category"] = ["No charter is published yet: publish one first."]
        return
    known = [c.id for c in charter.doc.reuser_categories]
    if category not in known:
        errors["reuser_category"] = [
            f'"{category}" is not a reuser category of charter {charter.version}; '
            f"must be one of: {', '.join(known)}."
        ]
        return
    named = _named_category(charter.doc, slug)
    if named is not None and named != category:
        errors["reuser_category"] = [f'The charter names "{slug}" as a {named} reuser.']


def _check_name(name: object, errors: dict[str, list[str]], field: str = "name") -> str:
    if not isinstance(name, str) or not name.strip():
        errors[field] = ["A name is required."]
        return ""
    if len(name.strip()) > MAX_NAME:
        errors[field] = [f"At most {MAX_NAME} characters."]
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        errors[field] = ["Control characters are not allowed."]
    return name.strip()


def _check_resource_uri(
    session: Session, uri: str | None, errors: dict[str, list[str]], *, own: uuid.UUID | None
) -> None:
    if uri is None:
        return
    problem = _url_problem(uri, what="resource URI", query=False)
    if problem:
        errors["resource_uri"] = [problem]
        return
    taken = session.scalar(select(Organisation.id).where(Organisation.resource_uri == uri))
    if taken is not None and taken != own:
        errors["resource_uri"] = ["Another organisation already serves this resource URI."]


def _flush_unique(session: Session, detail: str) -> None:
    """Flush now: unique indexes decide races the checks above could not see."""
    try:
        session.flush()
    except IntegrityError as exc:
        raise ConflictError(detail) from exc


def create_organisation(
    session: Session,
    *,
    slug: str,
    name: str,
    role: Role | str,
    reuser_category: str | None = None,
    resource_uri: str | None = None,
    actor: str,
) -> Organisation:
    """Register a party of the territory.

    InvalidInputError names every bad field; ConflictError (on `slug`) when the slug is taken.
    """
    errors: dict[str, list[str]] = {}
    if not isinstance(slug, str) or len(slug) > MAX_SLUG or not SLUG.match(slug):
        errors["slug"] = [f"A lowercase kebab-case id of at most {MAX_SLUG} characters."]
    clean_name = _check_name(name, errors)
    kind = _coerce_role(role, errors)
    if kind is not None:
        _check_category(session, kind, reuser_category, slug, errors)
    _check_resource_uri(session, resource_uri, errors, own=None)
    if errors:
        raise InvalidInputError("The organisation is not valid.", fields=errors)
    assert kind is not None  # noqa: S101 (checked above; for the type checker)
    if session.scalar(select(Organisation.id).where(Organisation.slug == slug)) is not None:
        raise ConflictError(
            f'An organisation "{slug}" already exists.',
            fields={"slug": ["This slug is already taken."]},
        )
    organisation = Organisation(
        id=uuid.uuid4(),
        slug=slug,
        name=clean_name,
        role=kind,
        reuser_category=reuser_category,
        resource_uri=resource_uri,
        suspended_at=None,
    )
    session.add(organisation)
    _flush_unique(session, f'An organisation "{slug}" or its resource URI already exists.')
    audit.append(
        session,
        event="admin:organisation:create",
        actor=actor,
        detail={"organisation": slug, "role": kind.value, "reuser_category": reuser_category},
    )
    return organisation


def list_organisations(session: Session, *, role: Role | None = None) -> list[Organisation]:
    """Every organisation, by slug, optionally of one role."""
    query = select(Organisation).order_by(Organisation.slug)
    if role is not None:
        query = query.where(Organisation.role == role)
    return list(session.scalars(query))


def get_organisation(
    session: Session, organisation_id: uuid.UUID, *, lock: bool = False
) -> Organisation:
    """One organisation, or NotFoundError."""
    organisation = session.get(Organisation, organisation_id, with_for_update=lock)
    if organisation is None:
        raise NotFoundError("No such organisation.")
    return organisation


def get_organisation_by_slug(session: Session, slug: str) -> Organisation:
    """One organisation by its slug, or NotFoundError."""
    organisation = session.scalar(select(Organisation).where(Organisation.slug == slug))
    if organisation is None:
        raise NotFoundError(f'No organisation "{slug}".')
    return organisation


def update_organisation(
    session: Session,
    organisation_id: uuid.UUID,
    *,
    actor: str,
    name: str | _Unset = UNSET,
    reuser_category: str | _Unset | None = UNSET,
    resource_uri: str | _Unset | None = UNSET,
    suspended: bool | None = None,
) -> Organisation:
    """Change what the committee may change; the role never changes (its clients' scopes
    depend on it: create another organisation instead).

    Suspending is idempotent and keeps the first suspension time; the authorization server
    refuses tokens to a suspended organisation's clients.
    """
    organisation = get_organisation(session, organisation_id, lock=True)
    errors: dict[str, list[str]] = {}
    changed: dict[str, Any] = {}
    if name is not UNSET:
        clean = _check_name(name, errors)
        if clean != organisation.name:
            changed["name"] = clean
    if reuser_category is not UNSET:
        _check_category(session, organisation.role, reuser_category, organisation.slug, errors)
        if reuser_category != organisation.reuser_category:
            changed["reuser_category"] = reuser_category
    if resource_uri is not UNSET:
        _check_resource_uri(session, resource_uri, errors, own=organisation.id)
        if resource_uri != organisation.resource_uri:
            changed["resource_uri"] = resource_uri
    if errors:
        raise InvalidInputError("The changes are not valid.", fields=errors)
    for key, value in changed.items():
        setattr(organisation, key, value)
    if changed:
        _flush_unique(session, "Another organisation already serves this resource URI.")
        audit.append(
            session,
            event="admin:organisation:update",
            actor=actor,
            detail={"organisation": organisation.slug, "changed": sorted(changed)},
        )
    if suspended is not None and suspended != (organisation.suspended_at is not None):
        organisation.suspended_at = utcnow() if suspended else None
        audit.append(
            session,
            event="admin:organisation:" + ("suspend" if suspended else "unsuspend"),
            actor=actor,
            detail={"organisation": organisation.slug},
        )
    return organisation


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
    messages = [p for p in (_url_problem(u, what="redirect URI") for u in uris) if p]
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
    clean_name = _check_name(name, errors)
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
        secret_hash=hash_secret(secret) if secret else None,
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
    client = session.scalar(query.with_for_update() if lock else query)
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
        token_hash=hash_secret(token),
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
        select(InitialAccessToken).where(InitialAccessToken.token_hash == hash_secret(token))
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
            InitialAccessToken.token_hash == hash_secret(token),
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
    token_hash = hash_secret(initial_access_token)
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


# --- the charter committee --------------------------------------------------------------


def add_committee_member(
    session: Session, email: str, *, note: str = "", actor: str = "cli"
) -> CommitteeMember:
    """Let the portal account with this e-mail use the admin pages. Idempotent;
    NotFoundError when no account has this address (the person signs up first)."""
    citizen = session.scalar(select(Citizen).where(Citizen.email == normalize_email(email)))
    if citizen is None:
        raise NotFoundError(
            "No portal account has this address: the person signs up first.",
            fields={"email": ["No account with this address."]},
        )
    member = session.scalar(select(CommitteeMember).where(CommitteeMember.citizen_id == citizen.id))
    if member is not None:
        return member
    member = CommitteeMember(id=uuid.uuid4(), citizen_id=citizen.id, note=note)
    session.add(member)
    _flush_unique(session, "This account is already a committee member.")
    # The log names the member's account by its subject tag, never by e-mail.
    audit.append(
        session,
        event="admin:committee:add",
        actor=actor,
        subject_id=citizen.subject_id,
        detail={"member": str(member.id)},
    )
    return member


def get_committee_member(session: Session, citizen_id: uuid.UUID) -> CommitteeMember | None:
    """The membership of this portal account, or None."""
    return session.scalar(select(CommitteeMember).where(CommitteeMember.citizen_id == citizen_id))


def is_committee_member(session: Session, citizen_id: uuid.UUID) -> bool:
    """Whether this portal account may use the committee's admin pages."""
    return get_committee_member(session, citizen_id) is not None
