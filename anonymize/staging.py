"""Staged records for aggregate purposes: integer fixed point, keyed by Tiers' subject id.

The ingestion (a broker job pulling from holders) calls `stage_records`; a withdrawal calls
`drop_subject` in the withdrawal's own transaction, so the next release cannot see the
citizen. Nothing commits here.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from anonymize.ledger import TERRITORY_TIME
from anonymize.models import DpDataset, StagedRecord
from charter import service as charters
from common.clock import utcnow
from common.errors import InvalidInputError

MAX_FIXED = 2**53  # a staged value beyond this is a unit mistake, not a reading
_BATCH = 5000
_IN_LIST = 1000  # ids per IN (...) list: well under every driver's parameter limit


@dataclass(frozen=True, slots=True)
class DatasetProfile:
    """What releases need to know of a dataset, from the holder's public schema.

    `scale` fixed-point units make one `unit` (1000 for Wh from kWh); `lower` and `upper`
    bound one citizen's value in one cell, in the dataset's unit; `categories` is the public
    list of values the `category` attribute may take (transport modes), empty if none.
    """

    dataset_id: uuid.UUID
    data_category: str
    measure: str
    unit: str
    scale: int
    lower: Decimal
    upper: Decimal
    categories: tuple[str, ...] = field(default=())

    def to_fixed(self, value: Decimal | int | float | str) -> int:
        """`value` in fixed point, rounded half to even (floats via their shortest repr)."""
        try:
            number = Decimal(str(value)) * self.scale
        except InvalidOperation as error:
            raise InvalidInputError(f"Not a number: {value!r}.") from error
        if not number.is_finite() or abs(number) > MAX_FIXED:
            raise InvalidInputError(f"Out of range for fixed point: {value!r}.")
        return int(number.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


@dataclass(frozen=True, slots=True)
class Record:
    """One record as the ingestion hands it over: whose (Tiers' id), when, how much, where,
    and the recipient the consent it comes under names (else the call's `recipient`)."""

    subject_id: uuid.UUID
    time: datetime | date
    value: Decimal | int | float | str
    area: str
    category: str = ""
    valid_until: datetime | None = None  # this citizen's consent's end (else the call's)
    recipient: str | None = None  # an organisation's slug or a reuser category


def month_index(when: datetime | date) -> int:
    """year * 12 + month - 1 of `when` in the territory's calendar (aware datetimes only)."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise InvalidInputError("Record times must be timezone-aware.")
        when = when.astimezone(TERRITORY_TIME).date()
    return when.year * 12 + when.month - 1


def register_dataset(session: Session, profile: DatasetProfile) -> DpDataset:
    """Create or update the release profile of a dataset (bounds are public metadata)."""
    if profile.scale < 1 or profile.lower > profile.upper:
        raise InvalidInputError("A dataset needs scale >= 1 and lower <= upper.")
    row = session.get(DpDataset, profile.dataset_id) or DpDataset(dataset_id=profile.dataset_id)
    row.data_category = profile.data_category
    row.measure = profile.measure
    row.unit = profile.unit
    row.scale = profile.scale
    row.lower = profile.to_fixed(profile.lower)
    row.upper = profile.to_fixed(profile.upper)
    row.categories = list(profile.categories)
    row.updated_at = utcnow()
    session.add(row)
    session.flush()
    return row


def stage_records(
    session: Session,
    dataset: DatasetProfile,
    purpose: str,
    records: Iterable[Record | Sequence[object]],
    *,
    retention_days: int | None = None,
    valid_until: datetime | None = None,
    recipient: str | None = None,
) -> int:
    """Stage records for `purpose` (already filtered to consenting citizens); returns how many.

    Values become integers in the dataset's fixed point. Records are kept for the purpose's
    retention in the charter in force (or `retention_days`); `valid_until` (the consent's
    end; a record's own `valid_until` wins) keeps a release from using them afterwards.
    Each row records the recipient its consent names (a record's own `recipient` wins over
    the call's): a release by one reuser reads only rows staged for it. Tuples are read as
    (subject_id, time, value, area[, category[, valid_until[, recipient]]]).
    InvalidInputError for an unknown purpose or a record without a recipient.
    """
    if retention_days is None:
        found = charters.current(session).doc.purpose(purpose)
        if found is None or "aggregate" not in found.modes:
            raise InvalidInputError(f"No aggregate purpose {purpose!r} in the charter in force.")
        retention_days = found.retention_days
    register_dataset(session, dataset)
    now = utcnow()
    expires_at = now + timedelta(days=retention_days)
    allowed = set(dataset.categories)
    rows: list[dict[str, object]] = []
    count = 0
    for raw in records:
        record = raw if isinstance(raw, Record) else Record(*raw)  # type: ignore[arg-type]
        if not isinstance(record.subject_id, uuid.UUID):
            raise InvalidInputError("Records are keyed by Tiers' subject id (a UUID).")
        if record.category and record.category not in allowed:
            raise InvalidInputError(f"Category {record.category!r} is not declared.")
        named = record.recipient or recipient
        if not named:
            raise InvalidInputError("A staged record names the recipient of its consent.")
        rows.append(
            {
                "dataset_id": dataset.dataset_id,
                "purpose": purpose,
                "subject_id": record.subject_id,
                "recipient": named,
                "month_index": month_index(record.time),
                "area": record.area,
                "category": record.category,
                "value": dataset.to_fixed(record.value),
                "staged_at": now,
                "valid_until": record.valid_until or valid_until,
                "expires_at": expires_at,
            }
        )
        if len(rows) >= _BATCH:
            session.execute(insert(StagedRecord), rows)
            count, rows = count + len(rows), []
    if rows:
        session.execute(insert(StagedRecord), rows)
        count += len(rows)
    return count


def drop_subject(
    session: Session,
    subject_id: uuid.UUID,
    purpose: str | None = None,
    *,
    recipient: str | None = None,
) -> int:
    """Delete a citizen's staged rows for `purpose` (every purpose if None), for the
    consents naming `recipient` (every recipient if None); effective at commit, so no
    release after the withdrawal's commit can use them. Idempotent."""
    statement = delete(StagedRecord).where(StagedRecord.subject_id == subject_id)
    if purpose is not None:
        statement = statement.where(StagedRecord.purpose == purpose)
    if recipient is not None:
        statement = statement.where(StagedRecord.recipient == recipient)
    return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]


def drop_subjects(
    session: Session,
    dataset_id: uuid.UUID,
    purpose: str,
    subject_ids: Collection[uuid.UUID],
    *,
    recipient: str | None = None,
) -> int:
    """Delete these citizens' staged rows of one dataset and purpose (for one recipient's
    consents only, if given): an ingestion replaces what it staged before for them (run
    twice, it stages once). Idempotent."""
    deleted = 0
    ids = list(subject_ids)
    for start in range(0, len(ids), _IN_LIST):
        statement = delete(StagedRecord).where(
            StagedRecord.dataset_id == dataset_id,
            StagedRecord.purpose == purpose,
            StagedRecord.subject_id.in_(ids[start : start + _IN_LIST]),
        )
        if recipient is not None:
            statement = statement.where(StagedRecord.recipient == recipient)
        result = session.execute(statement)
        deleted += int(result.rowcount)  # type: ignore[attr-defined]
    return deleted


def staged_pairs(
    session: Session, dataset_id: uuid.UUID, purpose: str
) -> set[tuple[uuid.UUID, str]]:
    """The (citizen, recipient) pairs with staged rows of one dataset and purpose (to sweep
    out the ones whose consent ended without its notice reaching us)."""
    rows = session.execute(
        select(StagedRecord.subject_id, StagedRecord.recipient)
        .where(StagedRecord.dataset_id == dataset_id, StagedRecord.purpose == purpose)
        .distinct()
    )
    return {(subject, recipient) for subject, recipient in rows}


def drop_pairs(
    session: Session,
    dataset_id: uuid.UUID,
    purpose: str,
    pairs: Iterable[tuple[uuid.UUID, str]],
) -> int:
    """Delete the staged rows of these (citizen, recipient) pairs of one dataset and purpose:
    a consent ends for one recipient, the citizen's rows for the others stay. Idempotent."""
    by_recipient: dict[str, set[uuid.UUID]] = defaultdict(set)
    for subject, recipient in pairs:
        by_recipient[recipient].add(subject)
    return sum(
        drop_subjects(session, dataset_id, purpose, subjects, recipient=recipient)
        for recipient, subjects in sorted(by_recipient.items())
    )


def purge_expired(session: Session) -> int:
    """Delete staged rows past the charter's retention. Idempotent."""
    result = session.execute(delete(StagedRecord).where(StagedRecord.expires_at <= utcnow()))
    return int(result.rowcount)  # type: ignore[attr-defined]
