"""Staged rows carry the recipient their consent names, and a release reads only the rows
staged for its requester: two observatories of different reuser categories, citizens
consenting for one only (or for both, counted once by each)."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from anonymize import pushdown
from anonymize.models import StagedRecord
from anonymize.service import contributions
from broker.service import ingestion
from broker.tasks import ingest_aggregates
from charter import service as charters
from common.clock import utcnow
from consent import service as consent_service
from consent.models import Mode
from tests.anonymize.conftest import aggregate_grant
from tests.ingestion.conftest import PURPOSE, Citizen, Territory


def consent_also(session: Session, citizen: Citizen, recipient: str) -> None:
    charter = charters.current(session)
    consent_service.give(
        session,
        consent_service.GiveConsent(
            subject_id=citizen.subject_id,
            purpose_id=PURPOSE,
            terms_hash=charter.row.terms_hashes[PURPOSE],
            recipient_id=recipient,
            mode=Mode.AGGREGATE,
        ),
    )
    session.commit()


def body(dataset_id: Any) -> dict[str, Any]:
    return {
        "dataset": str(dataset_id),
        "purpose": PURPOSE,
        "measure": "count",
        "start": "2025-01-01",
        "end": "2026-01-01",
        "bucket": "year",
        "rho": "0.1",
    }


def exact_count(session: Session, dataset_id: Any, recipient: str) -> int:
    grid = pushdown.Grid(
        dataset_id=dataset_id,
        purpose=PURPOSE,
        recipient=recipient,
        start_month=2025 * 12,
        width=12,
        buckets=1,
        areas=None,
        categories=None,
        lower=0,
        upper=10**12,
        max_cells=1,
        at=utcnow(),
    )
    return pushdown.aggregate(session, grid).counts[0]


def release_counts(session: Session, territory: Territory) -> dict[Any, int]:
    """How many releases each citizen of the territory has contributed to, read afresh."""
    session.expire_all()
    return {c.subject_id: contributions(session, c.subject_id).releases for c in territory.citizens}


def test_each_release_counts_only_citizens_whose_consent_names_its_requester(
    client: FlaskClient, session: Session, territory: Territory, make_observatory: Any
) -> None:
    dataset_id = territory.holder.dataset.id
    public, research = make_observatory("public_service"), make_observatory("research")
    aggregate_grant(session, public.organisation_id, [str(dataset_id)])
    aggregate_grant(session, research.organisation_id, [str(dataset_id)], recipient="research")
    session.commit()
    meters = territory.holder.subjects
    for_public = [territory.citizen(meters[0]), territory.citizen(meters[1])]
    for_research = territory.citizen(meters[2], recipient="research")
    for_both = territory.citizen(meters[3])
    consent_also(session, for_both, "research")
    assert ingest_aggregates.apply(kwargs={"force": True}).get() == 1

    staged = session.execute(select(StagedRecord.subject_id, StagedRecord.recipient).distinct())
    assert set(staged) == {
        (for_public[0].subject_id, "public_service"),
        (for_public[1].subject_id, "public_service"),
        (for_research.subject_id, "research"),
        (for_both.subject_id, "public_service"),
        (for_both.subject_id, "research"),  # one copy per recipient ...
    }
    assert exact_count(session, dataset_id, "public_service") == 3  # ... read once by each
    assert exact_count(session, dataset_id, "research") == 2

    made = client.post("/api/v1/releases", json=body(dataset_id), headers=public.headers)
    assert made.status_code == 201, made.get_json()
    releases = release_counts(session, territory)
    assert releases == {
        for_public[0].subject_id: 1,
        for_public[1].subject_id: 1,
        for_research.subject_id: 0,  # consented for research only: not in public's release
        for_both.subject_id: 1,
    }
    made = client.post("/api/v1/releases", json=body(dataset_id), headers=research.headers)
    assert made.status_code == 201, made.get_json()
    releases = release_counts(session, territory)
    assert releases == {
        for_public[0].subject_id: 1,
        for_public[1].subject_id: 1,
        for_research.subject_id: 1,
        for_both.subject_id: 2,
    }


def test_a_withdrawal_for_one_recipient_keeps_the_rows_of_the_other(
    session: Session, territory: Territory, make_observatory: Any
) -> None:
    dataset_id = territory.holder.dataset.id
    observatory = make_observatory("public_service")
    aggregate_grant(session, observatory.organisation_id, [str(dataset_id)])
    session.commit()
    citizen = territory.citizen(territory.holder.subjects[0])
    consent_also(session, citizen, "research")
    ingest_aggregates.apply(kwargs={"force": True}).get()
    assert citizen.consent_id is not None
    consent_service.withdraw(
        session, subject_id=citizen.subject_id, consent_id=citizen.consent_id, method="portal"
    )
    session.commit()  # the outbox relays consent.withdrawn (eagerly here)
    session.expire_all()
    left = session.scalars(select(StagedRecord.recipient).distinct()).all()
    assert left == ["research"]
    assert ingestion.drop_for_consent(session, citizen.consent_id) == 0  # idempotent


def test_planning_sweeps_a_recipient_whose_consent_ended_unnoticed_and_keeps_the_other(
    session: Session, territory: Territory, make_observatory: Any, monkeypatch: Any
) -> None:
    """The withdrawal's own task never ran (a lost message): the next planning sweeps the
    citizen's rows for that recipient, and only those."""
    dataset_id = territory.holder.dataset.id
    observatory = make_observatory("public_service")
    aggregate_grant(session, observatory.organisation_id, [str(dataset_id)])
    session.commit()
    citizen = territory.citizen(territory.holder.subjects[0])
    consent_also(session, citizen, "research")
    ingest_aggregates.apply(kwargs={"force": True}).get()
    monkeypatch.setattr(ingestion, "drop_for_consent", lambda _session, _consent_id: 0)
    assert citizen.consent_id is not None
    consent_service.withdraw(
        session, subject_id=citizen.subject_id, consent_id=citizen.consent_id, method="portal"
    )
    session.commit()
    mine = select(StagedRecord.recipient).where(StagedRecord.subject_id == citizen.subject_id)
    assert set(session.scalars(mine.distinct())) == {"public_service", "research"}
    for target in ingestion.targets(session):
        ingestion.plan(session, target)
    session.commit()
    session.expire_all()
    assert set(session.scalars(mine.distinct())) == {"research"}
