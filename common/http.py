"""The only place HTTP statuses live: domain errors and HTTP errors become RFC 9457 problems.

/api, /oauth and /.well-known answer application/problem+json; portal paths render HTML.
The choice is made by URL space, never by guessing from the Accept header.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from datetime import UTC
from typing import Any

import flask_smorest
import marshmallow
from flask import Flask, Response, g, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import HTTPException

from common.errors import (
    BadGatewayError,
    ConflictError,
    DomainError,
    ForbiddenError,
    InvalidInputError,
    InvalidTokenError,
    NotFoundError,
    ServiceUnavailableError,
    TooManyRequestsError,
    UnauthorizedError,
)

log = logging.getLogger(__name__)

STATUS_FOR: dict[type[DomainError], int] = {
    NotFoundError: 404,
    ForbiddenError: 403,
    UnauthorizedError: 401,
    ConflictError: 409,
    InvalidInputError: 422,
    TooManyRequestsError: 429,
    ServiceUnavailableError: 503,
    BadGatewayError: 502,
}
PROBLEM_PREFIXES = ("/api/", "/oauth/", "/.well-known/", "/openapi.json")
PORTAL_PAGES = ("/oauth/authorize",)  # the consent screen is a page the citizen sees


def wants_problem_json() -> bool:
    """Whether this request is in the machine URL space (decided by path, deterministic)."""
    return request.path.startswith(PROBLEM_PREFIXES) and request.path not in PORTAL_PAGES


def problem(
    status: int,
    code: str,
    detail: str | None = None,
    fields: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An RFC 9457 problem document with a stable `type` and optional per-field messages."""
    body: dict[str, Any] = {
        "type": f"/problems/{code}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if fields:
        body["errors"] = dict(fields)
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def jsonld_response(body: Any, *, filename: str | None = None) -> Response:
    """A JSON-LD document (ODRL, DPV records); an attachment when `filename` is given."""
    response = jsonify(body)
    response.mimetype = "application/ld+json"
    if filename:
        response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """webargs/marshmallow nest messages by field and index; flatten to dotted paths."""
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return {prefix or "_schema": messages}
    if isinstance(messages, Mapping):
        flat: dict[str, list[str]] = {}
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            flat.update(_flatten(value, path))
        return flat
    return {prefix or "_schema": [str(messages)]}


def _http_error_response(error: HTTPException) -> Any:
    status = error.code or 500
    if not wants_problem_json():
        return render_template("errors/http.html", status=status, name=error.name), status
    fields: dict[str, list[str]] = {}
    data = getattr(error, "data", None) or {}
    for location, by_field in (data.get("messages") or {}).items():
        if location == "json" and isinstance(by_field, Mapping):
            fields.update(_flatten(by_field))
        else:
            fields.update(_flatten(by_field, "" if location in ("json", "form") else location))
    if fields:
        if "_schema" in fields and any("Invalid JSON" in m for m in fields["_schema"]):
            return problem(400, "invalid-json", "The body is not valid JSON.")
        return problem(422, "invalid-input", "The request is not valid.", fields)
    detail = error.description if isinstance(error.description, str) else None
    code = (error.name or "error").lower().replace(" ", "-")
    allowed = getattr(error, "valid_methods", None)
    return problem(status, code, detail, headers={"Allow": ", ".join(allowed)} if allowed else None)


class ProblemApi(flask_smorest.Api):
    """flask-smorest registers an app-wide HTTPException handler; make it answer RFC 9457."""

    def handle_http_exception(self, error: HTTPException) -> Any:
        return _http_error_response(error)


class _SchemaOnceParser(FlaskParser):
    """webargs' Flask parser, with one instance per argument schema class. webargs builds a
    new instance for every request, and building one deep-copies each of its fields: it was
    the largest single cost of parsing a request body. Schemas hold no state between loads."""

    def _get_schema(self, argmap: Any, req: Any) -> marshmallow.Schema:
        if isinstance(argmap, type) and issubclass(argmap, marshmallow.Schema):
            return _schema_instance(argmap)
        return super()._get_schema(argmap, req)


@functools.cache
def _schema_instance(schema: type[marshmallow.Schema]) -> marshmallow.Schema:
    return schema()


class ApiBlueprint(flask_smorest.Blueprint):
    """The blueprint of every REST API: flask-smorest's, with the parser above."""

    ARGUMENTS_PARSER = _SchemaOnceParser()


def _on_domain_error(error: DomainError) -> Any:
    status = next((s for cls, s in STATUS_FOR.items() if isinstance(error, cls)), 400)
    headers: dict[str, str] = {}
    if isinstance(error, TooManyRequestsError | ServiceUnavailableError):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, InvalidTokenError):
        headers["WWW-Authenticate"] = error.challenge
        if error.nonce:
            headers["DPoP-Nonce"] = error.nonce
    if wants_problem_json():
        return problem(status, error.code, error.detail, error.fields, headers=headers)
    return render_template("errors/domain.html", error=error, status=status), status, headers


def _on_csrf_error(error: CSRFError) -> Any:
    if wants_problem_json():
        return problem(403, "csrf-failed", "The CSRF token is missing or not valid.")
    return render_template("errors/http.html", status=403, name=error.description), 403


def _on_unexpected(error: Exception) -> Any:
    # Bugs are logged with their traceback; the client gets no internals.
    log.exception("unhandled error", exc_info=error)
    if wants_problem_json():
        return problem(500, "internal-error", "Something went wrong on our side.")
    return render_template("errors/http.html", status=500, name="Internal Server Error"), 500


# --- what every answer carries, and what no input may hold ---------------------------------

# No page of Tiers runs a script or loads anything from elsewhere, and none may be framed: the
# consent screen and the withdraw buttons are clickjacking targets (OWASP).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # an authorization code never leaks in a Referer
}
HSTS = "max-age=31536000"


def init_guards(app: Flask) -> None:
    """Security headers on every answer (HSTS when cookies are https-only: the deployment
    is https), `no-store` on what a signed-in citizen or a token holder sees, and no NUL
    character in any input: PostgreSQL text refuses it, so it would be a 500, not a 422."""
    app.before_request(_refuse_nul)

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if app.config.get("SESSION_COOKIE_SECURE"):
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        personal = g.get("citizen") is not None or "Authorization" in request.headers
        if personal and "Cache-Control" not in response.headers:
            response.headers["Cache-Control"] = "no-store"
        return response


def _refuse_nul() -> None:
    if request.path.startswith("/oauth/"):
        return  # OAuth endpoints answer in their RFCs' own error format, and check for it
    found = [f"query.{k}" for k, v in request.args.items(multi=True) if "\x00" in k + v]
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        found += [k for k, v in request.form.items(multi=True) if "\x00" in k + v]
    if request.is_json:
        found += _nul_paths(request.get_json(silent=True), "")
    if found:
        raise InvalidInputError(
            "Text must not contain NUL characters.",
            fields={path or "body": ["Must not contain NUL characters."] for path in found},
        )


def _nul_paths(value: Any, path: str) -> list[str]:
    """Where a JSON document holds a NUL character, as field paths (`a.b[2]`)."""
    if isinstance(value, str):
        return [path] if "\x00" in value else []
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _nul_paths(item, f"{path}[{i}]")]
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            found += [where] if "\x00" in str(key) else _nul_paths(item, where)
        return found
    return []


class UtcDateTime(marshmallow.fields.AwareDateTime):
    """An aware date-time read as UTC; one at the edge of the calendar that UTC cannot hold
    (9999-12-31T23:59:59-14:00) is a field error, not an OverflowError."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        parsed = super()._deserialize(value, attr, data, **kwargs)
        try:
            return parsed.astimezone(UTC)
        except OverflowError as exc:
            raise marshmallow.ValidationError("Not a time UTC can hold.") from exc


def register_error_handlers(app: Flask) -> None:
    """Map every error to a problem (API) or a page (portal); call after ProblemApi(app)."""
    app.register_error_handler(DomainError, _on_domain_error)
    app.register_error_handler(CSRFError, _on_csrf_error)
    app.register_error_handler(HTTPException, _http_error_response)
    if not app.testing:
        app.register_error_handler(Exception, _on_unexpected)
