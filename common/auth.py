"""Who is calling: an OAuth2 access token, or the signed-in citizen of a portal session.

Every API route says which scope it needs (`require_oauth`) or that it is public (`public`);
tests/architecture checks that none says nothing. The lookups themselves (session token to
citizen, access token to identity) are plugged in by the composition root, because common
imports no domain package.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import current_app, g, redirect, request, session, url_for

from common.errors import InsufficientScopeError, InvalidTokenError, UnauthorizedError
from common.http import wants_problem_json

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class CitizenIdentity:
    """The signed-in citizen, as the HTTP layer needs it."""

    id: uuid.UUID
    subject_id: uuid.UUID
    email: str
    language: str


Resolver = Callable[[str], CitizenIdentity | None]


@dataclass(frozen=True)
class AccessRequest:
    """What the resource side sees of a request that carries an access token."""

    scheme: str  # "bearer" or "dpop"
    token: str
    dpop_proof: str | None
    method: str
    url: str


@dataclass(frozen=True)
class TokenIdentity:
    """The caller behind a valid access token, as routes need it."""

    client_id: str
    organisation_id: uuid.UUID
    organisation_slug: str
    role: str
    scopes: frozenset[str]
    grant_id: uuid.UUID
    subject_id: uuid.UUID | None = None  # set when a citizen authorised the client
    consent_ids: tuple[str, ...] = ()
    # Consent recipients this caller stands for: its organisation's slug and reuser category.
    recipients: tuple[str, ...] = ()


TokenValidator = Callable[[AccessRequest], TokenIdentity]
MAX_AUTHORIZATION_BYTES = 8192 + 16


def set_resolver(app: Any, resolver: Resolver) -> None:
    """Install the function that maps a session token to a citizen (broker/app.py does).

    The citizen is resolved before the view runs, in the request's own database session
    (`common.db.get_session`), which the view's unit of work then goes on with.
    """
    app.extensions["auth.resolver"] = resolver
    app.before_request(_resolve_early)


def _resolve_early() -> None:
    current_citizen()  # returns nothing: a value here would replace the response


def current_citizen() -> CitizenIdentity | None:
    """The citizen of this request's live session, or None (resolved once per request)."""
    if "citizen" not in g:
        g.citizen = None  # if the lookup fails, the error page renders for no one signed in
        token = session.get("sid")
        resolver: Resolver = current_app.extensions["auth.resolver"]
        g.citizen = resolver(token) if isinstance(token, str) else None
        if g.citizen is None and token is not None:
            session.pop("sid", None)  # expired or ended server-side: forget it
    citizen: CitizenIdentity | None = g.citizen
    return citizen


def set_token_validator(app: Any, validator: TokenValidator) -> None:
    """Install the function that checks an access token (broker/app.py does)."""
    app.extensions["auth.token_validator"] = validator


def current_token() -> TokenIdentity | None:
    """The identity of this request's access token, if it came with one."""
    token: TokenIdentity | None = g.get("token")
    return token


def _access_request() -> AccessRequest | None:
    header = request.headers.get("Authorization")
    if "access_token" in request.args:
        # FAPI 2.0: tokens travel in the Authorization header only, never in a URL.
        raise InvalidTokenError(
            "Access tokens are accepted in the Authorization header only.",
            challenge='Bearer error="invalid_request"',
        )
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if len(header) > MAX_AUTHORIZATION_BYTES or scheme.lower() not in ("bearer", "dpop"):
        raise InvalidTokenError(
            "Send an access token as `Bearer` or `DPoP`.",
            challenge='Bearer error="invalid_request", DPoP error="invalid_request"',
        )
    return AccessRequest(
        scheme=scheme.lower(),
        token=token.strip(),
        dpop_proof=request.headers.get("DPoP"),
        method=request.method,
        url=request.base_url,
    )


def require_oauth(*scopes: str, citizen_session: bool = False) -> Callable[[F], F]:
    """The route needs an access token holding every one of `scopes`.

    With `citizen_session`, a signed-in citizen's own portal session stands in for a token
    (the portal's pages and scripts act for the citizen; CSRF guards their writes).
    """

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            access = _access_request()
            if access is None:
                if citizen_session and current_citizen() is not None:
                    return view(*args, **kwargs)
                raise InvalidTokenError(
                    "Sign in first, or send an access token."
                    if citizen_session
                    else "This needs an access token.",
                    challenge='Bearer realm="tiers", DPoP algs="ES256 PS256 EdDSA"',
                    missing=True,
                )
            validator: TokenValidator = current_app.extensions["auth.token_validator"]
            identity = validator(access)
            missing = sorted(set(scopes) - identity.scopes)
            if missing:
                raise InsufficientScopeError(
                    f"This token lacks the scope {', '.join(missing)}.",
                )
            g.token = identity
            return view(*args, **kwargs)

        wrapped.required_scopes = scopes  # type: ignore[attr-defined]
        wrapped.citizen_session = citizen_session  # type: ignore[attr-defined]
        return wrapped  # type: ignore[return-value]

    return decorate


def public(view: F) -> F:
    """Mark a route that anyone may call (health, keys, the charter, metadata)."""
    view.required_scopes = ()  # type: ignore[attr-defined]
    view.public = True  # type: ignore[attr-defined]
    return view


def uses_client_authentication(view: F) -> F:
    """Mark an OAuth endpoint that authenticates the client itself (token, PAR, ...)."""
    view.required_scopes = ()  # type: ignore[attr-defined]
    view.client_authenticated = True  # type: ignore[attr-defined]
    return view


def visible_recipients() -> tuple[str, ...] | None:
    """Whose consents this request may see: all of them for the citizen's own session, only
    those naming the caller's organisation for an app acting for the citizen."""
    token = current_token()
    return token.recipients if token is not None else None


def current_subject_id() -> uuid.UUID:
    """The citizen this request acts for: a token's citizen, else the portal session's."""
    token = current_token()
    if token is not None:
        if token.subject_id is None:
            raise InsufficientScopeError("This token does not act for a citizen.")
        return token.subject_id
    citizen = current_citizen()
    if citizen is None:
        raise UnauthorizedError("Sign in first.")
    return citizen.subject_id


def remember(token: str) -> None:
    """Bind a fresh session token to the browser; a new cookie defeats session fixation."""
    session.clear()
    session["sid"] = token
    session.permanent = True
    g.pop("citizen", None)


def forget() -> str | None:
    """Unbind the browser; returns the token that was bound, if any."""
    token = session.pop("sid", None)
    session.clear()
    g.pop("citizen", None)
    return token if isinstance(token, str) else None


def safe_next(target: str | None, default: str) -> str:
    """Only same-site relative paths are followed after sign-in (no open redirect)."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return default  # a control character would break the Location header (CR/LF)
    return target


def citizen_required(view: F) -> F:
    """Portal: redirect to sign-in (then back); API: 401 problem."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_citizen() is None:
            if wants_problem_json():
                raise UnauthorizedError("Sign in first: this needs a citizen's session.")
            return redirect(url_for("accounts.sign_in", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]
