"""REST API of the access log: the signed checkpoint, the log key and proofs are public
(anyone may audit); the leaves need `audit:read`."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Response, current_app
from marshmallow import RAISE

from audit import service
from audit.schemas import (
    ConsistencyProofOut,
    ConsistencyQuery,
    EntriesOut,
    EntriesQuery,
    InclusionProofOut,
    InclusionQuery,
)
from audit.service import browse
from common.auth import public, require_oauth
from common.db import get_session
from common.errors import InvalidInputError, NotFoundError
from common.http import ApiBlueprint

blp = ApiBlueprint(
    "audit", __name__, url_prefix="/api/v1/audit", description="The tamper-evident access log"
)


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


@contextmanager
def _query_fields() -> Iterator[None]:
    """Name a refused parameter as webargs does (`query.size`), whoever refused it."""
    try:
        yield
    except InvalidInputError as error:
        fields = {f"query.{name}": messages for name, messages in error.fields.items()}
        raise InvalidInputError(error.detail, fields=fields) from error


def _text(body: str, *, cache: str) -> Response:
    response = Response(body, mimetype="text/plain")
    response.headers["Cache-Control"] = cache
    return response


@blp.get("/checkpoint")
@public
@blp.response(200, content_type="text/plain")
def get_checkpoint() -> Response:
    note = service.checkpoint(get_session())
    if note is None:
        raise NotFoundError("The log has no signed checkpoint yet.")
    return _text(note, cache="no-cache")


@blp.get("/log-key")
@public
@blp.response(200, content_type="text/plain")
def get_log_key() -> Response:
    return _text(service.log_key() + "\n", cache="public, max-age=3600")


@blp.get("/proofs/inclusion")
@public
@blp.arguments(InclusionQuery, location="query")
@blp.response(200, InclusionProofOut)
def get_inclusion(query: dict[str, Any]) -> dict[str, Any]:
    with _query_fields():
        found = service.inclusion(get_session(), query["index"], query["size"])
    return {
        "index": found.index,
        "size": found.size,
        "leaf_hash": _b64(found.leaf_hash),
        "root": _b64(found.root),
        "proof": [_b64(h) for h in found.proof],
    }


@blp.get("/proofs/consistency")
@public
@blp.arguments(ConsistencyQuery, location="query")
@blp.response(200, ConsistencyProofOut)
def get_consistency(query: dict[str, Any]) -> dict[str, Any]:
    with _query_fields():
        found = service.consistency(get_session(), query["first"], query["second"])
    return {
        "first": found.first,
        "second": found.second,
        "first_root": _b64(found.first_root),
        "second_root": _b64(found.second_root),
        "proof": [_b64(h) for h in found.proof],
    }


@blp.get("/entries")
@require_oauth("audit:read")
@blp.arguments(EntriesQuery, location="query", unknown=RAISE)  # a mistyped filter is refused
@blp.response(200, EntriesOut)
def list_entries(query: dict[str, Any]) -> dict[str, Any]:
    session = get_session()
    start, limit = query.pop("start"), query.pop("limit")
    directory = current_app.extensions.get("audit.directory")
    with _query_fields():
        filters = browse.parse_filters(session, query, directory)
    size, found, after = browse.sealed_entries(session, filters, start=start, limit=limit)
    return {
        "size": size,
        "start": start,
        "next": after,
        "entries": [{"index": leaf.index, "leaf": _b64(leaf.leaf)} for leaf in found],
    }
