"""Ingestion for aggregate purposes: pull consenting citizens' records into DP staging.

What is pulled: for every active aggregate-mode grant, each of its datasets that the charter
in force lets its purpose compute statistics on. Tiers copies nobody's data for a purpose
no one may release statistics for (data minimisation); the grant does not narrow *whose*
data is staged, since staged rows are per purpose, not per recipient.

Whose: citizens holding an aggregate-mode consent in force for the purpose, naming any
recipient the purpose allows (its reuser categories, or its named reusers), that covers the
dataset, and who are linked to the holder. Records are keyed by Tiers' subject id, never the
holder's identifier, which is only used to ask the holder and is dropped at once. Each
staged row names the recipient of the consent it comes under: a citizen who consented for
two recipients is staged once for each, and a release by one reuser reads its own copy only.

How: the gateway's holder protocol (docs/holder-protocol.md), a Tiers-signed token for the
holder's resource only, page by page (memory stays flat). Citizens go in batches of at most
500 (the protocol's cap per request); each batch is one transaction that first deletes what
was staged for those citizens and then stages their pages, so a re-run replaces instead of
duplicating, and a holder failing mid-batch rolls the whole batch back (the rows staged by
the previous run stay until the next good one). Nothing commits here: the caller owns the
transactions (broker.tasks).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from anonymize import service as releases
from anonymize.models import DpDataset
from audit import service as audit
from broker.models import AccessGrant, Dataset, FieldType
from broker.service import access, datasets
from broker.service.gateway import (
    SUBJECTS_PER_CALL,
    HolderAnswerError,
    HolderConnection,
    Page,
    Source,
    bearer,
    holder_credential,
    holder_query,
    shape_page,
)
from broker.service.tokens import Issuer
from charter import service as charters
from charter.document import Purpose
from common.clock import as_utc, utcnow
from consent import links
from consent import service as consents
from consent.models import Consent, ConsentStatus, Mode

log = logging.getLogger(__name__)
AGGREGATE = Mode.AGGREGATE.value
INGEST_EVENT = "broker:staging:ingest"
# A citizen's value in one release cell (a calendar month) sums at most this many records:
# one a day. The bound is public and data-independent (DP holds whatever the data); a series
# finer than daily is clamped harder, which biases its sums but never leaks.
RECORDS_PER_CELL = 31
DEFAULT_REFRESH = timedelta(days=1)
FIXED_SCALE = {FieldType.INTEGER.value: 1, FieldType.NUMBER.value: 1000}


class NotIngestibleError(Exception):
    """A dataset whose schema gives no public bound, time or subject to stage by."""


@dataclass(frozen=True)
class Target:
    """One dataset to stage for one purpose, and the grant whose name the token carries."""

    dataset_id: uuid.UUID
    purpose_id: str
    grant_id: uuid.UUID


@dataclass(frozen=True)
class Plan:
    """What one target's ingestion needs once its transaction is closed: no ORM objects."""

    target: Target
    profile: releases.DatasetProfile
    retention_days: int
    url: str
    subject_field: str
    time_field: str
    time_is_date: bool
    value_field: str
    area_field: str | None
    areas: frozenset[str]
    refs: dict[str, uuid.UUID]  # the holder's identifier -> Tiers' subject id
    valid_until: dict[uuid.UUID, dict[str, datetime]]  # citizen -> recipient -> consent's end
    swept: int  # (citizen, recipient) pairs dropped: that consent is no longer in force


@dataclass(frozen=True)
class Batch:
    """What one batch staged."""

    subjects: int
    records: int


# --- which datasets -------------------------------------------------------------------------


def targets(session: Session) -> list[Target]:
    """(dataset, purpose) pairs of the active aggregate grants that the charter in force
    still allows (aggregate mode, the dataset's category), each once, in a stable order."""
    charter = charters.current_or_none(session)
    if charter is None:
        return []
    found: dict[tuple[uuid.UUID, str], Target] = {}
    grants = session.scalars(
        select(AccessGrant)
        .where(AccessGrant.mode == AGGREGATE, AccessGrant.suspended_at.is_(None))
        .order_by(AccessGrant.created_at)
    )
    for grant in grants:
        purpose = charter.doc.purpose(grant.purpose_id)
        if purpose is None or AGGREGATE not in purpose.modes:
            continue
        if not access.grant_state(grant).usable:
            continue
        for ref in grant.dataset_ids:
            dataset = session.get(Dataset, uuid.UUID(ref))
            if dataset is None or dataset.data_category not in purpose.data_categories:
                continue
            found.setdefault((dataset.id, purpose.id), Target(dataset.id, purpose.id, grant.id))
    return sorted(found.values(), key=lambda t: (str(t.dataset_id), t.purpose_id))


def due(session: Session, found: Sequence[Target], *, now: datetime) -> list[Target]:
    """The targets whose dataset was last staged longer ago than its refresh interval (the
    holder's `refresh`, daily if it has none we can read), or never."""
    out = []
    for target in found:
        dataset = session.get(Dataset, target.dataset_id)
        profile = session.get(DpDataset, target.dataset_id)
        if dataset is None:
            continue
        every = datasets.refresh_interval(dataset.refresh) or DEFAULT_REFRESH
        if profile is None or as_utc(profile.updated_at) + every <= now:
            out.append(target)
    return out


def has_aggregate_grant(
    session: Session, *, organisation_id: uuid.UUID, purpose: str, dataset_id: uuid.UUID
) -> bool:
    """anonymize's ReleaseGrants port: does this organisation hold an active (not suspended,
    started, not expired) aggregate-mode grant for `purpose` that covers `dataset_id`?"""
    grants = session.scalars(
        select(AccessGrant).where(
            AccessGrant.organisation_id == organisation_id,
            AccessGrant.purpose_id == purpose,
            AccessGrant.mode == AGGREGATE,
        )
    )
    return any(
        str(dataset_id) in grant.dataset_ids and access.grant_state(grant).usable
        for grant in grants
    )


# --- the profile a release computes on -------------------------------------------------------


def _value_field(dataset: Dataset) -> dict[str, Any]:
    """The measure: the first numeric field with both bounds declared (never the subject)."""
    for spec in dataset.fields:
        if (
            spec["name"] != dataset.subject_field
            and spec["type"] in FIXED_SCALE
            and spec.get("min") is not None
            and spec.get("max") is not None
        ):
            return spec
    raise NotIngestibleError(f"dataset {dataset.id} declares no bounded numeric field")


def _area_field(
    dataset: Dataset, partitions: Mapping[str, Sequence[Any]]
) -> tuple[str | None, frozenset[str]]:
    """The field naming a charter partition (`district` or `origin_district` for
    `districts`), and that partition's public ids; (None, {}) if there is none."""
    singular = {name.removesuffix("s"): name for name in partitions}
    for spec in dataset.fields:
        if spec["type"] != FieldType.STRING.value or spec["name"] == dataset.subject_field:
            continue
        for stem, partition in singular.items():
            if spec["name"] == stem or spec["name"].endswith(f"_{stem}"):
                return spec["name"], frozenset(p.id for p in partitions[partition])
    return None, frozenset()


def profile_of(dataset: Dataset, value: Mapping[str, Any]) -> releases.DatasetProfile:
    """Fixed point and cell bounds from the holder's public schema: integers as they are
    (Wh, g, m), decimals in thousandths; a cell (one citizen, one month) spans at most
    RECORDS_PER_CELL records of the field's declared range."""
    low, high = Decimal(str(value["min"])), Decimal(str(value["max"]))
    return releases.DatasetProfile(
        dataset_id=dataset.id,
        data_category=dataset.data_category,
        measure=value["name"],
        unit=value.get("unit") or "1",
        scale=FIXED_SCALE[value["type"]],
        lower=min(Decimal(0), low * RECORDS_PER_CELL),
        upper=max(Decimal(0), high * RECORDS_PER_CELL),
    )


# --- planning: who, in one short transaction -------------------------------------------------


def _in_force(
    session: Session, purpose: Purpose, dataset: Dataset
) -> dict[uuid.UUID, dict[str, datetime]]:
    """Citizens with an aggregate consent in force for the purpose and this dataset, naming
    a recipient the purpose allows; each with, per recipient named, the latest end of those
    consents."""
    consent_ids: set[uuid.UUID] = set()
    for recipient in purpose.recipient_ids:
        consent_ids.update(
            consents.in_force_for(
                session,
                purpose_id=purpose.id,
                recipient_id=recipient,
                mode=Mode.AGGREGATE,
                dataset_id=str(dataset.id),
                data_category=dataset.data_category,
            ).values()
        )
    ends: dict[uuid.UUID, dict[str, datetime]] = {}
    ids = list(consent_ids)
    for start in range(0, len(ids), 1000):
        rows = session.execute(
            select(Consent.subject_id, Consent.recipient_id, Consent.expires_at).where(
                Consent.id.in_(ids[start : start + 1000]), Consent.status == ConsentStatus.GIVEN
            )
        )
        for subject_id, recipient, expires_at in rows:
            end, mine = as_utc(expires_at), ends.setdefault(subject_id, {})
            if recipient not in mine or end > mine[recipient]:
                mine[recipient] = end
    return ends


def plan(session: Session, target: Target) -> Plan | None:
    """Who to ask the holder for, and sweep out staged citizens whose consent ended (in the
    caller's transaction). None when the target no longer stands (charter, dataset)."""
    charter = charters.current(session)
    purpose = charter.doc.purpose(target.purpose_id)
    dataset = session.get(Dataset, target.dataset_id)
    if (
        purpose is None
        or AGGREGATE not in purpose.modes
        or dataset is None
        or dataset.data_category not in purpose.data_categories
    ):
        return None
    if dataset.subject_field is None or dataset.time_field is None:
        raise NotIngestibleError(f"dataset {dataset.id} has no subject or time field")
    value = _value_field(dataset)
    area_field, areas = _area_field(dataset, charter.doc.territory.partitions)
    time_type = next(f["type"] for f in dataset.fields if f["name"] == dataset.time_field)
    valid_until = _in_force(session, purpose, dataset)
    refs = links.linked_subjects(session, dataset.holder_id, valid_until, dataset_id=dataset.id)
    linked = set(refs.values())
    # Per recipient: a citizen still consenting for one keeps no rows staged for another.
    given = {(s, r) for s in linked for r in valid_until[s]}
    gone = releases.staged_pairs(session, dataset.id, purpose.id) - given
    releases.drop_pairs(session, dataset.id, purpose.id, gone)
    return Plan(
        target=target,
        profile=profile_of(dataset, value),
        retention_days=purpose.retention_days,
        url=f"{dataset.endpoint_url.rstrip('/')}/records",
        subject_field=dataset.subject_field,
        time_field=dataset.time_field,
        time_is_date=time_type == FieldType.DATE.value,
        value_field=value["name"],
        area_field=area_field,
        areas=areas,
        refs=dict(sorted(refs.items())),
        valid_until={s: valid_until[s] for s in linked},
        swept=len(gone),
    )


def batches(plan: Plan) -> Iterator[dict[str, uuid.UUID]]:
    """The plan's citizens, at most SUBJECTS_PER_CALL at a time (one holder query each)."""
    refs = list(plan.refs.items())
    for start in range(0, len(refs), SUBJECTS_PER_CALL):
        yield dict(refs[start : start + SUBJECTS_PER_CALL])


# --- one batch: fetch, convert, stage, in the caller's transaction ---------------------------


def _time(raw: object, as_date: bool) -> date | datetime:
    if not isinstance(raw, str):
        raise HolderAnswerError("The data holder sent a record without its time.")
    try:
        if as_date:
            return date.fromisoformat(raw)
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise HolderAnswerError("The data holder sent a record with a bad time.") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)  # protocol: UTC


def _records(plan: Plan, source: Source, page: Page) -> Iterator[releases.Record]:
    """A page as staged records: Tiers' subject id, never the holder's identifier; one copy
    per recipient the citizen's consents name, each with that consent's end."""
    for shaped in shape_page(source, page):  # a subject Tiers did not ask for: 502
        value = shaped.get(plan.value_field)
        if value is None:
            continue  # a gap in the series: nothing to stage
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise HolderAnswerError("The data holder sent a value that is not a number.")
        subject = uuid.UUID(shaped["subject"])
        area = shaped.get(plan.area_field) if plan.area_field else None
        when = _time(shaped.get(plan.time_field), plan.time_is_date)
        for recipient, end in sorted(plan.valid_until[subject].items()):
            yield releases.Record(
                subject_id=subject,
                time=when,
                value=value,
                area=area if isinstance(area, str) and area in plan.areas else "",
                valid_until=end,
                recipient=recipient,
            )


def stage_batch(
    session: Session,
    plan: Plan,
    batch: Mapping[str, uuid.UUID],
    dataset: Dataset,
    grant: AccessGrant,
    *,
    issuer: Issuer,
    timeout: float,
) -> Batch:
    """Replace the staged rows of this batch's citizens with what the holder has now. Raises
    the holder's errors (HolderUnavailableError, HolderAnswerError); the caller then rolls
    back, and the rows of the previous run stay."""
    target = plan.target
    releases.drop_subjects(session, target.dataset_id, target.purpose_id, set(batch.values()))
    source = Source(
        dataset_id=str(target.dataset_id),
        holder_slug=dataset.holder.slug,
        url=plan.url,
        token=holder_credential(issuer, dataset, grant),  # renewed as the pages come
        subject_field=plan.subject_field,
        fields=[plan.time_field, plan.value_field, *([plan.area_field] if plan.area_field else [])],
        pseudonyms={ref: str(subject) for ref, subject in batch.items()},
        since=None,
        until=None,
    )
    refs = list(batch)
    staged = 0
    connection = HolderConnection(plan.url, timeout)
    try:
        cursor: str | None = None
        while True:
            page = connection.page(holder_query(source, refs, cursor), bearer(source))
            staged += releases.stage_records(
                session,
                plan.profile,
                target.purpose_id,
                _records(plan, source, page),
                retention_days=plan.retention_days,
            )
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    finally:
        connection.close()
    # A consent that ended while the pages came: its withdrawal task may have run before these
    # rows existed, so check again in this transaction and leave that citizen out.
    asked = {(s, r) for s in batch.values() for r in plan.valid_until[s]}
    ended = asked - _still_given(session, target.purpose_id, batch.values())
    releases.drop_pairs(session, target.dataset_id, target.purpose_id, ended)
    audit.append(
        session,
        event=INGEST_EVENT,
        actor="system",
        purpose=target.purpose_id,
        decision="permit",
        detail={
            "dataset": str(target.dataset_id),
            "grant": str(target.grant_id),
            "subjects": len(batch),
            "records": staged,
        },
    )
    return Batch(subjects=len(batch), records=staged)


def _still_given(
    session: Session, purpose_id: str, subject_ids: Iterable[uuid.UUID]
) -> set[tuple[uuid.UUID, str]]:
    """(citizen, recipient) pairs of these citizens who still hold a given, unexpired
    aggregate consent for the purpose naming that recipient (what planning checked in full;
    only the status can have changed since)."""
    rows = session.execute(
        select(Consent.subject_id, Consent.recipient_id).where(
            Consent.subject_id.in_(list(subject_ids)),
            Consent.purpose_id == purpose_id,
            Consent.mode == Mode.AGGREGATE,
            Consent.status == ConsentStatus.GIVEN,
            Consent.expires_at > utcnow(),
        )
    )
    return {(subject, recipient) for subject, recipient in rows}


def batch_inputs(session: Session, plan: Plan) -> tuple[Dataset, AccessGrant] | None:
    """The dataset and grant rows of a plan in this batch's session; None if either is gone
    or the grant stopped being usable in between."""
    dataset = session.get(Dataset, plan.target.dataset_id)
    grant = session.get(AccessGrant, plan.target.grant_id)
    if dataset is None or grant is None or not access.grant_state(grant).usable:
        return None
    return dataset, grant


# --- consents that end -------------------------------------------------------------------------


def drop_for_consent(session: Session, consent_id: uuid.UUID) -> int:
    """A consent ended (withdrawn, expired, superseded): delete its citizen's staged rows for
    its purpose and its recipient, in this transaction. Every dataset of the purpose, even if
    another consent of the same citizen for the purpose and recipient is still in force: the
    next ingestion stages them again (erring towards leaving a citizen out). Rows staged under
    a consent naming another recipient stay: that consent still stands. Idempotent; 0 for an
    individual-mode consent."""
    consent = session.get(Consent, consent_id)
    if consent is None or consent.mode is not Mode.AGGREGATE:
        return 0
    return releases.drop_subject(
        session, consent.subject_id, consent.purpose_id, recipient=consent.recipient_id
    )
