"""Reusers' access requests and grants, the data gateway, and the committee's decisions on
them (scope `admin`). A reuser only ever sees its own requests and grants (404 otherwise)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response, jsonify, stream_with_context
from marshmallow import RAISE, Schema

from audit import service as audit
from broker.models import AccessGrant, AccessRequest, Notice, NoticeStatus
from broker.oauth import token_issuer
from broker.schemas import (
    AccessRequestIn,
    AccessRequestOut,
    GrantOut,
    NoticeOut,
    NoticeQuery,
    ReasonIn,
    RecordsQuery,
)
from broker.service import access, gateway, notices
from common.auth import current_token, require_oauth
from common.db import get_session, unit_of_work
from common.errors import DomainError, ForbiddenError
from common.http import ApiBlueprint
from common.settings import setting
from common.tasks import celery_app

log = logging.getLogger(__name__)

blp = ApiBlueprint(
    "access",
    __name__,
    url_prefix="/api/v1",
    description="Access requests decided by the charter, grants, and the data gateway",
)


def _caller() -> tuple[uuid.UUID, str]:
    token = current_token()
    if token is None:  # require_oauth ran first; kept for the type checker
        raise ForbiddenError("An access token is required.")
    return token.organisation_id, f"client:{token.client_id}"


@blp.post("/access-requests")
@require_oauth("access:request")
@blp.arguments(AccessRequestIn)
@blp.response(201, AccessRequestOut)
def file_request(data: dict[str, Any]) -> AccessRequest:
    organisation_id, actor = _caller()
    with unit_of_work() as session:
        return access.file_request(
            session, organisation_id=organisation_id, client_pk=None, data=data, actor=actor
        )


@blp.get("/access-requests")
@require_oauth("access:request")
@blp.response(200, AccessRequestOut(many=True))
def list_requests() -> list[AccessRequest]:
    return access.own_requests(get_session(), _caller()[0])


@blp.get("/access-requests/<uuid:request_id>")
@require_oauth("access:request")
@blp.response(200, AccessRequestOut)
def get_request(request_id: uuid.UUID) -> AccessRequest:
    return access.own_request(get_session(), _caller()[0], request_id)


@blp.get("/grants")
@require_oauth("access:request")
@blp.response(200, GrantOut(many=True))
def list_grants() -> list[AccessGrant]:
    return access.own_grants(get_session(), _caller()[0])


@blp.get("/grants/<uuid:grant_id>")
@require_oauth("access:request")
@blp.response(200, GrantOut)
def get_grant(grant_id: uuid.UUID) -> AccessGrant:
    return access.own_grant(get_session(), _caller()[0], grant_id)


@blp.get("/grants/<uuid:grant_id>/records")
@require_oauth("access:request")
@blp.arguments(RecordsQuery, location="query", unknown=RAISE)  # a misspelt filter is refused
@blp.response(200, description="A JSON object streamed: the records, then the access receipt.")
def grant_records(query: dict[str, Any], grant_id: uuid.UUID) -> Response:
    organisation_id, actor = _caller()
    timeout = float(setting("GATEWAY_HOLDER_TIMEOUT"))
    with unit_of_work() as session:  # checked, then recorded, before the first byte
        read = gateway.open_read(
            session,
            organisation_id=organisation_id,
            grant_id=grant_id,
            since=query.get("since"),
            until=query.get("until"),
            issuer=token_issuer(),
            actor=actor,
            timeout=timeout,
        )
    response = Response(
        stream_with_context(_stream(read, actor, timeout)), mimetype="application/json"
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Tiers-Access-Entry"] = str(read.entry_id)
    return response


def _stream(read: gateway.Read, actor: str, timeout: float) -> Iterator[str]:
    """`{"grant":…, "records":[…], "complete":true, "receipt":…}`; cut short (no closing
    bracket, so not valid JSON) if a holder fails mid-stream."""
    head = {
        "grant": str(read.grant.id),
        "purpose": read.grant.purpose_id,
        "served_at": read.served_at.isoformat(),
        "subjects": read.subjects,
        "access_entry": str(read.entry_id),
    }
    yield json.dumps(head, ensure_ascii=False)[:-1] + ', "records": ['
    count = 0
    try:
        # One write per holder page, not per record: a chunk (and a send) per record was most
        # of the gateway's time (bench/gateway.py). A page's records are one JSON array, so
        # its inside is exactly the records joined by commas.
        for page in gateway.pages(read, timeout=timeout):
            yield ("," if count else "") + json.dumps(page, ensure_ascii=False)[1:-1]
            count += len(page)
    except DomainError as exc:
        log.warning("grant %s: the stream was cut short: %s", read.grant.id, exc.detail)
        with unit_of_work() as session:
            gateway.record_interruption(session, read, actor, exc.detail)
        return
    tail = {"count": count, "complete": True, "receipt": _receipt(read.entry_id)}
    yield "]," + json.dumps(tail, ensure_ascii=False)[1:]


def _receipt(entry_id: uuid.UUID, attempts: int = 20) -> str | None:
    """The access's C2SP tlog-proof. Sealed now if the integrator has not yet done so; each
    step in its own transaction (a checkpoint is signed only once its head is committed)."""
    for attempt in range(attempts):
        with unit_of_work() as session:
            found = audit.receipt(session, entry_id)
        if found is not None:
            return found
        with unit_of_work() as session:
            audit.integrate(session)
        with unit_of_work() as session:
            audit.sign_pending(session)
        if attempt:
            time.sleep(0.1)  # another integrator holds the lock: it is sealing right now
    return None


# --- the committee ---------------------------------------------------------------------------


@blp.get("/admin/access-requests")
@require_oauth("admin")
@blp.response(200, AccessRequestOut(many=True))
def committee_requests() -> list[AccessRequest]:
    return access.all_requests(get_session())


# One route per resource, the action in the path (Werkzeug's `any` converter): the OpenAPI
# document lists the actions as the enum of `{action}`, and each action's answer below.
_DECISIONS: dict[str, tuple[Callable[..., Any], Schema, int]] = {
    "approve": (access.approve, GrantOut(), 201),
    "reject": (access.reject, AccessRequestOut(), 200),
}
_GRANT_CHANGES: dict[str, Callable[..., AccessGrant]] = {
    "suspend": access.suspend,
    "resume": access.resume,
}


@blp.post(
    "/admin/access-requests/<uuid:request_id>/<any(approve, reject):action>",
    parameters=[
        {
            "in": "path",
            "name": "action",
            "description": "`approve` creates the grant (201); `reject` closes the request (200).",
        }
    ],
)
@require_oauth("admin")
@blp.arguments(ReasonIn)
@blp.alt_response(201, schema=GrantOut, description="Approved: the grant made.", success=True)
@blp.alt_response(
    200, schema=AccessRequestOut, description="Rejected: the request, closed.", success=True
)
def decide_request(data: dict[str, Any], request_id: uuid.UUID, action: str) -> Response:
    """Approve or reject a request the charter left to the committee, always with a reason.

    `approve` answers the grant it creates (201), `reject` the closed request (200); a request
    already decided answers 409.
    """
    decide, out, status = _DECISIONS[action]
    with unit_of_work() as session:
        decided = decide(session, request_id, actor=_caller()[1], reason=data["reason"])
    response = jsonify(out.dump(decided))
    response.status_code = status
    return response


@blp.post(
    "/admin/grants/<uuid:grant_id>/<any(suspend, resume):action>",
    parameters=[
        {
            "in": "path",
            "name": "action",
            "description": "`suspend` stops the grant's reads at once; `resume` allows them again.",
        }
    ],
)
@require_oauth("admin")
@blp.arguments(ReasonIn)
@blp.response(200, GrantOut)
def change_grant(data: dict[str, Any], grant_id: uuid.UUID, action: str) -> AccessGrant:
    """Suspend or resume a grant, always with a reason.

    Suspending a suspended grant, or resuming one that is not, answers 409.
    """
    with unit_of_work() as session:
        return _GRANT_CHANGES[action](session, grant_id, actor=_caller()[1], reason=data["reason"])


# --- withdrawal notices ----------------------------------------------------------------------


@blp.get("/notices")
@require_oauth("access:request")
@blp.response(200, NoticeOut(many=True))
def list_notices() -> list[Notice]:
    """The withdrawal notices owed to the caller's organisation, newest first."""
    return notices.own(get_session(), _caller()[0])


@blp.post("/notices/<uuid:notice_id>/deletion")
@require_oauth("access:request")
@blp.response(200, NoticeOut)
def confirm_deletion(notice_id: uuid.UUID) -> Notice:
    """The reuser erased the citizen's data it had received: the citizen sees it."""
    with unit_of_work() as session:
        return notices.confirm_deletion(session, _caller()[0], notice_id)


@blp.get("/admin/notices")
@require_oauth("admin")
@blp.arguments(NoticeQuery, location="query", unknown=RAISE)
@blp.response(200, NoticeOut(many=True))
def committee_notices(query: dict[str, Any]) -> list[Notice]:
    status = NoticeStatus(query["status"]) if query.get("status") else None
    return notices.all_notices(get_session(), status)


@blp.post("/admin/notices/<uuid:notice_id>/retry")
@require_oauth("admin")
@blp.response(200, NoticeOut)
def retry_notice(notice_id: uuid.UUID) -> Notice:
    with unit_of_work() as session:
        notice = notices.retry(session, notice_id, actor=_caller()[1])
    celery_app.tasks["broker.deliver_notice"].apply_async(args=[str(notice_id)])
    return notice
