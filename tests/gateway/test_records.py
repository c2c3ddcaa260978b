"""The gateway against the demo electricity distributor served for real: only consenting,
linked citizens, only allowed fields, per-reuser pseudonyms, a receipt that verifies offline,
and a holder that is down, slow or broken answered with a clear problem and nothing recorded."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audit import notes
from audit import service as audit
from audit.models import AuditEntry
from broker.models import GrantDelivery
from consent import service as consent_service
from tests.gateway.conftest import Territory, request_body

WINDOW = {"since": "2025-03-01T00:00:00+00:00", "until": "2025-03-08T00:00:00+00:00"}


def _grant(client: FlaskClient, territory: Territory, headers: dict[str, str], **body: Any) -> str:
    answer = client.post(
        "/api/v1/access-requests",
        json=request_body(territory.holder.dataset, **body),
        headers=headers,
    )
    assert answer.get_json()["status"] == "approved", answer.get_json()
    grant_id = client.get("/api/v1/grants", headers=headers).get_json()[0]["id"]
    return str(grant_id)


def _read(client: FlaskClient, grant_id: str, headers: dict[str, str], **query: str) -> Any:
    return client.get(
        f"/api/v1/grants/{grant_id}/records", query_string={**WINDOW, **query}, headers=headers
    )


def _served(session: Session) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.event == "broker:records:serve")
        )
        or 0
    )


def test_only_consenting_linked_citizens_are_served_pseudonymised(
    app: Flask, client: FlaskClient, session: Session, territory: Territory, reuser: dict[str, str]
) -> None:
    meters = territory.holder.subjects
    consenting = [territory.citizen(meters[0]), territory.citizen(meters[1])]
    territory.citizen(meters[2], consent=False)  # linked, never consented
    territory.citizen(meters[3], recipient="alec-brevanne")  # consented to another reuser
    grant_id = _grant(client, territory, reuser)

    answer = _read(client, grant_id, reuser)
    assert answer.status_code == 200, answer.get_data(as_text=True)[:500]
    body = json.loads(answer.get_data(as_text=True))
    assert body["complete"] is True
    assert body["subjects"] == 2
    records = body["records"]
    assert body["count"] == len(records) == 2 * 7  # one record per day, seven days each
    assert {tuple(sorted(r)) for r in records} == {("dataset", "date", "energy_wh", "subject")}
    text = answer.get_data(as_text=True)
    for meter in meters[:4]:
        assert meter not in text  # the holder's identifiers never reach the reuser
    for citizen in consenting:
        assert str(citizen.subject_id) not in text
    assert len({r["subject"] for r in records}) == 2
    assert sorted({r["date"] for r in records}) == [f"2025-03-0{d}" for d in range(1, 8)]

    # The receipt is a C2SP tlog-proof of the access's own leaf, signed by the log's key.
    with app.app_context():
        entry = session.scalar(
            select(AuditEntry).where(AuditEntry.id == uuid.UUID(body["access_entry"]))
        )
        assert entry is not None
        assert notes.verify_tlog_proof(
            body["receipt"], entry.leaf, audit.log_key(), audit.log_origin()
        )
    # Each citizen's share is in their own chain; the deliveries say whom to tell on withdrawal.
    assert _served(session) == 1 + 2
    delivered = set(session.scalars(select(GrantDelivery.subject_id)))
    assert delivered == {c.subject_id for c in consenting}


def test_pseudonyms_are_stable_for_a_reuser_and_differ_across_reusers(
    client: FlaskClient, territory: Territory, reuser: dict[str, str], other_reuser: dict[str, str]
) -> None:
    meter = territory.holder.subjects[0]
    citizen = territory.citizen(meter)
    territory.consent(citizen, "alec-brevanne")
    mine = _grant(client, territory, reuser)
    theirs = _grant(client, territory, other_reuser)

    def pseudonyms(grant_id: str, headers: dict[str, str]) -> set[str]:
        return {
            r["subject"] for r in json.loads(_read(client, grant_id, headers).get_data())["records"]
        }

    first = pseudonyms(mine, reuser)
    assert first == pseudonyms(mine, reuser)  # stable across reads
    other = pseudonyms(theirs, other_reuser)
    assert len(first) == len(other) == 1
    assert first != other  # two reusers cannot join their extracts
    # Not derivable without the key: neither the citizen id nor the meter hashes to it.
    import hashlib

    (value,) = first
    for clue in (str(citizen.subject_id), meter):
        assert value not in {hashlib.sha256(clue.encode()).hexdigest()[: len(value)], clue}


def test_a_withdrawal_is_excluded_from_the_very_next_read(
    client: FlaskClient, session: Session, territory: Territory, reuser: dict[str, str]
) -> None:
    meters = territory.holder.subjects
    staying, leaving = territory.citizen(meters[0]), territory.citizen(meters[1])
    grant_id = _grant(client, territory, reuser)
    assert json.loads(_read(client, grant_id, reuser).get_data())["subjects"] == 2
    assert leaving.consent_id is not None
    consent_service.withdraw(
        session, subject_id=leaving.subject_id, consent_id=leaving.consent_id, method="portal"
    )
    session.commit()
    after = json.loads(_read(client, grant_id, reuser).get_data())
    assert after["subjects"] == 1
    assert len({r["subject"] for r in after["records"]}) == 1
    assert staying.consent_id is not None


def test_suspended_expired_and_aggregate_grants_are_refused(
    client: FlaskClient,
    session: Session,
    territory: Territory,
    reuser: dict[str, str],
    oauth_headers: Any,
) -> None:
    territory.citizen(territory.holder.subjects[0])
    grant_id = _grant(client, territory, reuser)
    committee = oauth_headers("committee", "admin", category=None)
    client.post(
        f"/api/v1/admin/grants/{grant_id}/suspend", json={"reason": "Audit."}, headers=committee
    )
    refused = _read(client, grant_id, reuser)
    assert refused.status_code == 403
    assert "suspended" in refused.get_json()["detail"]
    client.post(
        f"/api/v1/admin/grants/{grant_id}/resume", json={"reason": "Done."}, headers=committee
    )
    assert _read(client, grant_id, reuser).status_code == 200

    from broker.models import AccessGrant
    from common.clock import utcnow

    grant = session.get(AccessGrant, uuid.UUID(grant_id))
    assert grant is not None
    grant.expires_at = utcnow()
    session.commit()
    expired = _read(client, grant_id, reuser)
    assert expired.status_code == 403
    assert "expired" in expired.get_json()["detail"]
    grant.mode = "aggregate"
    grant.expires_at = utcnow().replace(year=utcnow().year + 1)
    session.commit()
    assert _read(client, grant_id, reuser).status_code == 409


@pytest.mark.parametrize(
    ("fault", "status"),
    [("down", 503), ("slow:3000", 503), ("malformed", 502), ("malformed:fields", 502)],
)
def test_a_failing_holder_gets_a_problem_and_nothing_is_recorded_as_served(
    app: Flask,
    client: FlaskClient,
    session: Session,
    territory: Territory,
    reuser: dict[str, str],
    fault: str,
    status: int,
) -> None:
    territory.citizen(territory.holder.subjects[0])
    grant_id = _grant(client, territory, reuser)
    app.config["GATEWAY_HOLDER_TIMEOUT"] = 1.0
    territory.holder.fault(fault)
    answer = _read(client, grant_id, reuser)
    assert answer.status_code == status, answer.get_data(as_text=True)[:300]
    assert answer.mimetype == "application/problem+json"
    if status == 503:
        assert int(answer.headers["Retry-After"]) > 0
    assert _served(session) == 0
    assert session.scalar(select(func.count()).select_from(GrantDelivery)) == 0
    territory.holder.fault("none")
    assert _read(client, grant_id, reuser).status_code == 200


def test_bad_windows_are_refused(
    client: FlaskClient, territory: Territory, reuser: dict[str, str]
) -> None:
    grant_id = _grant(client, territory, reuser)
    for query in (
        {"since": "yesterday"},
        {"until": "2025-01-01T00:00:00"},
        {"since": WINDOW["until"], "until": WINDOW["since"]},
        {"limit": "5"},
    ):
        answer = client.get(
            f"/api/v1/grants/{grant_id}/records", query_string=query, headers=reuser
        )
        assert answer.status_code == 422, (query, answer.get_json())
    assert client.get(f"/api/v1/grants/{uuid.uuid4()}/records", headers=reuser).status_code == 404
    assert client.get("/api/v1/grants/not-a-uuid/records", headers=reuser).status_code == 404


def test_the_fail_closed_bound_refuses_reads_until_the_log_is_sealed(
    client: FlaskClient, session: Session, territory: Territory, reuser: dict[str, str]
) -> None:
    from datetime import timedelta

    from common.clock import frozen, utcnow

    territory.citizen(territory.holder.subjects[0])
    grant_id = _grant(client, territory, reuser)
    start = utcnow()
    with frozen(start) as move_to:
        # A leaf the integrator has not sealed (it stopped), older than the bound: 503.
        audit.append(session, event="test:unsealed", actor="test")
        session.flush()
        move_to(start + timedelta(seconds=61))
        refused = _read(client, grant_id, reuser)
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) > 0
        assert _served(session) == 0
    # The integrator back: sealed and signed, the next read is served.
    audit.integrate(session)
    audit.sign_pending(session)
    session.commit()
    assert _read(client, grant_id, reuser).status_code == 200
