"""Access requests decided by the charter, the committee's decisions, grants and the public
register: every outcome, every bad input (nothing written), and no reuser seeing another's."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from broker.models import AccessGrant, AccessRequest
from common.clock import utcnow
from tests.gateway.conftest import ServedHolder, request_body


def _count(session: Session, model: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_a_permitted_request_becomes_a_grant_with_its_obligations(
    client: FlaskClient, electricity: ServedHolder, reuser: dict[str, str]
) -> None:
    answer = client.post(
        "/api/v1/access-requests", json=request_body(electricity.dataset), headers=reuser
    )
    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    assert (body["decision"], body["status"], body["decided_by"]) == (
        "permit",
        "approved",
        "charter",
    )
    kinds = {o["type"]: o for o in body["obligations"]}
    assert kinds["retention"] == {
        "type": "retention",
        "days": 365,
        "clause": "purposes.energy-coaching.retention_days",
    }
    assert "pseudonymise" in kinds
    # The sensitive district and the holder's meter number are not served by default.
    dataset = str(electricity.dataset.id)
    assert body["fields"] == {dataset: ["date", "energy_wh"]}
    assert kinds["drop_fields"]["fields"] == {dataset: ["prm", "district"]}
    grants = client.get("/api/v1/grants", headers=reuser).get_json()
    assert [g["request"] for g in grants] == [body["id"]]
    assert grants[0]["status"] == "active"
    assert grants[0]["links"]["records"] == f"/api/v1/grants/{grants[0]['id']}/records"


def test_the_charter_denies_with_the_clause_behind_each_reason(
    client: FlaskClient, session: Session, electricity: ServedHolder, oauth_headers: Any
) -> None:
    stranger = oauth_headers("reuser", "access:request", category="company")  # not named
    answer = client.post(
        "/api/v1/access-requests",
        json=request_body(electricity.dataset, mode="aggregate"),
        headers=stranger,
    )
    assert answer.status_code == 201
    body = answer.get_json()
    assert (body["decision"], body["status"]) == ("deny", "denied")
    clauses = {r["clause"] for r in body["reasons"]}
    assert clauses == {"purposes.energy-coaching.named_reusers", "purposes.energy-coaching.modes"}
    assert body["obligations"] == []
    assert _count(session, AccessGrant) == 0


def test_a_category_the_purpose_excludes_is_denied(
    client: FlaskClient, electricity: ServedHolder, oauth_headers: Any
) -> None:
    research = oauth_headers("reuser", "access:request", category="research")
    answer = client.post(
        "/api/v1/access-requests",
        json=request_body(electricity.dataset, purpose="social-aid-simulation"),
        headers=research,
    )
    body = answer.get_json()
    assert body["decision"] == "deny"
    assert "purposes.social-aid-simulation.reuser_categories" in {
        r["clause"] for r in body["reasons"]
    }


def test_sensitive_fields_need_the_committee_who_approve_with_a_reason(
    client: FlaskClient,
    session: Session,
    electricity: ServedHolder,
    reuser: dict[str, str],
    oauth_headers: Any,
) -> None:
    dataset = str(electricity.dataset.id)
    body = request_body(electricity.dataset, fields={dataset: ["date", "energy_wh", "district"]})
    filed = client.post("/api/v1/access-requests", json=body, headers=reuser).get_json()
    assert (filed["decision"], filed["status"]) == ("needs_approval", "pending")
    assert filed["reasons"][0]["clause"] == "purposes.energy-coaching.data_categories"
    assert client.get("/api/v1/grants", headers=reuser).get_json() == []

    committee = oauth_headers("committee", "admin", category=None)
    url = f"/api/v1/admin/access-requests/{filed['id']}"
    # A reuser cannot approve its own request.
    assert client.post(f"{url}/approve", json={"reason": "ok"}, headers=reuser).status_code == 403
    missing = client.post(f"{url}/approve", json={}, headers=committee)
    assert missing.status_code == 422
    assert "reason" in missing.get_json()["errors"]
    blank = client.post(f"{url}/approve", json={"reason": "   "}, headers=committee)
    assert blank.status_code == 422
    assert _count(session, AccessGrant) == 0

    grant = client.post(
        f"{url}/approve", json={"reason": "The adviser needs the district."}, headers=committee
    )
    assert grant.status_code == 201
    assert grant.get_json()["fields"] == {dataset: ["date", "energy_wh", "district"]}
    again = client.post(f"{url}/approve", json={"reason": "twice"}, headers=committee)
    assert again.status_code == 409
    decided = client.get(f"/api/v1/access-requests/{filed['id']}", headers=reuser).get_json()
    assert decided["status"] == "approved"
    assert decided["decision_note"] == "The adviser needs the district."


def test_the_committee_rejects_and_no_grant_is_made(
    client: FlaskClient,
    session: Session,
    electricity: ServedHolder,
    reuser: dict[str, str],
    oauth_headers: Any,
) -> None:
    dataset = str(electricity.dataset.id)
    body = request_body(electricity.dataset, fields={dataset: ["district"]})
    filed = client.post("/api/v1/access-requests", json=body, headers=reuser).get_json()
    committee = oauth_headers("committee", "admin", category=None)
    url = f"/api/v1/admin/access-requests/{filed['id']}/reject"
    rejected = client.post(url, json={"reason": "Not needed for coaching."}, headers=committee)
    assert rejected.status_code == 200
    assert rejected.get_json()["status"] == "rejected"
    assert _count(session, AccessGrant) == 0
    unknown = f"/api/v1/admin/access-requests/{uuid.uuid4()}/reject"
    assert client.post(unknown, json={"reason": "x"}, headers=committee).status_code == 404


def test_bad_requests_are_refused_by_field_and_write_nothing(
    client: FlaskClient, session: Session, electricity: ServedHolder, reuser: dict[str, str]
) -> None:
    dataset = electricity.dataset
    past = (utcnow() - timedelta(days=1)).isoformat()
    cases = [
        (request_body(dataset, datasets=[str(uuid.uuid4())]), "datasets[0]"),
        (request_body(dataset, datasets=["not-a-uuid"]), "datasets[0]"),
        (request_body(dataset, datasets=[]), "datasets"),
        (request_body(dataset, mode="bulk"), "mode"),
        (request_body(dataset, justification="short"), "justification"),
        (request_body(dataset, period_end=past), "period_end"),
        (request_body(dataset, period_end="tomorrow"), "period_end"),
        (
            request_body(dataset, period_end=(utcnow() + timedelta(days=2000)).isoformat()),
            "period_end",
        ),
        (request_body(dataset, fields={str(dataset.id): ["prm"]}), f"fields.{dataset.id}"),
        (request_body(dataset, fields={str(dataset.id): ["nope"]}), f"fields.{dataset.id}"),
        (request_body(dataset, fields={str(uuid.uuid4()): ["date"]}), None),
        ({**request_body(dataset), "extra": 1}, "extra"),
        # They parse, and UTC cannot hold them (an OverflowError, not a 500).
        (request_body(dataset, period_end="9999-12-31T23:59:59-14:00"), "period_end"),
        (request_body(dataset, period_start="0001-01-01T00:00:00+14:00"), "period_start"),
        (
            request_body(dataset, justification="Coaching households\x00 as allowed."),
            "justification",
        ),
    ]
    for body, field in cases:
        answer = client.post("/api/v1/access-requests", json=body, headers=reuser)
        assert answer.status_code == 422, (body, answer.get_json())
        assert answer.mimetype == "application/problem+json"
        if field is not None:
            assert field in answer.get_json()["errors"], (field, answer.get_json())
    assert client.post(
        "/api/v1/access-requests", data="{", headers={**reuser, "Content-Type": "application/json"}
    ).status_code in (400, 422)
    assert _count(session, AccessRequest) == 0


def test_open_data_needs_no_request(
    client: FlaskClient, session: Session, make_client: Any, reuser: dict[str, str]
) -> None:
    from broker.service import datasets
    from tests.datasets.helpers import open_body

    holder = make_client(
        "holder", category=None, scope="datasets:write", resource_uri="https://city.example"
    )
    from flask import current_app

    with current_app.test_request_context():
        opened = datasets.register(
            session,
            holder_id=holder.model.organisation.id,
            settings=open_body("https://city.example/buildings"),
            actor="test",
        )
    session.commit()
    answer = client.post("/api/v1/access-requests", json=request_body(opened), headers=reuser)
    assert answer.status_code == 422
    assert "Open data" in answer.get_json()["errors"]["datasets[0]"][0]


def test_a_reuser_never_sees_another_reusers_requests_or_grants(
    client: FlaskClient,
    electricity: ServedHolder,
    reuser: dict[str, str],
    other_reuser: dict[str, str],
) -> None:
    filed = client.post(
        "/api/v1/access-requests", json=request_body(electricity.dataset), headers=reuser
    ).get_json()
    grant = client.get("/api/v1/grants", headers=reuser).get_json()[0]
    assert (
        client.get(f"/api/v1/access-requests/{filed['id']}", headers=other_reuser).status_code
        == 404
    )
    assert client.get(f"/api/v1/grants/{grant['id']}", headers=other_reuser).status_code == 404
    assert (
        client.get(f"/api/v1/grants/{grant['id']}/records", headers=other_reuser).status_code == 404
    )
    assert client.get("/api/v1/grants", headers=other_reuser).get_json() == []
    assert client.get("/api/v1/access-requests", headers=other_reuser).get_json() == []


def test_roles_without_access_request_scope_are_refused(
    client: FlaskClient, electricity: ServedHolder, oauth_headers: Any
) -> None:
    holder = oauth_headers("holder", "datasets:write", category=None)
    assert (
        client.post(
            "/api/v1/access-requests", json=request_body(electricity.dataset), headers=holder
        ).status_code
        == 403
    )
    assert client.get("/api/v1/grants").status_code == 401


def test_suspend_and_resume_are_the_committees_and_need_a_reason(
    client: FlaskClient, electricity: ServedHolder, reuser: dict[str, str], oauth_headers: Any
) -> None:
    client.post("/api/v1/access-requests", json=request_body(electricity.dataset), headers=reuser)
    grant = client.get("/api/v1/grants", headers=reuser).get_json()[0]
    committee = oauth_headers("committee", "admin", category=None)
    url = f"/api/v1/admin/grants/{grant['id']}"
    assert client.post(f"{url}/suspend", json={"reason": "x"}, headers=reuser).status_code == 403
    assert client.post(f"{url}/suspend", json={}, headers=committee).status_code == 422
    suspended = client.post(
        f"{url}/suspend", json={"reason": "Complaint under review."}, headers=committee
    )
    assert suspended.get_json()["status"] == "suspended"
    assert (
        client.post(f"{url}/suspend", json={"reason": "again"}, headers=committee).status_code
        == 409
    )
    resumed = client.post(f"{url}/resume", json={"reason": "Complaint closed."}, headers=committee)
    assert resumed.get_json()["status"] == "active"
    assert (
        client.post(f"{url}/resume", json={"reason": "again"}, headers=committee).status_code == 409
    )


def test_committee_routes_refuse_everyone_else_and_bad_reasons_change_nothing(
    client: FlaskClient,
    session: Session,
    electricity: ServedHolder,
    reuser: dict[str, str],
    oauth_headers: Any,
) -> None:
    dataset = str(electricity.dataset.id)
    pending = client.post(
        "/api/v1/access-requests",
        json=request_body(electricity.dataset, fields={dataset: ["district"]}),
        headers=reuser,
    ).get_json()
    committee = oauth_headers("committee", "admin", category=None)
    holder = oauth_headers("holder", "datasets:write", category=None)
    listed = client.get("/api/v1/admin/access-requests", headers=committee)
    assert [r["id"] for r in listed.get_json()] == [pending["id"]]
    for headers, status in ((reuser, 403), (holder, 403), ({}, 401)):
        assert client.get("/api/v1/admin/access-requests", headers=headers).status_code == status
        assert client.get("/api/v1/admin/notices", headers=headers).status_code == status
        unknown = f"/api/v1/admin/notices/{uuid.uuid4()}/retry"
        assert client.post(unknown, headers=headers).status_code == status
    reject = f"/api/v1/admin/access-requests/{pending['id']}/reject"
    for body in ({}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 2001}, {"reason": 3}):
        answer = client.post(reject, json=body, headers=committee)
        assert answer.status_code == 422, body
        assert "reason" in answer.get_json()["errors"]
    assert client.post(reject, json={"reason": "no"}, headers=reuser).status_code == 403
    assert (
        client.get(f"/api/v1/access-requests/{pending['id']}", headers=reuser).get_json()["status"]
        == "pending"
    )
    unknown_grant = f"/api/v1/admin/grants/{uuid.uuid4()}/resume"
    assert client.post(unknown_grant, json={"reason": "x"}, headers=committee).status_code == 404
    assert client.post(unknown_grant, json={"reason": "x"}, headers=reuser).status_code == 403
    assert (
        client.post(f"/api/v1/admin/notices/{uuid.uuid4()}/retry", headers=committee).status_code
        == 404
    )


def test_reuser_routes_need_a_token_and_the_reuser_scope(
    client: FlaskClient, electricity: ServedHolder, reuser: dict[str, str], oauth_headers: Any
) -> None:
    client.post("/api/v1/access-requests", json=request_body(electricity.dataset), headers=reuser)
    grant = client.get("/api/v1/grants", headers=reuser).get_json()[0]["id"]
    holder = oauth_headers("holder", "datasets:write", category=None)
    notice = f"/api/v1/notices/{uuid.uuid4()}/deletion"
    for headers, status in (({}, 401), (holder, 403)):
        assert client.get(f"/api/v1/grants/{grant}/records", headers=headers).status_code == status
        assert client.get("/api/v1/notices", headers=headers).status_code == status
        assert client.post(notice, headers=headers).status_code == status
        assert client.get("/api/v1/access-requests", headers=headers).status_code == status


def test_the_committee_decisions_are_one_route_per_resource_each_action_documented(
    client: FlaskClient, oauth_headers: Any
) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    for path, actions, answers in (
        (
            "/api/v1/admin/access-requests/{request_id}/{action}",
            ["approve", "reject"],
            {"201", "200"},
        ),
        ("/api/v1/admin/grants/{grant_id}/{action}", ["suspend", "resume"], {"200"}),
    ):
        action = next(p for p in paths[path]["parameters"] if p["name"] == "action")
        assert action["schema"]["enum"] == actions
        assert all(f"`{name}`" in action["description"] for name in actions)
        operation = paths[path]["post"]
        assert operation["summary"]
        assert answers <= set(operation["responses"])
        assert "422" in operation["responses"]  # the reason is checked
    committee = oauth_headers("committee", "admin", category=None)
    for url in (
        f"/api/v1/admin/access-requests/{uuid.uuid4()}/explode",
        f"/api/v1/admin/grants/{uuid.uuid4()}/approve",  # a request's action, not a grant's
    ):
        answer = client.post(url, json={"reason": "x"}, headers=committee)
        assert answer.status_code == 404
        assert answer.mimetype == "application/problem+json"
