"""The consent API as a client sees it: problems on bad input, no IDOR, verifiable receipts."""

from __future__ import annotations

import uuid

import jwt
import pytest
from sqlalchemy import func, select

from audit.models import AuditEntry
from charter.document import terms_hash
from common.keyring import app_keyring
from common.outbox import OutboxMessage, relay_outbox
from consent.models import Consent
from tests.conftest import ISSUER


def body(charter, purpose_id="energy-coaching", **extra):
    purpose = charter.require_purpose(purpose_id)
    recipient = purpose.recipient_ids[0]
    return {
        "purpose_id": purpose_id,
        "terms_hash": terms_hash(purpose),
        "recipient_id": recipient,
        **extra,
    }


def rows(session, model):
    return session.scalar(select(func.count()).select_from(model))


def give(citizen, charter, **extra):
    response = citizen.client.post(
        "/api/v1/consents", json=body(charter, **extra), headers=citizen.headers
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_a_citizen_gives_lists_and_withdraws_a_consent(citizen, charter):
    created = give(citizen, charter)
    assert created["status"] == "given"
    assert created["recipient"]["kind"] == "organisation"
    listed = citizen.client.get("/api/v1/consents").get_json()
    assert [c["id"] for c in listed] == [created["id"]]
    withdrawn = citizen.client.post(
        f"/api/v1/consents/{created['id']}/withdraw", headers=citizen.headers
    )
    assert withdrawn.status_code == 200
    assert withdrawn.get_json()["status"] == "withdrawn"
    history = citizen.client.get(f"/api/v1/consents/{created['id']}/history").get_json()
    assert [e["type"] for e in history["events"]] == ["given", "withdrawn"]


def test_the_receipt_verifies_with_nothing_but_the_published_jwks_even_after_rotation(
    app, citizen, charter
):
    created = give(citizen, charter)
    receipt = citizen.client.get(f"/api/v1/consents/{created['id']}/receipt")
    assert receipt.mimetype == "application/jose"
    token = receipt.get_data(as_text=True)
    app_keyring().rotate()
    jwks = citizen.client.get("/.well-known/jwks.json").get_json()
    assert len(jwks["keys"]) >= 2
    # PyJWT alone, as an auditor or a reuser would do it.
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"], issuer=ISSUER)
    assert claims["consent"]["id"] == created["id"]
    assert claims["consent"]["status"] == "given"
    assert claims["consent"]["purpose"]["terms_hash"] == created["terms_hash"]


def test_a_tampered_receipt_does_not_verify(citizen, charter):
    created = give(citizen, charter)
    token = citizen.client.get(f"/api/v1/consents/{created['id']}/receipt").get_data(as_text=True)
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload[:-4]}AAAA.{signature}"
    jwks = citizen.client.get("/.well-known/jwks.json").get_json()
    jwk = next(k for k in jwks["keys"] if k["kid"] == jwt.get_unverified_header(token)["kid"])
    with pytest.raises(jwt.PyJWTError):
        jwt.decode(forged, jwt.PyJWK(jwk).key, algorithms=["ES256"], issuer=ISSUER)


def test_a_citizen_can_neither_read_nor_withdraw_another_citizens_consent(
    session, citizen, other_citizen, charter
):
    created = give(citizen, charter)
    audit_before = rows(session, AuditEntry)
    for response in (
        other_citizen.client.get(f"/api/v1/consents/{created['id']}"),
        other_citizen.client.get(f"/api/v1/consents/{created['id']}/receipt"),
        other_citizen.client.get(f"/api/v1/consents/{created['id']}/jsonld"),
        other_citizen.client.post(
            f"/api/v1/consents/{created['id']}/withdraw", headers=other_citizen.headers
        ),
        other_citizen.client.post(
            f"/api/v1/consents/{created['id']}/renew",
            json={"terms_hash": created["terms_hash"]},
            headers=other_citizen.headers,
        ),
    ):
        assert response.status_code == 404
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["type"] == "/problems/not-found"
    assert other_citizen.client.get("/api/v1/consents").get_json() == []
    session.expire_all()
    assert session.get(Consent, uuid.UUID(created["id"])).status.value == "given"
    assert rows(session, AuditEntry) == audit_before


def test_without_a_session_the_api_answers_401_problem(client, charter):
    response = client.get("/api/v1/consents")
    assert response.status_code == 401
    assert response.get_json()["type"] == "/problems/unauthorized"


def test_a_post_without_the_csrf_header_is_refused_and_changes_nothing(session, citizen, charter):
    before = rows(session, Consent)
    response = citizen.client.post("/api/v1/consents", json=body(charter))
    assert response.status_code == 403
    assert response.get_json()["type"] == "/problems/csrf-failed"
    assert rows(session, Consent) == before


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"purpose_id": 42}, "purpose_id"),
        ({"terms_hash": "not-a-hash"}, "terms_hash"),
        ({"duration_days": "thirty"}, "duration_days"),
        ({"duration_days": 12.5}, "duration_days"),
        ({"mode": "everything"}, "mode"),
        ({"unexpected": True}, "unexpected"),
        ({"data_categories": "energy"}, "data_categories"),
        ({"language": "de"}, "language"),
    ],
)
def test_wrong_types_and_unknown_fields_get_field_messages_and_write_nothing(
    session, citizen, charter, payload, field
):
    before = (rows(session, Consent), rows(session, AuditEntry), rows(session, OutboxMessage))
    response = citizen.client.post(
        "/api/v1/consents", json={**body(charter), **payload}, headers=citizen.headers
    )
    assert response.status_code == 422
    problem = response.get_json()
    assert response.mimetype == "application/problem+json"
    assert problem["type"] == "/problems/invalid-input"
    assert field in problem["errors"]
    assert (
        rows(session, Consent),
        rows(session, AuditEntry),
        rows(session, OutboxMessage),
    ) == before


def test_a_missing_required_field_is_named(citizen, charter):
    response = citizen.client.post(
        "/api/v1/consents", json={"purpose_id": "energy-coaching"}, headers=citizen.headers
    )
    assert response.status_code == 422
    assert {"terms_hash", "recipient_id"} <= set(response.get_json()["errors"])


def test_bad_json_is_a_400_problem(citizen, charter):
    response = citizen.client.post(
        "/api/v1/consents",
        data="{not json",
        content_type="application/json",
        headers=citizen.headers,
    )
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"


def test_a_json_array_body_is_refused_cleanly(citizen, charter):
    response = citizen.client.post("/api/v1/consents", json=[1, 2], headers=citizen.headers)
    assert response.status_code in (400, 422)
    assert response.mimetype == "application/problem+json"


def test_an_oversized_body_is_a_413_problem(session, citizen, charter):
    before = rows(session, Consent)
    huge = {**body(charter), "justification": "x" * (70 * 1024)}
    response = citizen.client.post("/api/v1/consents", json=huge, headers=citizen.headers)
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert rows(session, Consent) == before


def test_a_charter_refusal_is_a_422_problem_with_fields(citizen, charter):
    response = citizen.client.post(
        "/api/v1/consents", json=body(charter, recipient_id="someone-else"), headers=citizen.headers
    )
    assert response.status_code == 422
    assert "recipient_id" in response.get_json()["errors"]


def test_a_duplicate_consent_is_a_409_problem(citizen, charter):
    give(citizen, charter)
    response = citizen.client.post("/api/v1/consents", json=body(charter), headers=citizen.headers)
    assert response.status_code == 409
    assert response.get_json()["type"] == "/problems/conflict"


def test_an_unknown_consent_id_is_404_and_a_malformed_one_too(citizen, charter):
    assert citizen.client.get(f"/api/v1/consents/{uuid.uuid4()}").status_code == 404
    response = citizen.client.get("/api/v1/consents/not-a-uuid")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_a_down_broker_delays_delivery_but_refuses_nothing(session, citizen, charter, monkeypatch):
    created = give(citizen, charter)

    def broker_down(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(relay_outbox, "apply_async", broker_down)
    response = citizen.client.post(
        f"/api/v1/consents/{created['id']}/withdraw", headers=citizen.headers
    )
    assert response.status_code == 200
    pending = session.scalar(
        select(OutboxMessage).where(OutboxMessage.topic == "consent.withdrawn")
    )
    assert pending is not None
    assert pending.delivered_at is None  # kept for the periodic relay


def test_with_the_broker_up_the_relay_delivers_after_commit(session, citizen, charter):
    give(citizen, charter)
    message = session.scalar(select(OutboxMessage).where(OutboxMessage.topic == "consent.given"))
    assert message is not None
    assert message.delivered_at is not None


def test_the_jsonld_export_of_all_consents(citizen, charter):
    give(citizen, charter)
    give(citizen, charter, purpose_id="energy-observatory")
    response = citizen.client.get("/api/v1/consents/export")
    assert response.mimetype == "application/ld+json"
    assert len(response.get_json()["@graph"]) == 2


def test_openapi_documents_the_consent_api(client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert "/api/v1/consents" in spec["paths"]
    assert "/api/v1/consents/{consent_id}/withdraw" in spec["paths"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/me",
        "/api/v1/consents",
        "/api/v1/consents/export",
        f"/api/v1/consents/{uuid.uuid4()}/history",
    ],
)
def test_every_citizen_read_needs_a_session(client, charter, path):
    response = client.get(path)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"


def test_another_citizens_history_is_not_found(citizen, other_citizen, charter):
    created = give(citizen, charter)
    response = other_citizen.client.get(f"/api/v1/consents/{created['id']}/history")
    assert response.status_code == 404
    assert response.get_json()["type"] == "/problems/not-found"


def test_an_unknown_status_filter_is_a_field_error(citizen, charter):
    response = citizen.client.get("/api/v1/consents?status=maybe")
    assert response.status_code == 422
    assert "query.status" in response.get_json()["errors"]


@pytest.mark.parametrize("action", ["withdraw", "renew"])
def test_withdraw_and_renew_without_the_csrf_header_change_nothing(
    session, citizen, charter, action
):
    created = give(citizen, charter)
    events_before = rows(session, AuditEntry)
    response = citizen.client.post(
        f"/api/v1/consents/{created['id']}/{action}", json={"terms_hash": created["terms_hash"]}
    )
    assert response.status_code == 403
    assert response.get_json()["type"] == "/problems/csrf-failed"
    assert rows(session, AuditEntry) == events_before


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"terms_hash": None}, "terms_hash"),
        ({"terms_hash": "zz"}, "terms_hash"),
        ({"terms_hash": "0" * 64}, "terms_hash"),
        ({"duration_days": 0}, "duration_days"),
        ({"language": "it"}, "language"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_a_bad_renewal_is_a_field_error_and_renews_nothing(
    session, citizen, charter, payload, field
):
    created = give(citizen, charter)
    body_ = {"terms_hash": created["terms_hash"], **payload}
    body_ = {k: v for k, v in body_.items() if v is not None}  # None: leave the field out
    before = rows(session, AuditEntry)
    response = citizen.client.post(
        f"/api/v1/consents/{created['id']}/renew", json=body_, headers=citizen.headers
    )
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["errors"]
    assert rows(session, AuditEntry) == before
    history = citizen.client.get(f"/api/v1/consents/{created['id']}/history").get_json()
    assert [e["type"] for e in history["events"]] == ["given"]


def test_renewing_a_withdrawn_consent_is_a_409_problem(citizen, charter):
    created = give(citizen, charter)
    citizen.client.post(f"/api/v1/consents/{created['id']}/withdraw", headers=citizen.headers)
    response = citizen.client.post(
        f"/api/v1/consents/{created['id']}/renew",
        json={"terms_hash": created["terms_hash"]},
        headers=citizen.headers,
    )
    assert response.status_code == 409
    assert response.get_json()["type"] == "/problems/conflict"


def test_a_renewal_through_the_api_is_recorded(citizen, charter):
    created = give(citizen, charter)
    response = citizen.client.post(
        f"/api/v1/consents/{created['id']}/renew",
        json={"terms_hash": created["terms_hash"]},
        headers=citizen.headers,
    )
    assert response.status_code == 200
    history = citizen.client.get(f"/api/v1/consents/{created['id']}/history").get_json()
    assert [e["type"] for e in history["events"]] == ["given", "renewed"]
