"""The HTTP face shared by every demo holder: the protocol's routes, token checks, notices and
fault modes around one `Holder` (its datasets and demo subjects).

Routes: `GET /health`, `GET /datasets[/<id>]` (what the holder registers at Tiers),
`GET /datasets/<id>/records` (docs/holder-protocol.md), `GET /demo/subjects`,
`POST /webhooks/tiers` and `GET /webhooks/received`. Every error is an RFC 9457 problem.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException

from . import protocol, tokens
from .protocol import Dataset, InvalidQueryError

FAULT_MODES = ("none", "down", "slow", "malformed")
MAX_NOTICE_BYTES = 16 * 1024
MAX_IDEMPOTENCY_KEY = 200
NOTICES_KEPT = 1000  # bounded: the receiver's memory does not grow with Tiers' retries

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fault:
    """A failure to simulate, for the gateway's tests and benchmarks.

    `down`: every route answers 503 with Retry-After; `slow`: each records page waits
    `delay_ms`; `malformed`: records pages are cut-off JSON (`variant` "json") or records
    without their subject and value fields (`variant` "fields").
    """

    mode: str = "none"
    delay_ms: int = 0
    variant: str = "json"
    retry_after: int = 30

    @classmethod
    def parse(cls, spec: str | None) -> Fault:
        """`down[:retry-after s]`, `slow[:ms]`, `malformed[:json|fields]`, or `none` / empty."""
        text = (spec or "none").strip().lower()
        mode, _, argument = text.partition(":")
        if mode not in FAULT_MODES:
            raise ValueError(f"fault mode must be one of {', '.join(FAULT_MODES)}: {spec!r}")
        if mode == "malformed":
            variant = argument or "json"
            if variant not in ("json", "fields"):
                raise ValueError(f"malformed takes json or fields: {spec!r}")
            return cls(mode, variant=variant)
        number = 0
        if argument:
            if not argument.isdigit():
                raise ValueError(f"{mode} takes a whole number: {spec!r}")
            number = int(argument)
        if mode == "slow":
            return cls(mode, delay_ms=number or 500)
        if mode == "down":
            return cls(mode, retry_after=number or 30)
        return cls()


@dataclass(frozen=True)
class Holder:
    """One organisation's demo service: who it is, what it serves, whom a demo citizen can be."""

    name: str
    organisation: str
    description: dict[str, str]
    datasets: Mapping[str, Dataset]
    # A few subjects, or up to `count` of them (the demo's panel asks for more).
    demo_subjects: Callable[..., list[dict[str, Any]]]
    seed: str


@dataclass
class NoticeStore:
    """Notices received, by idempotency key, oldest dropped past `capacity`."""

    capacity: int = NOTICES_KEPT
    _notices: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, key: str, claims: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """(True, entry) the first time a key is seen; (False, the first entry) afterwards."""
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        with self._lock:
            entry = self._notices.get(key)
            if entry is not None:
                entry["deliveries"] += 1
                entry["last_received_at"] = now
                return False, dict(entry)
            entry = {
                "idempotency_key": key,
                "received_at": now,
                "last_received_at": now,
                "deliveries": 1,
                "notice": claims,
            }
            self._notices[key] = entry
            while len(self._notices) > self.capacity:
                self._notices.popitem(last=False)
            return True, dict(entry)

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry) for entry in self._notices.values()]


@dataclass
class State:
    holder: Holder
    issuer: str
    resource_uri: str
    keys: tokens.TiersKeys
    notices: NoticeStore = field(default_factory=NoticeStore)


def create_app(
    holder: Holder,
    *,
    tiers_url: str,
    resource_uri: str,
    fault: Fault | None = None,
    keys: tokens.TiersKeys | None = None,
) -> Flask:
    """The holder's WSGI app. `tiers_url` is Tiers' issuer (tokens' `iss`, and where its JWKS
    is); `resource_uri` is this holder's registered resource (tokens' `aud`)."""
    app = Flask(f"examples.holders.{holder.name}")
    issuer = tiers_url.rstrip("/")
    app.config["HOLDER_FAULT"] = fault or Fault()
    app.config["MAX_CONTENT_LENGTH"] = MAX_NOTICE_BYTES  # no route takes more than a notice
    app.extensions["holder"] = State(
        holder=holder,
        issuer=issuer,
        resource_uri=resource_uri,
        keys=keys or tokens.TiersKeys(issuer),
    )
    app.before_request(_down)
    _register_errors(app)
    _register_routes(app)
    return app


def set_fault(app: Flask, spec: str | Fault) -> None:
    """Switch a running holder's fault mode (tests and benchmarks; no request can do this)."""
    app.config["HOLDER_FAULT"] = spec if isinstance(spec, Fault) else Fault.parse(spec)


def _state() -> State:
    state: State = current_app.extensions["holder"]
    return state


def _fault() -> Fault:
    fault: Fault = current_app.config["HOLDER_FAULT"]
    return fault


def problem(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    errors: Mapping[str, list[str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An RFC 9457 problem, shaped as Tiers' own (`errors` holds per-field messages)."""
    body: dict[str, Any] = {"type": f"/problems/{code}", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = dict(errors)
    response = Response(protocol.dumps(body), status=status, mimetype="application/problem+json")
    response.headers.update(headers or {})
    return response


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    response = Response(protocol.dumps(body), status=status, mimetype="application/json")
    response.headers.update(headers or {})
    return response


def _down() -> Response | None:
    fault = _fault()
    if fault.mode != "down":
        return None
    return problem(
        503,
        "unavailable",
        "Service Unavailable",
        "The holder is down for maintenance (simulated).",
        headers={"Retry-After": str(fault.retry_after)},
    )


class _UnauthorizedError(Exception):
    """401: `error` is the RFC 6750 code, None when no bearer token was sent at all."""

    def __init__(self, detail: str, error: str | None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.error = error


def _authenticate() -> dict[str, Any]:
    """The claims of the request's bearer token (RFC 6750), checked against Tiers' JWKS."""
    state = _state()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if not scheme:
        raise _UnauthorizedError("This dataset is personal: send an access token from Tiers.", None)
    if scheme.lower() != "bearer" or not token.strip():
        raise _UnauthorizedError("Send the access token as `Authorization: Bearer <token>`.", None)
    try:
        return tokens.verify_access_token(
            token.strip(), state.keys, issuer=state.issuer, audience=state.resource_uri
        )
    except tokens.TokenError as exc:
        raise _UnauthorizedError(f"The access token is refused: {exc}.", "invalid_token") from None


def _challenge(error: str | None, description: str) -> str:
    """RFC 6750 §3: no error code when no credentials were sent at all."""
    challenge = f'Bearer realm="{_state().resource_uri}"'
    if error:
        challenge += f', error="{error}", error_description="{description}"'
    return challenge


def _register_errors(app: Flask) -> None:
    @app.errorhandler(_UnauthorizedError)
    def unauthorized(exc: _UnauthorizedError) -> Response:
        return problem(
            401,
            "unauthorized",
            "Unauthorized",
            exc.detail,
            headers={"WWW-Authenticate": _challenge(exc.error, exc.detail.replace('"', "'"))},
        )

    @app.errorhandler(tokens.KeysUnavailableError)
    def keys_unavailable(exc: tokens.KeysUnavailableError) -> Response:
        log.warning("cannot check a signature: %s", exc)
        return problem(
            503,
            "tiers-keys-unavailable",
            "Service Unavailable",
            "Tiers' signing keys cannot be read right now; try again shortly.",
            headers={"Retry-After": "5"},
        )

    @app.errorhandler(InvalidQueryError)
    def invalid_query(exc: InvalidQueryError) -> Response:
        return problem(
            400, "invalid-input", "Bad Request", "Some parameters are not valid.", exc.errors
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = (exc.name or "error").lower().replace(" ", "-")
        return problem(status, code, exc.name or "Error", exc.description)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error")  # the detail goes to the log, never to the client
        return problem(500, "internal-error", "Internal Server Error")


def _registration(state: State) -> dict[str, Any]:
    """What the holder registers at Tiers: itself, its endpoints, its datasets' schemas."""
    base = request.host_url.rstrip("/")
    holder = state.holder
    datasets = []
    for dataset in holder.datasets.values():
        described = dataset.schema.describe()
        described["endpoint"] = f"{base}/datasets/{dataset.id}/records"
        described["authentication"] = (
            {"type": "bearer", "token": "tiers-jwt-access-token", "resource": state.resource_uri}
            if dataset.personal
            else {"type": "none"}
        )
        datasets.append(described)
    return {
        "holder": holder.name,
        "organisation": holder.organisation,
        "description": holder.description,
        "resource_uri": state.resource_uri,
        "issuer": state.issuer,
        "health_url": f"{base}/health",
        "webhook_url": f"{base}/webhooks/tiers",
        "protocol": "tiers-holder/1",
        "seed": holder.seed,
        "datasets": datasets,
    }


def _register_routes(app: Flask) -> None:
    @app.get("/health")
    def health() -> Response:
        return _json({"status": "ok"})

    @app.get("/datasets")
    def datasets() -> Response:
        return _json(_registration(_state()))

    @app.get("/datasets/<dataset_id>")
    def dataset(dataset_id: str) -> Response:
        for described in _registration(_state())["datasets"]:
            if described["id"] == dataset_id:
                return _json(described)
        return _unknown_dataset(dataset_id)

    @app.get("/datasets/<dataset_id>/records")
    def records(dataset_id: str) -> Response:
        state = _state()
        found = state.holder.datasets.get(dataset_id)
        if found is None:
            return _unknown_dataset(dataset_id)
        headers = {"Cache-Control": "no-store"}
        if found.personal:
            _authenticate()
        else:
            headers = {"Link": f'<{protocol.LICENCE_OUVERTE}>; rel="license"'}
        query = protocol.parse_query(found, request.args.to_dict(flat=False))
        fault = _fault()
        if fault.mode == "slow":
            time.sleep(fault.delay_ms / 1000)
        page = protocol.read_page(found, query)
        if fault.mode == "malformed":
            return _malformed(found, page, fault, headers)
        return _json(page.body(), headers=headers)

    @app.get("/demo/subjects")
    def demo_subjects() -> Response:
        holder = _state().holder
        raw = request.args.get("count", "1")
        # isascii: str.isdigit() also takes "²", which int() refuses.
        digits = raw.isascii() and raw.isdigit()
        if set(request.args) - {"count"} or not digits or not 1 <= int(raw) <= 500:
            return problem(
                400,
                "invalid-parameters",
                "Bad Request",
                errors={"count": ["An integer from 1 to 500; the only parameter."]},
            )
        return _json(
            {
                "holder": holder.name,
                "note": "Synthetic subjects for the demo: pair one of them with a citizen "
                "(python -m examples.holders pair ...).",
                "subjects": holder.demo_subjects(int(raw) if "count" in request.args else None),
            }
        )

    @app.post("/webhooks/tiers")
    def receive_notice() -> Response:
        state = _state()
        if request.mimetype != "application/jose":
            return problem(
                415,
                "unsupported-media-type",
                "Unsupported Media Type",
                "Send the notice as a compact JWS with Content-Type: application/jose.",
            )
        key = request.headers.get("Idempotency-Key", "").strip()
        if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
            return problem(
                400,
                "invalid-input",
                "Bad Request",
                "The notice needs an Idempotency-Key header.",
                {"Idempotency-Key": [f"Required, 1 to {MAX_IDEMPOTENCY_KEY} characters."]},
            )
        body = request.get_data(as_text=True)
        try:
            claims = tokens.verify_notice(body.strip(), state.keys, issuer=state.issuer)
        except tokens.TokenError as exc:
            return problem(400, "invalid-notice", "Bad Request", f"The notice is refused: {exc}.")
        first, entry = state.notices.record(key, claims)
        if first:
            log.info("notice %s recorded: %s", key, claims.get("type"))
        return _json(
            {"recorded": True, "duplicate": not first, "received_at": entry["received_at"]},
            status=201 if first else 200,
        )

    @app.get("/webhooks/received")
    def received() -> Response:
        return _json({"notices": _state().notices.all()})


def _unknown_dataset(dataset_id: str) -> Response:
    known = ", ".join(_state().holder.datasets)
    return problem(
        404, "not-found", "Not Found", f"No dataset {dataset_id!r} here (datasets: {known})."
    )


def _malformed(
    dataset: Dataset, page: protocol.Page, fault: Fault, headers: Mapping[str, str]
) -> Response:
    """A broken page, as a faulty holder would send it, with a 200 and a JSON content type."""
    if fault.variant == "fields":
        keep = {dataset.schema.time_field}
        broken = [{k: v for k, v in record.items() if k in keep} for record in page.records]
        return _json({"records": broken, "next_cursor": page.next_cursor}, headers=headers)
    text = protocol.dumps(page.body())
    response = Response(text[: max(1, len(text) // 2)], mimetype="application/json")
    response.headers.update(headers)
    return response
