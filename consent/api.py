"""REST API of a citizen's consents: for the citizen's own portal session (cookie +
X-CSRFToken header), or for an app the citizen authorised (an access token acting for them,
with `consent:read` / `consent:write`)."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response
from flask_wtf.csrf import generate_csrf

from common.auth import (
    citizen_required,
    current_citizen,
    current_subject_id,
    require_oauth,
    visible_recipients,
)
from common.db import get_session, unit_of_work
from common.http import ApiBlueprint, jsonld_response
from consent import service
from consent.models import Consent
from consent.schemas import (
    ConsentOut,
    ConsentQuery,
    ConsentWithHistoryOut,
    GiveConsentIn,
    RenewConsentIn,
    SessionOut,
)

blp = ApiBlueprint(
    "consents", __name__, url_prefix="/api/v1", description="A citizen's consents and receipts"
)


@blp.get("/me")
@require_oauth(citizen_session=True)
@citizen_required
@blp.response(200, SessionOut)
def me() -> dict[str, Any]:
    citizen = current_citizen()
    assert citizen is not None  # noqa: S101 (citizen_required)
    return {
        "subject_id": citizen.subject_id,
        "language": citizen.language,
        "csrf_token": generate_csrf(),
    }


@blp.post("/consents")
@require_oauth("consent:write", citizen_session=True)
@blp.arguments(GiveConsentIn)
@blp.response(201, ConsentOut)
def give_consent(data: dict[str, Any]) -> Consent:
    with unit_of_work() as session:
        return service.give(
            session,
            service.GiveConsent(
                subject_id=current_subject_id(),
                method="api",
                recipients=visible_recipients(),
                data_categories=tuple(data.pop("data_categories")),
                datasets=tuple(data.pop("datasets")),
                **data,
            ),
        )


@blp.get("/consents")
@require_oauth("consent:read", citizen_session=True)
@blp.arguments(ConsentQuery, location="query")
@blp.response(200, ConsentOut(many=True))
def list_consents(query: dict[str, Any]) -> list[Consent]:
    statuses = [query["status"]] if query.get("status") else []
    return service.list_for_subject(
        get_session(), current_subject_id(), statuses=statuses, recipients=visible_recipients()
    )


@blp.get("/consents/<uuid:consent_id>")
@require_oauth("consent:read", citizen_session=True)
@blp.response(200, ConsentOut)
def get_consent(consent_id: uuid.UUID) -> Consent:
    return service.get_for_subject(
        get_session(), current_subject_id(), consent_id, recipients=visible_recipients()
    )


@blp.get("/consents/<uuid:consent_id>/history")
@require_oauth("consent:read", citizen_session=True)
@blp.response(200, ConsentWithHistoryOut)
def consent_history(consent_id: uuid.UUID) -> Consent:
    return service.get_for_subject(
        get_session(), current_subject_id(), consent_id, recipients=visible_recipients()
    )


@blp.post("/consents/<uuid:consent_id>/withdraw")
@require_oauth("consent:write", citizen_session=True)
@blp.response(200, ConsentOut)
def withdraw_consent(consent_id: uuid.UUID) -> Consent:
    with unit_of_work() as session:
        return service.withdraw(
            session,
            subject_id=current_subject_id(),
            consent_id=consent_id,
            method="api",
            recipients=visible_recipients(),
        )


@blp.post("/consents/<uuid:consent_id>/renew")
@require_oauth("consent:write", citizen_session=True)
@blp.arguments(RenewConsentIn)
@blp.response(200, ConsentOut)
def renew_consent(data: dict[str, Any], consent_id: uuid.UUID) -> Consent:
    with unit_of_work() as session:
        return service.renew(
            session,
            service.RenewConsent(
                subject_id=current_subject_id(),
                consent_id=consent_id,
                method="api",
                recipients=visible_recipients(),
                **data,
            ),
        )


@blp.get("/consents/<uuid:consent_id>/receipt")
@require_oauth("consent:read", citizen_session=True)
@blp.response(200, content_type="application/jose")
def consent_receipt(consent_id: uuid.UUID) -> Response:
    consent = service.get_for_subject(
        get_session(), current_subject_id(), consent_id, recipients=visible_recipients()
    )
    return Response(consent.receipt, mimetype="application/jose")


@blp.get("/consents/<uuid:consent_id>/jsonld")
@require_oauth("consent:read", citizen_session=True)
@blp.response(200, content_type="application/ld+json")
def consent_jsonld(consent_id: uuid.UUID) -> Response:
    session = get_session()
    consent = service.get_for_subject(
        session, current_subject_id(), consent_id, recipients=visible_recipients()
    )
    return jsonld_response(service.to_jsonld(consent, service.current_doc(session)))


@blp.get("/consents/export")
@require_oauth("consent:read", citizen_session=True)
@blp.response(200, content_type="application/ld+json")
def export_consents() -> Response:
    return jsonld_response(
        service.export_all(get_session(), current_subject_id(), recipients=visible_recipients())
    )
