"""Who is calling: the signed-in citizen of a portal session (cookie + CSRF on every POST).

The lookup itself is plugged in by the composition root (common imports no domain package).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import current_app, g, redirect, request, session, url_for

from common.errors import UnauthorizedError
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


def set_resolver(app: Any, resolver: Resolver) -> None:
    """Install the function that maps a session token to a citizen (broker/app.py does).

    The citizen is resolved before the view opens its own session: on SQLite, a second
    connection opened while the first holds the write lock would wait for itself.
    """
    app.extensions["auth.resolver"] = resolver
    app.before_request(_resolve_early)


def _resolve_early() -> None:
    current_citizen()  # returns nothing: a value here would replace the response


def current_citizen() -> CitizenIdentity | None:
    """The citizen of this request's live session, or None (resolved once per request)."""
    if "citizen" not in g:
        token = session.get("sid")
        resolver: Resolver = current_app.extensions["auth.resolver"]
        g.citizen = resolver(token) if isinstance(token, str) else None
        if g.citizen is None and token is not None:
            session.pop("sid", None)  # expired or ended server-side: forget it
    citizen: CitizenIdentity | None = g.citizen
    return citizen


def current_subject_id() -> uuid.UUID:
    """The pseudonymous subject id of the signed-in citizen, or UnauthorizedError."""
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
    if "\\" in target:
        return default
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
