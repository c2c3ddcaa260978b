"""Arrangements for releases: a dataset profile, staged records with a known truth, and
tokens of observatories (public_service, so the energy observatory purpose names them)."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.orm import Session

from anonymize.service import DatasetProfile, Record, stage_records
from broker.models import AccessGrant, AccessRequest, Decision, RequestStatus
from common.clock import utcnow

PURPOSE = "energy-observatory"
RECIPIENT = "public_service"  # the reuser category the purpose names
DISTRICTS = tuple(f"D{i:02d}" for i in range(1, 21))  # the demo charter's districts
MONTHS = (1, 2, 3)
LOWER, UPPER = Decimal(0), Decimal(400)  # kWh per citizen per cell


def make_profile(**overrides: Any) -> DatasetProfile:
    values: dict[str, Any] = {
        "dataset_id": uuid.uuid4(),
        "data_category": "energy.electricity.daily",
        "measure": "consumption",
        "unit": "kWh",
        "scale": 1000,  # Wh
        "lower": LOWER,
        "upper": UPPER,
        "categories": ("electric", "gas", "other"),
    }
    return DatasetProfile(**{**values, **overrides})


def make_grid(**overrides: Any) -> Any:
    """A push-down grid: three months x areas A, B, C, values clamped to [0, 100], at most two
    cells a citizen (the exact part's tests)."""
    from anonymize import pushdown

    values: dict[str, Any] = {
        "dataset_id": uuid.uuid4(),
        "purpose": PURPOSE,
        "recipient": RECIPIENT,
        "start_month": 2026 * 12,
        "width": 1,
        "buckets": 3,
        "areas": ("A", "B", "C"),
        "categories": None,
        "lower": 0,
        "upper": 100,
        "max_cells": 2,
        "at": utcnow(),
    }
    return pushdown.Grid(**{**values, **overrides})


@dataclass
class Staged:
    """Staged records and the truth a release should approach (clamped per citizen per cell)."""

    profile: DatasetProfile
    records: list[Record]
    # (month label, district) -> set of citizens, and their clamped Wh sums
    citizens: dict[tuple[str, str], set[uuid.UUID]] = field(default_factory=dict)
    sums_wh: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def dataset_id(self) -> uuid.UUID:
        return self.profile.dataset_id


def truth(profile: DatasetProfile, records: list[Record]) -> Staged:
    """Per month and district: who contributed and the sum of their clamped monthly totals."""
    per: dict[tuple[str, str, uuid.UUID], int] = defaultdict(int)
    for r in records:
        assert isinstance(r.time, datetime)
        per[(f"{r.time.year}-{r.time.month:02d}", r.area, r.subject_id)] += profile.to_fixed(
            r.value
        )
    lo, hi = profile.to_fixed(profile.lower), profile.to_fixed(profile.upper)
    staged = Staged(profile, records, defaultdict(set), defaultdict(int))
    for (month, area, subject), wh in per.items():
        staged.citizens[(month, area)].add(subject)
        staged.sums_wh[(month, area)] += min(max(wh, lo), hi)
    return staged


def synthetic(
    citizens: int, *, seed: int = 7, districts: tuple[str, ...] = DISTRICTS
) -> list[Record]:
    """Each citizen lives in one district and has 1 to 4 readings a month (values in kWh),
    a few of them far above the bound so clamping matters."""
    rng = random.Random(seed)
    records = []
    for _ in range(citizens):
        subject = uuid.uuid4()
        home = rng.choice(districts)
        for month in MONTHS:
            for _ in range(rng.randint(1, 4)):
                day = rng.randint(1, 28)
                value = round(rng.lognormvariate(4.0, 0.6), 3)
                if rng.random() < 0.02:
                    value *= 20
                records.append(
                    Record(subject, datetime(2026, month, day, 12, tzinfo=UTC), value, home, "gas")
                )
    return records


def aggregate_grant(
    session: Session,
    organisation_id: uuid.UUID,
    dataset_ids: list[str],
    *,
    purpose: str = PURPOSE,
    recipient: str = "public_service",
    days: int = 90,
) -> AccessGrant:
    """An approved aggregate-mode request and its grant, arranged directly (filing one is
    tested in tests/gateway); releases need one (issue #6)."""
    now = utcnow()
    request = AccessRequest(
        id=uuid.uuid4(),
        organisation_id=organisation_id,
        client_pk=None,
        purpose_id=purpose,
        mode="aggregate",
        dataset_ids=list(dataset_ids),
        fields={},
        justification="Statistics for the territory's observatory.",
        period_start=now - timedelta(minutes=1),
        period_end=now + timedelta(days=days),
        charter_version="2026.1",
        decision=Decision.PERMIT,
        obligations=[],
        reasons=[],
        status=RequestStatus.APPROVED,
        decided_at=now,
        decided_by="charter",
        created_at=now,
    )
    grant = AccessGrant(
        id=uuid.uuid4(),
        request_id=request.id,
        organisation_id=organisation_id,
        purpose_id=purpose,
        mode="aggregate",
        recipient_id=recipient,
        dataset_ids=list(dataset_ids),
        fields={},
        obligations=[],
        starts_at=request.period_start,
        expires_at=request.period_end,
        created_at=now,
    )
    session.add(request)
    session.flush()
    session.add(grant)
    session.flush()
    return grant


@pytest.fixture
def release_grants() -> list[AccessGrant]:
    """The aggregate grants of this test's observatories; each staged dataset joins them."""
    return []


@pytest.fixture
def staged_datasets() -> list[str]:
    """The datasets this test staged, in order."""
    return []


@pytest.fixture
def make_client(
    make_client: Any,
    session: Session,
    release_grants: list[AccessGrant],
    staged_datasets: list[str],
) -> Any:
    """Observatories and city services made here hold an aggregate grant for the energy
    observatory over every dataset the test stages (before or after)."""

    def make(role: str = "reuser", **kw: Any) -> Any:
        registered = make_client(role, **kw)
        if role in ("observatory", "city_service"):
            release_grants.append(
                aggregate_grant(session, registered.model.organisation.id, staged_datasets)
            )
            session.commit()
        return registered

    return make


@pytest.fixture
def stage(
    session: Session,
    charter: Any,
    release_grants: list[AccessGrant],
    staged_datasets: list[str],
) -> Any:
    """`stage(records=None, citizens=400)`: stage records of a new dataset, commit, and
    return the truth."""

    def make(records: list[Record] | None = None, citizens: int = 400, **kw: Any) -> Staged:
        profile = make_profile(**kw)
        records = records if records is not None else synthetic(citizens)
        stage_records(session, profile, PURPOSE, records, retention_days=730, recipient=RECIPIENT)
        staged_datasets.append(str(profile.dataset_id))
        for grant in release_grants:
            grant.dataset_ids = [*grant.dataset_ids, str(profile.dataset_id)]
        session.commit()
        return truth(profile, records)

    return make


@pytest.fixture
def observatory(oauth_headers: Any) -> dict[str, str]:
    return oauth_headers("observatory", "releases:read releases:write", category="public_service")


@pytest.fixture
def other_observatory(oauth_headers: Any) -> dict[str, str]:
    return oauth_headers("observatory", "releases:read releases:write", category="public_service")


def spec(staged: Staged, **overrides: Any) -> dict[str, Any]:
    """A release body: mean consumption by district and month over the first quarter."""
    body = {
        "dataset": str(staged.dataset_id),
        "purpose": PURPOSE,
        "measure": "mean",
        "start": "2026-01-01",
        "end": "2026-04-01",
        "bucket": "month",
        "partition": "districts",
        "rho": "0.2",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}
