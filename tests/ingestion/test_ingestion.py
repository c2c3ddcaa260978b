"""Ingestion for aggregate purposes (issue #6): consenting citizens' records pulled from a
holder served for real, staged under Tiers' subject id in fixed point; re-runs replace,
withdrawals remove, a holder failing mid-batch leaves the previous rows; and releases need
an active aggregate grant."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from anonymize.models import DpDataset, StagedRecord
from anonymize.staging import month_index
from broker.models import AccessGrant
from broker.oauth import token_issuer
from broker.service import ingestion
from broker.service.gateway import HolderConnection, HolderUnavailableError
from broker.tasks import drop_staged_for_consent, ingest_aggregates, ingest_dataset, purge_staged
from common.clock import as_utc, utcnow
from consent import service as consent_service
from consent.models import Consent, ConsentStatus, Mode
from tests.ingestion.conftest import PURPOSE, Territory

DAYS_2025 = 365  # the demo holders' coverage: one record a day


def rows(session: Session) -> list[StagedRecord]:
    session.expire_all()
    return list(session.scalars(select(StagedRecord).order_by(StagedRecord.id)))


def per_subject(session: Session) -> dict[Any, int]:
    found = session.execute(
        select(StagedRecord.subject_id, func.count()).group_by(StagedRecord.subject_id)
    )
    return dict(found.all())


def ingest(force: bool = True) -> int:
    return int(ingest_aggregates.apply(kwargs={"force": force}).get())


def test_only_consenting_linked_citizens_are_staged_under_tiers_ids(
    session: Session, territory: Territory, granted: Any, electricity_data: Any
) -> None:
    meters = territory.holder.subjects
    public = territory.citizen(meters[0])
    research = territory.citizen(meters[1], recipient="research")  # another allowed category
    territory.citizen(meters[2], recipient=None)  # linked, no consent
    territory.citizen(
        meters[3], mode=Mode.INDIVIDUAL, purpose="energy-coaching", recipient="ecowatt-conseil"
    )
    assert ingest() == 1
    staged = rows(session)
    assert per_subject(session) == {public.subject_id: DAYS_2025, research.subject_id: DAYS_2025}
    assert {r.purpose for r in staged} == {PURPOSE}
    assert {r.dataset_id for r in staged} == {territory.holder.dataset.id}
    # the holder's identifier is nowhere: subject ids are Tiers' own
    for r in staged:
        assert r.subject_id in (public.subject_id, research.subject_id)
        assert r.area.startswith("D")  # a public district id
    consent = session.get(Consent, public.consent_id)
    assert consent is not None
    assert {as_utc(r.valid_until) for r in staged if r.subject_id == public.subject_id} == {
        as_utc(consent.expires_at)
    }
    # values are the holder's Wh, as integers; months in the territory's calendar
    january = [
        r
        for r in staged
        if r.subject_id == public.subject_id and r.month_index == month_index(date(2025, 1, 1))
    ]
    assert len(january) == 31
    assert all(isinstance(r.value, int) and r.value >= 0 for r in january)
    profile = session.get(DpDataset, territory.holder.dataset.id)
    assert profile is not None
    assert (profile.scale, profile.lower, profile.upper) == (1, 0, 500000 * 31)
    # retention: the charter's 730 days for the energy observatory
    expiry = as_utc(staged[0].expires_at) - utcnow()
    assert timedelta(days=729) < expiry <= timedelta(days=730)


def test_running_twice_replaces_instead_of_duplicating(
    session: Session, territory: Territory, granted: Any
) -> None:
    first = territory.citizen(territory.holder.subjects[0])
    ingest()
    before = per_subject(session)
    ingest()
    assert per_subject(session) == before == {first.subject_id: DAYS_2025}
    # not due again before the dataset's refresh interval (P1D)
    assert ingest(force=False) == 0


def test_a_withdrawal_removes_the_citizens_staged_rows(
    session: Session, territory: Territory, granted: Any
) -> None:
    meters = territory.holder.subjects
    staying, leaving = territory.citizen(meters[0]), territory.citizen(meters[1])
    ingest()
    assert set(per_subject(session)) == {staying.subject_id, leaving.subject_id}
    assert leaving.consent_id is not None
    consent_service.withdraw(
        session, subject_id=leaving.subject_id, consent_id=leaving.consent_id, method="portal"
    )
    session.commit()  # the outbox relays consent.withdrawn (eagerly here)
    assert set(per_subject(session)) == {staying.subject_id}
    # idempotent, and the next ingestion does not bring them back
    assert drop_staged_for_consent.apply(args=[str(leaving.consent_id)]).get() == 0
    ingest()
    assert set(per_subject(session)) == {staying.subject_id}


def test_an_ingestion_sweeps_citizens_whose_consent_ended_unnoticed(
    session: Session, territory: Territory, granted: Any
) -> None:
    meters = territory.holder.subjects
    staying, lapsed = territory.citizen(meters[0]), territory.citizen(meters[1])
    ingest()
    session.execute(  # expired, and the sweep has not recorded it yet
        update(Consent)
        .where(Consent.id == lapsed.consent_id)
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
    session.commit()
    ingest()
    assert set(per_subject(session)) == {staying.subject_id}


def test_a_holder_failing_mid_batch_leaves_the_previous_rows(
    session: Session, territory: Territory, granted: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    meters = territory.holder.subjects
    for meter in meters[:3]:  # 3 x 365 records: two pages
        territory.citizen(meter)
    ingest()
    before = [(r.id, r.staged_at) for r in rows(session)]
    assert len(before) == 3 * DAYS_2025
    real_page = HolderConnection.page
    calls = {"n": 0}

    def second_page_fails(self: HolderConnection, *args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise HolderUnavailableError("down", retry_after=30)
        return real_page(self, *args)

    monkeypatch.setattr(HolderConnection, "page", second_page_fails)
    target = ingestion.targets(session)[0]
    plan = ingestion.plan(session, target)
    assert plan is not None
    session.commit()
    (batch,) = list(ingestion.batches(plan))
    inputs = ingestion.batch_inputs(session, plan)
    assert inputs is not None
    with pytest.raises(HolderUnavailableError):
        ingestion.stage_batch(session, plan, batch, *inputs, issuer=token_issuer(), timeout=5.0)
    session.rollback()
    assert [(r.id, r.staged_at) for r in rows(session)] == before
    # through the task: the failure is logged, the other targets would still run
    calls["n"] = 0
    assert ingest() == 0
    assert [(r.id, r.staged_at) for r in rows(session)] == before


def test_a_holder_that_is_down_stages_nothing_and_fails_the_task(
    session: Session, territory: Territory, granted: Any
) -> None:
    territory.citizen(territory.holder.subjects[0])
    territory.holder.fault("down:5")
    target = ingestion.targets(session)[0]
    kwargs = {
        "dataset_id": str(target.dataset_id),
        "purpose_id": target.purpose_id,
        "grant_id": str(target.grant_id),
    }
    with pytest.raises(HolderUnavailableError):
        ingest_dataset.apply(kwargs=kwargs).get()
    assert rows(session) == []


def test_nothing_is_pulled_without_an_active_aggregate_grant(
    session: Session, territory: Territory, granted: Any
) -> None:
    territory.citizen(territory.holder.subjects[0])
    _, grant = granted
    grant.suspended_at = utcnow()
    session.commit()
    assert ingest() == 0
    assert rows(session) == []


def test_staged_rows_past_retention_are_purged(
    session: Session, territory: Territory, granted: Any
) -> None:
    territory.citizen(territory.holder.subjects[0])
    ingest()
    session.execute(update(StagedRecord).values(expires_at=utcnow() - timedelta(seconds=1)))
    session.commit()
    assert purge_staged.apply().get() == DAYS_2025
    assert rows(session) == []


def _spec(dataset_id: Any) -> dict[str, Any]:
    return {
        "dataset": str(dataset_id),
        "purpose": PURPOSE,
        "measure": "mean",
        "start": "2025-01-01",
        "end": "2025-04-01",
        "bucket": "month",
        "partition": "districts",
        "rho": "0.1",
    }


def test_a_release_needs_an_active_aggregate_grant(
    client: FlaskClient,
    session: Session,
    territory: Territory,
    granted: Any,
    make_observatory: Any,
) -> None:
    for meter in territory.holder.subjects[:3]:
        territory.citizen(meter)
    ingest()
    dataset_id = territory.holder.dataset.id
    stranger = make_observatory()  # named by the purpose, but holds no grant
    refused = client.post("/api/v1/releases", json=_spec(dataset_id), headers=stranger.headers)
    assert refused.status_code == 403, refused.get_json()
    assert "aggregate grant" in refused.get_json()["detail"]
    observatory, grant = granted
    made = client.post("/api/v1/releases", json=_spec(dataset_id), headers=observatory.headers)
    assert made.status_code == 201, made.get_json()
    again = client.post("/api/v1/releases", json=_spec(dataset_id), headers=observatory.headers)
    assert again.status_code == 200  # served again, free
    grant = session.get(AccessGrant, grant.id)
    assert grant is not None
    grant.suspended_at = utcnow()
    session.commit()
    suspended = client.post("/api/v1/releases", json=_spec(dataset_id), headers=observatory.headers)
    assert suspended.status_code == 403  # even a stored release is not served again


def test_an_individual_grant_does_not_open_releases(
    client: FlaskClient,
    session: Session,
    territory: Territory,
    granted: Any,
    make_observatory: Any,
) -> None:
    territory.citizen(territory.holder.subjects[0])
    ingest()
    other = make_observatory()
    observatory, grant = granted
    session.execute(update(AccessGrant).where(AccessGrant.id == grant.id).values(mode="individual"))
    session.commit()
    for who in (observatory, other):
        response = client.post(
            "/api/v1/releases", json=_spec(territory.holder.dataset.id), headers=who.headers
        )
        assert response.status_code == 403


def test_a_consent_ending_while_pages_come_leaves_that_citizen_out(
    session: Session, territory: Territory, granted: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    meters = territory.holder.subjects
    staying, leaving = territory.citizen(meters[0]), territory.citizen(meters[1])
    real_page = HolderConnection.page

    def withdrawn_meanwhile(self: HolderConnection, *args: Any) -> Any:
        session.execute(  # as if the withdrawal committed while the holder answered
            update(Consent)
            .where(Consent.id == leaving.consent_id)
            .values(status=ConsentStatus.WITHDRAWN)
        )
        return real_page(self, *args)

    monkeypatch.setattr(HolderConnection, "page", withdrawn_meanwhile)
    target = ingestion.targets(session)[0]
    plan = ingestion.plan(session, target)
    assert plan is not None
    (batch,) = list(ingestion.batches(plan))
    inputs = ingestion.batch_inputs(session, plan)
    assert inputs is not None
    done = ingestion.stage_batch(session, plan, batch, *inputs, issuer=token_issuer(), timeout=5.0)
    session.commit()
    assert done.subjects == 2
    assert set(per_subject(session)) == {staying.subject_id}
