"""Differentially private releases: validate a spec, charge the ledger, aggregate, add noise.

Order inside the caller's one transaction (anchors-dp.md §5.1): the access log must be
sealing (fail closed); a known request is served again at no cost; the charter's caps are
checked and the ledger charged under a lock; only then is the exact aggregate computed and
noise drawn; the release is stored and audited. Nothing commits here.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from anonymize import noise, pushdown
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
from anonymize.staging import (
    DatasetProfile,
    Record,
    drop_subject,
    drop_subjects,
    purge_expired,
    stage_records,
    staged_subjects,
)
from audit import service as audit
from charter import service as charters
from charter.service import Charter
from common.clock import utcnow
from common.errors import ForbiddenError, InvalidInputError, NotFoundError

__all__ = [
    "BudgetExceededError",
    "Budgets",
    "DatasetProfile",
    "Record",
    "Release",
    "ReleaseGrants",
    "ReleaseSpec",
    "Requester",
    "budgets",
    "csv_rows",
    "drop_subject",
    "drop_subjects",
    "get_release",
    "list_releases",
    "public_ledger",
    "purge_expired",
    "release",
    "stage_records",
    "staged_subjects",
]

MEASURES = ("count", "sum", "mean")
BUCKETS = {"month": 1, "quarter": 3, "year": 12}
MAX_CELLS = 5000  # cells in one release: bounds the output and the work, whatever the spec
LOW_ACCURACY = 0.5  # flag a value whose 95 % half-width exceeds half of its magnitude
RELEASE_EVENT = "anonymize:release:create"
DELTA = noise.DELTA


@dataclass(frozen=True, slots=True)
class ReleaseSpec:
    """What an observatory asks: a measure over public keys, and the privacy loss it spends.

    Exactly one of `rho` (zCDP, discrete Gaussian) or `epsilon` (pure DP, discrete Laplace).
    Time runs from `start` (inclusive) to `end` (exclusive), both first days of a month, in
    buckets of `bucket` ("month", "quarter", "year" or "all"). `partition` names one of the
    charter territory's partitions (public keys), `by_category` the dataset's public list.
    """

    dataset_id: uuid.UUID
    purpose: str
    measure: str
    start: date
    end: date
    bucket: str = "month"
    partition: str | None = None
    by_category: bool = False
    rho: Decimal | None = None
    epsilon: Decimal | None = None
    max_cells: int | None = None

    def canonical(self) -> dict[str, Any]:
        """The spec as JSON, one form per meaning (its hash makes releases idempotent)."""
        out = asdict(self)
        for name in ("dataset_id", "start", "end"):
            out[name] = str(out[name])
        for name in ("rho", "epsilon"):
            if out[name] is not None:
                out[name] = str(Decimal(out[name]).normalize())
        return out

    def request_hash(self) -> str:
        body = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()


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

    One ledger per population (the whole territory) per charter period. The charter has no
    per-reuser figure yet, so a reuser may spend at most the period's budget of the
    population: the account exists and is reported, the charter can lower it later.
    """
    privacy = charter.doc.privacy
    return {
        AccountKey(POPULATION, charter.doc.territory.code, period): privacy.rho_per_period,
        AccountKey(REUSER, str(requester.organisation_id), period): privacy.rho_per_period,
    }


def _months(value: date) -> int:
    return value.year * 12 + value.month - 1


def _grid(spec: ReleaseSpec, charter: Charter, profile: DpDataset) -> pushdown.Grid:
    """The public key set and the contribution bounds; InvalidInputError names the field."""
    problems: dict[str, list[str]] = {}
    if spec.measure not in MEASURES:
        problems["measure"] = [f"one of {', '.join(MEASURES)}"]
    start, end = _months(spec.start), _months(spec.end)
    if spec.start.day != 1 or spec.end.day != 1:
        problems["start"] = ["start and end are first days of a month"]
    elif end <= start:
        problems["end"] = ["end comes after start"]
    width = max(end - start, 1) if spec.bucket == "all" else BUCKETS.get(spec.bucket, 1)
    if spec.bucket not in (*BUCKETS, "all"):
        problems["bucket"] = ["one of month, quarter, year, all"]
    elif end > start and (end - start) % width:
        problems["end"] = [f"the period is a whole number of {spec.bucket}s"]
    elif spec.bucket in ("quarter", "year") and start % width:
        problems["start"] = [
            f"a {spec.bucket} starts in month {1 if width == 12 else '1, 4, 7 or 10'}"
        ]
    areas = None
    if spec.partition is not None:
        partition = charter.doc.territory.partitions.get(spec.partition)
        if not partition:
            known = ", ".join(sorted(charter.doc.territory.partitions)) or "none"
            problems["partition"] = [f"not a partition of the territory (known: {known})"]
        else:
            areas = tuple(p.id for p in partition)
    categories = None
    if spec.by_category:
        if not profile.categories:
            problems["by_category"] = ["this dataset declares no public categories"]
        categories = tuple(profile.categories)
    if problems:
        raise InvalidInputError("The release spec is not valid.", fields=problems)
    buckets = (end - start) // width
    cells = buckets * len(areas or ("",)) * len(categories or ("",))
    if cells > MAX_CELLS:
        raise InvalidInputError(
            f"A release has at most {MAX_CELLS} cells; this one would have {cells}.",
            fields={"bucket": ["coarser buckets, a shorter period or fewer keys"]},
        )
    max_cells = spec.max_cells if spec.max_cells is not None else buckets
    if not 1 <= max_cells <= cells:
        raise InvalidInputError(
            "max_cells is between 1 and the number of cells.",
            fields={"max_cells": [f"between 1 and {cells}"]},
        )
    return pushdown.Grid(
        dataset_id=profile.dataset_id,
        purpose=spec.purpose,
        start_month=start,
        width=width,
        buckets=buckets,
        areas=areas,
        categories=categories,
        lower=profile.lower,
        upper=profile.upper,
        max_cells=max_cells,
        at=utcnow(),
    )


def _bucket_label(grid: pushdown.Grid, bucket: int, kind: str) -> str:
    first = grid.start_month + bucket * grid.width
    year, month = divmod(first, 12)
    if kind == "year":
        return f"{year}"
    if kind == "quarter":
        return f"{year}-Q{month // 3 + 1}"
    if kind == "month":
        return f"{year}-{month + 1:02d}"
    last_year, last_month = divmod(first + grid.width - 1, 12)
    return f"{year}-{month + 1:02d}/{last_year}-{last_month + 1:02d}"


def _calibrate(spec: ReleaseSpec, grid: pushdown.Grid, cells: int) -> dict[str, noise.Calibrated]:
    """One measurement per released vector, the budget split evenly between them. The
    sensitivity follows from the bounds (anchors-dp.md §5.1): a citizen changes at most
    `max_cells` cells, each count by 1 and each sum by max(|lower|, |upper|)."""
    bound = max(abs(grid.lower), abs(grid.upper), 1)
    vectors = {"count": 1} if spec.measure == "count" else {"count": 1, "sum": bound}
    share = len(vectors)
    out: dict[str, noise.Calibrated] = {}
    for name, per_cell in vectors.items():
        if spec.epsilon is not None:
            out[name] = noise.laplace(
                cells, l1_sensitivity=grid.max_cells * per_cell, epsilon=spec.epsilon / share
            )
        else:
            out[name] = noise.gaussian(
                cells,
                l2_sensitivity=noise.l2_bound(grid.max_cells, per_cell),
                rho=(spec.rho or Decimal(0)) / share,
            )
    return out


def _value(noisy: int, half: float, scale: int) -> dict[str, Any]:
    value = noisy / scale
    width = half / scale
    return {
        "value": value,
        "ci95": [value - width, value + width],
        "low_accuracy": width > LOW_ACCURACY * abs(value),
    }


def _mean(count: int, total: int, half_n: float, half_s: float, scale: int) -> dict[str, Any]:
    """Noisy sum / noisy count, with an interval from the two 97.5 % intervals (together at
    least 95 %, Bonferroni) by interval arithmetic; open when the count's may reach zero."""
    value = total / scale / count if count > 0 else None
    low_n, high_n = count - half_n, count + half_n
    if low_n <= 0 or value is None:
        return {"value": value, "ci95": None, "low_accuracy": True}
    lo_s, hi_s = (total - half_s) / scale, (total + half_s) / scale
    candidates = [lo_s / low_n, lo_s / high_n, hi_s / low_n, hi_s / high_n]
    lo, hi = min(candidates), max(candidates)
    return {
        "value": value,
        "ci95": [lo, hi],
        "low_accuracy": (hi - lo) / 2 > LOW_ACCURACY * abs(value),
    }


def _result(
    spec: ReleaseSpec,
    grid: pushdown.Grid,
    profile: DpDataset,
    measured: dict[str, noise.Calibrated],
    noisy: dict[str, list[int]],
    min_cohort: int,
) -> dict[str, Any]:
    half = {name: m.half_width(0.05) for name, m in measured.items()}
    half_bonf = {name: m.half_width(0.025) for name, m in measured.items()}
    out_cells = []
    for index, (bucket, area, category) in enumerate(grid.keys()):
        n = noisy["count"][index]
        # Suppression reads the *noisy* count (post-processing): never the true one.
        suppressed = n < min_cohort
        cell: dict[str, Any] = {
            "time": _bucket_label(grid, bucket, spec.bucket),
            "area": area or None,
            "category": category or None,
            "suppressed": suppressed,
        }
        if not suppressed:
            cell["count"] = _value(n, half["count"], 1)
            if "sum" in noisy:
                s = noisy["sum"][index]
                if spec.measure == "sum":
                    cell["sum"] = _value(s, half["sum"], profile.scale)
                else:
                    cell["mean"] = _mean(n, s, half_bonf["count"], half_bonf["sum"], profile.scale)
        out_cells.append(cell)
    return {
        "unit": profile.unit,
        "measure": spec.measure,
        "keys": {
            "time": [_bucket_label(grid, b, spec.bucket) for b in range(grid.buckets)],
            "area": list(grid.areas) if grid.areas is not None else None,
            "category": list(grid.categories) if grid.categories is not None else None,
        },
        "bounds": {"lower": profile.lower / profile.scale, "upper": profile.upper / profile.scale},
        "max_cells_per_citizen": grid.max_cells,
        "min_cohort": min_cohort,
        "noise": {
            name: {
                "mechanism": m.mechanism,
                "scale": m.scale / (1 if name == "count" else profile.scale),
                "ci95_half_width": half[name] / (1 if name == "count" else profile.scale),
                "rho": str(m.rho),
            }
            for name, m in measured.items()
        },
        "cells": out_cells,
    }


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
    if not set(requester.recipients) & set(purpose.recipient_ids):
        raise ForbiddenError(f"The purpose {purpose.id} does not name you as a recipient.")
    _require_grant(session, spec, requester, grants)
    grid = _grid(spec, charter, profile)
    cells = len(grid.keys())
    measured = _calibrate(spec, grid, cells)
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
    noisy = {"count": measured["count"](exact.counts)}
    if "sum" in measured:
        noisy["sum"] = measured["sum"](exact.sums)
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
        result=_result(spec, grid, profile, measured, noisy, charter.doc.privacy.min_cohort),
    )
    session.add(row)
    session.flush()
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


def _csv(value: float | None) -> str:
    return "" if value is None else repr(value)


def csv_rows(row: Release) -> list[list[str]]:
    """A release as CSV rows (header first): one line per cell, every key, value and interval;
    suppressed cells keep their line with empty values."""
    result = row.result
    names = [n for n in ("count", "sum", "mean") if n == "count" or n == result["measure"]]
    header = ["time", "area", "category", "suppressed"]
    for name in names:
        header += [name, f"{name}_ci95_low", f"{name}_ci95_high", f"{name}_low_accuracy"]
    lines = [header]
    for cell in result["cells"]:
        line = [cell["time"], cell["area"] or "", cell["category"] or "", str(cell["suppressed"])]
        for name in names:
            found = cell.get(name)
            if found is None:
                line += ["", "", "", ""]
                continue
            low, high = found["ci95"] or (None, None)
            line += [_csv(found["value"]), _csv(low), _csv(high), str(found["low_accuracy"])]
        lines.append(line)
    return lines


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
