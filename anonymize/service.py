"""Differentially private releases: validate a spec, charge the ledger, aggregate, add noise.

Order inside the caller's one transaction (anchors-dp.md §5.1): the access log must be
sealing (fail closed); a known request is served again at no cost; the charter's caps are
checked and the ledger charged under a lock; only then is the exact aggregate computed and
noise drawn; the release is stored and audited. Nothing commits here.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from anonymize import accounting, noise, pushdown, results, specs
from anonymize.ledger import (
    POPULATION,
    REUSER,
    AccountKey,
    Balance,
    BudgetExceededError,
    balance,
    charge,
    period_of,
)
from anonymize.models import BudgetCharge, DpDataset, Release
from anonymize.specs import MAX_CELLS, MEASURES, ReleaseSpec
from anonymize.staging import (
    DatasetProfile,
    Record,
    drop_pairs,
    drop_subject,
    drop_subjects,
    purge_expired,
    stage_records,
    staged_pairs,
)
from audit import service as audit
from charter import service as charters
from charter.document import Purpose
from charter.service import Charter
from common.clock import utcnow
from common.errors import ForbiddenError, InvalidInputError, NotFoundError

__all__ = [
    "MAX_CELLS",
    "MEASURES",
    "STATISTICS_ROLES",
    "BudgetExceededError",
    "Budgets",
    "Contributions",
    "DatasetProfile",
    "Record",
    "Release",
    "ReleaseGrants",
    "ReleaseSpec",
    "Requester",
    "budgets",
    "contributions",
    "csv_rows",
    "drop_pairs",
    "drop_subject",
    "drop_subjects",
    "erase_subject",
    "get_release",
    "list_releases",
    "public_ledger",
    "purge_expired",
    "release",
    "stage_records",
    "staged_pairs",
]

# Who receives statistics: the roles whose organisations may ask for releases and read them.
STATISTICS_ROLES = frozenset({"observatory", "city_service"})
RELEASE_EVENT = "anonymize:release:create"
DELTA = noise.DELTA


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks: the organisation (whose releases only it sees) and its client."""

    organisation_id: uuid.UUID
    client_id: str
    recipients: tuple[str, ...]  # its slug and reuser category, as consents name them


class ReleaseGrants(Protocol):
    """Whether an organisation holds an active aggregate-mode grant covering this purpose and
    dataset. Grants are the broker's; the app wires its answer in (anonymize imports no
    broker), and an app that wires none refuses every release."""

    def __call__(
        self, session: Session, *, organisation_id: uuid.UUID, purpose: str, dataset_id: uuid.UUID
    ) -> bool: ...


def no_grants(
    session: Session, *, organisation_id: uuid.UUID, purpose: str, dataset_id: uuid.UUID
) -> bool:
    """The fail-closed default: without the broker's grants, no release."""
    return False


def _require_grant(
    session: Session, spec: ReleaseSpec, requester: Requester, grants: ReleaseGrants
) -> None:
    if not grants(
        session,
        organisation_id=requester.organisation_id,
        purpose=spec.purpose,
        dataset_id=spec.dataset_id,
    ):
        raise ForbiddenError(
            f"You hold no active aggregate grant for {spec.purpose} on this dataset: "
            "file an access request in aggregate mode first."
        )


@dataclass(frozen=True, slots=True)
class Budgets:
    """The budgets a requester draws on in the current period, and the charter's rules."""

    period: str
    population: Balance
    reuser: Balance
    rho_cap_per_release: Decimal
    min_cohort: int
    delta: float


def _caps(charter: Charter, requester: Requester, period: str) -> dict[AccountKey, Decimal]:
    """The accounts a release charges and their caps in force.

    One ledger per population (the whole territory) per charter period, and one per reuser:
    the charter's `rho_per_reuser_per_period`, or when it sets none the population's whole
    budget (the account exists and is reported either way).
    """
    privacy = charter.doc.privacy
    return {
        AccountKey(POPULATION, charter.doc.territory.code, period): privacy.rho_per_period,
        AccountKey(REUSER, str(requester.organisation_id), period): privacy.reuser_cap,
    }


def _calibrate(spec: ReleaseSpec, grid: pushdown.Grid) -> dict[str, noise.Calibrated]:
    """One measurement per released vector, the budget split evenly between them. The
    sensitivity follows from the bounds (anchors-dp.md §5.1, docs/privacy.md): a citizen
    changes at most `max_cells` cells, each count by 1 and each sum by max(|lower|,
    |upper|); in a histogram, one bin count by 1 in each of those cells."""
    bound = max(abs(grid.lower), abs(grid.upper), 1)
    vectors: dict[str, tuple[int, int]]  # name -> (size, change per cell)
    if grid.edges is not None:
        vectors = {"histogram": (grid.cells * grid.bins, 1)}
    elif spec.measure == "count":
        vectors = {"count": (grid.cells, 1)}
    else:
        vectors = {"count": (grid.cells, 1), "sum": (grid.cells, bound)}
    share = len(vectors)
    out: dict[str, noise.Calibrated] = {}
    for name, (size, per_cell) in vectors.items():
        if spec.epsilon is not None:
            out[name] = noise.laplace(
                size, l1_sensitivity=grid.max_cells * per_cell, epsilon=spec.epsilon / share
            )
        else:
            out[name] = noise.gaussian(
                size,
                l2_sensitivity=noise.l2_bound(grid.max_cells, per_cell),
                rho=(spec.rho or Decimal(0)) / share,
            )
    return out


def _recipient(requester: Requester, purpose: Purpose) -> str:
    """The one recipient, as consents name it, whose staged rows this release reads.

    A purpose's consents name either organisations (slugs) or reuser categories, so a
    requester (one slug, one category) matches one (should a slug equal a category, the
    purpose's first). Never more than one: a citizen who consented for two recipients has
    a copy of their rows for each, and reading both would count them twice."""
    allowed = [r for r in purpose.recipient_ids if r in requester.recipients]
    if not allowed:
        raise ForbiddenError(f"The purpose {purpose.id} does not name you as a recipient.")
    return allowed[0]


def release(
    session: Session, spec: ReleaseSpec, requester: Requester, *, grants: ReleaseGrants
) -> tuple[Release, bool]:
    """Make a release, or serve the stored one for the same request; returns it and whether
    it is new. Fail closed (ServiceUnavailableError) while the access log lags; refused with
    BudgetExceededError (what remains) when it would overspend, and nothing is charged;
    ForbiddenError unless `grants` says the requester holds an active aggregate grant for the
    purpose and dataset (checked again when a stored release is served)."""
    audit.require_sealed(session)
    request_hash = spec.request_hash()
    known = session.scalar(
        select(Release).where(
            Release.organisation_id == requester.organisation_id,
            Release.request_hash == request_hash,
        )
    )
    if known is not None:
        _require_grant(session, spec, requester, grants)
        return known, False  # re-serving a stored result is post-processing: free
    if (spec.rho is None) == (spec.epsilon is None):
        raise InvalidInputError(
            "Give rho or epsilon.", fields={"rho": ["rho or epsilon, not both"]}
        )
    charter = charters.current(session)
    purpose = charter.doc.purpose(spec.purpose)
    if purpose is None:
        raise InvalidInputError(
            f"No purpose {spec.purpose!r} in charter {charter.version}.",
            fields={"purpose": ["not a purpose of the charter in force"]},
        )
    profile = session.get(DpDataset, spec.dataset_id)
    if profile is None:
        raise NotFoundError("No dataset staged for releases under this id.")
    if "aggregate" not in purpose.modes or profile.data_category not in purpose.data_categories:
        raise ForbiddenError(f"The purpose {purpose.id} does not allow statistics on this data.")
    recipient = _recipient(requester, purpose)
    _require_grant(session, spec, requester, grants)
    grid = specs.grid(spec, charter, profile, recipient)
    cells = grid.cells
    measured = _calibrate(spec, grid)
    rho = sum((m.rho for m in measured.values()), Decimal(0))
    cap = charter.doc.privacy.rho_cap_per_release
    if rho > cap:
        field = "rho" if spec.rho is not None else "epsilon"
        raise InvalidInputError(
            f"A release may spend at most rho {cap}; this one would spend {rho}.",
            fields={field: [f"at most rho {cap} per release (charter)"]},
        )
    period = period_of(grid.at, charter.doc.privacy.period)
    accounts = charge(session, _caps(charter, requester, period), rho)  # before any noise
    exact = pushdown.aggregate(session, grid)
    vectors = {"count": exact.counts, "sum": exact.sums, "histogram": exact.histogram or []}
    noisy = {name: measurement(vectors[name]) for name, measurement in measured.items()}
    pure = spec.epsilon is not None
    row = Release(
        id=uuid.uuid4(),
        organisation_id=requester.organisation_id,
        client_id=requester.client_id,
        request_hash=request_hash,
        dataset_id=spec.dataset_id,
        purpose=spec.purpose,
        period=period,
        mechanism=noise.LAPLACE if pure else noise.GAUSSIAN,
        rho=rho,
        epsilon=float(spec.epsilon) if pure and spec.epsilon else noise.epsilon_at(rho),
        delta=0.0 if pure else noise.DELTA,
        spec=spec.canonical(),
        result=results.build(
            spec,
            grid,
            profile,
            measured,
            noisy,
            charter.doc.privacy.min_cohort,
            charter.doc.privacy.flag_above,
        ),
    )
    session.add(row)
    session.flush()
    # Same transaction: whose rows entered the exact aggregate, counted set-based.
    contributors = accounting.record(session, grid, period=period, rho=rho)
    session.add_all(BudgetCharge(account_id=a.id, release_id=row.id, rho=rho) for a in accounts)
    audit.append(
        session,
        event=RELEASE_EVENT,
        actor=f"client:{requester.client_id}",
        purpose=spec.purpose,
        decision="permit",
        detail={
            "release_id": str(row.id),
            "dataset_id": str(spec.dataset_id),
            "rho": str(rho),
            "period": period,
            "cells": cells,
            "contributors": contributors,
        },
        request_hash=request_hash,
    )
    session.flush()
    return row, True


def get_release(session: Session, release_id: uuid.UUID, requester: Requester) -> Release:
    """One of the requester's releases; NotFoundError for another organisation's (no IDOR)."""
    row = session.get(Release, release_id)
    if row is None or row.organisation_id != requester.organisation_id:
        raise NotFoundError("No such release.")
    return row


def list_releases(session: Session, requester: Requester, *, limit: int = 100) -> Sequence[Release]:
    """The requester's releases, newest first."""
    return session.scalars(
        select(Release)
        .where(Release.organisation_id == requester.organisation_id)
        .order_by(Release.created_at.desc())
        .limit(limit)
    ).all()


def csv_rows(row: Release) -> list[list[str]]:
    """A release as CSV rows (header first): one line per cell (per cell and bin, or per
    cell and quantile), every key, value and interval; suppressed cells keep their lines."""
    return results.csv_rows(row.result)


def budgets(session: Session, requester: Requester) -> Budgets:
    """The population's and the requester's budgets for the current charter period."""
    charter = charters.current(session)
    period = period_of(utcnow(), charter.doc.privacy.period)
    caps = _caps(charter, requester, period)
    population, reuser = sorted(caps)
    return Budgets(
        period=period,
        population=balance(session, population, caps[population]),
        reuser=balance(session, reuser, caps[reuser]),
        rho_cap_per_release=charter.doc.privacy.rho_cap_per_release,
        min_cohort=charter.doc.privacy.min_cohort,
        delta=DELTA,
    )


@dataclass(frozen=True, slots=True)
class PublicLedger:
    """What anyone may know of the population's budget: it depends on releases' parameters
    only, never on data (the privacy statement's figures)."""

    charter: Charter
    period: str
    population: Balance
    releases: int


def public_ledger(session: Session) -> PublicLedger | None:
    """The population's budget this period and how many releases spent it; None before the
    first charter."""
    charter = charters.current_or_none(session)
    if charter is None:
        return None
    period = period_of(utcnow(), charter.doc.privacy.period)
    key = AccountKey(POPULATION, charter.doc.territory.code, period)
    made = session.scalar(select(func.count()).select_from(Release).where(Release.period == period))
    return PublicLedger(
        charter=charter,
        period=period,
        population=balance(session, key, charter.doc.privacy.rho_per_period),
        releases=int(made or 0),
    )


def epsilon_at(rho: Decimal) -> float:
    """The epsilon a rho-zCDP loss means at the ledger's delta (OpenDP's conversion)."""
    return noise.epsilon_at(rho) if rho > 0 else 0.0


@dataclass(frozen=True)
class Contributions:
    """What a citizen's own data went into in one charter period: how many releases, and
    the privacy loss those releases spent (rho; epsilon at `delta`, OpenDP's conversion)."""

    period: str
    releases: int
    rho: Decimal
    epsilon: float
    delta: float


def contributions(
    session: Session, subject_id: uuid.UUID, *, at: datetime | None = None
) -> Contributions:
    """The releases a citizen's staged rows entered in the charter period holding `at` (now
    by default), and their privacy loss: zeros when none (or before the first charter)."""
    charter = charters.current_or_none(session)
    when = at or utcnow()
    period = period_of(when, charter.doc.privacy.period if charter else "year")
    releases, rho = accounting.read(session, subject_id, period)
    if releases == 0:
        return Contributions(period, 0, Decimal(0), 0.0, 0.0)
    return Contributions(period, releases, rho, epsilon_at(rho), DELTA)


def erase_subject(session: Session, subject_id: uuid.UUID) -> int:
    """A citizen's erasure: their staged rows of every purpose and their per-period release
    counters go (both are their own data); the releases already made stay, being aggregates
    that no longer say anything of them. Returns the rows deleted; idempotent."""
    return drop_subject(session, subject_id) + accounting.erase(session, subject_id)
