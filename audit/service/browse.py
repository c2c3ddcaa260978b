"""Reading the log: auditors' filters, pages, CSV export and what is verified; a citizen's own
entries and receipts; auditor accounts.

Reads only, except `add_auditor` and `remove_auditor` (each appends its own entry); nothing
commits here. Names of organisations, purposes and consents belong to upper packages: the
composition root installs a `Directory` that answers for them, so audit still imports nothing
of ours (shared/DESIGN.md).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, Protocol, cast

import pandas as pd
from cryptography.exceptions import InvalidTag
from sqlalchemy import Select, Table, and_, case, func, or_, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.types import Text as SqlText

from audit import merkle, notes
from audit.models import AuditDetail, AuditEntry, AuditorAccount
from audit.service.leaves import SubjectEntry, append, entries_for_subject, subject_tag
from audit.service.log import Leaf, checkpoint, inclusion, log_key, log_origin, signed_size
from common.errors import InvalidInputError, NotFoundError

FILTERS = ("since", "until", "actor", "organisation", "event", "dataset", "purpose", "subject")
PER_PAGE = 50
MAX_PAGE = 1_000_000
MAX_CSV_ROWS = 100_000
_TAG = re.compile(r"^[0-9a-f]{64}\Z")
_LIMITS = {"actor": 128, "organisation": 64, "event": 64, "dataset": 64, "purpose": 64}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Keys under which non-personal detail names a dataset (releases, dataset registrations).
_DATASET_KEYS = ("dataset", "dataset_id")
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP CSV injection).
_FORMULA = ("=", "+", "-", "@", "\t", "\r")

_ENTRY = cast(Table, AuditEntry.__table__)
_DETAIL = cast(Table, AuditDetail.__table__)

Status = Literal["verified", "unsealed", "failed"]


# -- what the composition root provides --------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsentTerms:
    """What a citizen's consent says, as their access page shows it."""

    legal_basis: str
    data_categories: tuple[str, ...]
    recipient: str


class Directory(Protocol):
    """Names the log cannot know itself; broker/app.py installs one in
    `app.extensions["audit.directory"]`."""

    def actors_of(self, session: Session, organisation: str) -> tuple[str, ...] | None:
        """Every actor string of this organisation (slug): its clients, itself; None if unknown."""

    def names(self, session: Session, actors: Collection[str]) -> dict[str, str]:
        """Organisation names for the actors that are organisations or their clients."""

    def purpose_titles(
        self, session: Session, purposes: Collection[str], lang: str
    ) -> dict[str, str]:
        """Titles of the charter's purposes in `lang`."""

    def consent_terms(
        self, session: Session, consent_ids: Collection[uuid.UUID]
    ) -> dict[uuid.UUID, ConsentTerms]:
        """Legal basis, data categories and recipient of these consents."""

    def grant_consents(self, session: Session, grant_ids: Collection[str]) -> dict[str, list[str]]:
        """The consents each of these grants relies on."""

    def committee_member(self, session: Session, citizen_id: uuid.UUID) -> uuid.UUID | None:
        """The committee membership of this portal account, if it has one."""


# -- filters -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filters:
    """What an auditor asked for; every field optional. `organisation_actors` is the
    organisation resolved to its actors (its clients and itself)."""

    since: datetime | None = None
    until: datetime | None = None  # exclusive
    actor: str | None = None
    organisation: str | None = None
    organisation_actors: tuple[str, ...] = ()
    event: str | None = None
    dataset: str | None = None
    purpose: str | None = None
    subject: str | None = None
    given: dict[str, str] = field(default_factory=dict)  # the raw values, to refill a form


def _moment(value: str, *, end: bool) -> datetime:
    """ISO 8601 date or date-time; a date means the whole day (UTC), naive times are UTC."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime.combine(day, time(), tzinfo=UTC)
            return moment + timedelta(days=1) if end else moment
        parsed = datetime.fromisoformat(value)
        # 9999-12-31T23:59:59-14:00 parses, and UTC cannot hold it: OverflowError here.
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError("not a date") from exc


def parse_filters(session: Session, raw: Mapping[str, str], directory: Directory | None) -> Filters:
    """Filters from query parameters (blank ones ignored). InvalidInputError, per field, for
    an unknown parameter, a bad date, an empty range, a malformed tag or an unknown
    organisation."""
    errors: dict[str, list[str]] = {}
    given = {k: v.strip() for k, v in raw.items() if isinstance(v, str) and v.strip()}
    for name in sorted(set(given) - set(FILTERS)):
        errors[name] = [f"Unknown filter; use: {', '.join(FILTERS)}."]
    values: dict[str, Any] = {}
    for name in ("since", "until"):
        if name in given:
            try:
                values[name] = _moment(given[name], end=name == "until")
            except ValueError:
                errors[name] = ["Not a date: use YYYY-MM-DD or an ISO 8601 date and time."]
    if values.get("since") and values.get("until") and values["since"] >= values["until"]:
        errors["until"] = ["Must be after since."]
    for name, limit in _LIMITS.items():
        if name in given:
            if len(given[name]) > limit or _CONTROL.search(given[name]):
                errors[name] = [f"At most {limit} characters, no control characters."]
            else:
                values[name] = given[name]
    if "subject" in given:
        if _TAG.match(given["subject"]):
            values["subject"] = given["subject"]
        else:
            errors["subject"] = ["A subject tag is 64 lowercase hexadecimal characters."]
    if "organisation" in values:
        actors = directory.actors_of(session, values["organisation"]) if directory else None
        if actors is None:
            errors["organisation"] = ["No organisation has this identifier (slug)."]
        else:
            values["organisation_actors"] = actors
    if errors:
        raise InvalidInputError("The filters are not valid.", fields=errors)
    return Filters(**values, given={k: v for k, v in given.items() if k in FILTERS})


def _dataset_of_detail(dialect: str, key: str) -> Any:
    """The dataset a plaintext detail names under `key` (SQL). Encrypted detail is a
    citizen's: never parsed, so the filter cannot see into it (CASE keeps the JSON functions
    off ciphertext)."""
    if dialect == "postgresql":
        text = func.convert_from(_DETAIL.c.body, "UTF8")
        value = func.jsonb_extract_path_text(sql_cast(text, JSONB), key)
    else:
        value = func.json_extract(sql_cast(_DETAIL.c.body, SqlText), f"$.{key}")
    return case((_DETAIL.c.encrypted.is_(False), value), else_=None)


def _where(query: Select[Any], filters: Filters, dialect: str) -> Select[Any]:
    conditions = []
    if filters.since is not None:
        conditions.append(_ENTRY.c.occurred_at >= filters.since)
    if filters.until is not None:
        conditions.append(_ENTRY.c.occurred_at < filters.until)
    if filters.actor is not None:
        conditions.append(_ENTRY.c.actor == filters.actor)
    if filters.organisation is not None:
        conditions.append(_ENTRY.c.actor.in_(filters.organisation_actors))
    if filters.event is not None:
        # "consent:consent" finds every consent:consent:* event; a full name finds itself.
        conditions.append(
            or_(_ENTRY.c.event == filters.event, _ENTRY.c.event.startswith(filters.event + ":"))
        )
    if filters.purpose is not None:
        conditions.append(_ENTRY.c.purpose == filters.purpose)
    if filters.subject is not None:
        conditions.append(_ENTRY.c.subject_tag == filters.subject)
    if filters.dataset is not None:
        conditions.append(
            or_(*(_dataset_of_detail(dialect, key) == filters.dataset for key in _DATASET_KEYS))
        )
    return query.where(and_(*conditions)) if conditions else query


def _dialect(session: Session) -> str:
    return session.connection().dialect.name


# -- auditors' pages ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One entry as the auditor pages show it. `detail` only when it is not a citizen's."""

    id: uuid.UUID
    index: int | None
    occurred_at: datetime
    event: str
    actor: str
    subject: str | None
    purpose: str | None
    consent_id: uuid.UUID | None
    decision: str | None
    reason: str | None
    leaf: bytes
    encrypted: bool
    detail: str | None


@dataclass(frozen=True, slots=True)
class Verification:
    """What was checked server side for the rows shown: the latest signed checkpoint's
    signature (with the log key) and each row's inclusion proof against its root."""

    size: int | None  # the latest signed checkpoint's size; None before the first
    checkpoint_ok: bool
    problem: str | None
    statuses: dict[uuid.UUID, Status]

    def status(self, entry_id: uuid.UUID) -> Status:
        return self.statuses.get(entry_id, "unsealed")


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Row]
    total: int
    page: int
    pages: int
    verification: Verification


def _rows_query() -> Select[Any]:
    return select(_ENTRY, _DETAIL.c.encrypted, _DETAIL.c.body).outerjoin(
        _DETAIL, _DETAIL.c.entry_id == _ENTRY.c.id
    )


def _row(r: Any) -> Row:
    encrypted = bool(r.encrypted)
    body = None if r.body is None or encrypted else bytes(r.body).decode("utf-8", "replace")
    return Row(
        id=r.id,
        index=r.seq,
        occurred_at=r.occurred_at,
        event=r.event,
        actor=r.actor,
        subject=r.subject_tag,
        purpose=r.purpose,
        consent_id=r.consent_id,
        decision=r.decision,
        reason=r.reason,
        leaf=bytes(r.leaf),
        encrypted=encrypted,
        detail=body,
    )


def browse(session: Session, filters: Filters, *, page: int, per_page: int = PER_PAGE) -> Page:
    """One page of matching entries, newest first, sealed or not, with their verification.

    InvalidInputError (field `page`) for a page below 1 or past the last one.
    """
    dialect = _dialect(session)
    counted = _where(
        select(func.count()).select_from(
            _ENTRY.outerjoin(_DETAIL, _DETAIL.c.entry_id == _ENTRY.c.id)
        ),
        filters,
        dialect,
    )
    total = session.connection().scalar(counted) or 0
    pages = max(1, -(-total // per_page))
    if not 1 <= page <= pages:
        raise InvalidInputError(
            "No such page.", fields={"page": [f"Must be between 1 and {pages}."]}
        )
    found = session.connection().execute(
        _where(_rows_query(), filters, dialect)
        .order_by(_ENTRY.c.pos.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    )
    rows = [_row(r) for r in found]
    return Page(rows, total, page, pages, verify_rows(session, rows))


def verify_rows(session: Session, rows: Collection[Row | SubjectEntry]) -> Verification:
    """Check the latest signed checkpoint with the log key, then each sealed row's inclusion
    proof (RFC 9162) against that checkpoint's root, from the leaf bytes as stored."""
    note = checkpoint(session)
    if note is None:
        return Verification(None, False, None, {})
    try:
        head = notes.parse_checkpoint(notes.open_note(note, log_key()))
        if head.origin != log_origin():
            raise notes.NoteError("the checkpoint names another log")
    except notes.NoteError as exc:
        failed: dict[uuid.UUID, Status] = {r.id: "failed" for r in rows if r.index is not None}
        return Verification(None, False, str(exc), failed)
    statuses: dict[uuid.UUID, Status] = {}
    for r in rows:
        if r.index is None or r.index >= head.size:
            statuses[r.id] = "unsealed"
            continue
        proof = inclusion(session, r.index, head.size)
        ok = merkle.verify_inclusion(
            r.index, head.size, merkle.leaf_hash(r.leaf), proof.proof, head.root
        )
        statuses[r.id] = "verified" if ok else "failed"
    return Verification(head.size, True, None, statuses)


def known_events(session: Session) -> list[str]:
    """The event names the log holds, for the filter's choices."""
    found = session.connection().scalars(select(_ENTRY.c.event).distinct().order_by(_ENTRY.c.event))
    return list(found)


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def to_csv(
    session: Session,
    filters: Filters,
    directory: Directory | None = None,
    *,
    limit: int = MAX_CSV_ROWS,
) -> str:
    """Every matching entry, oldest first, as CSV (pandas); cells that a spreadsheet would
    run as a formula are quoted. InvalidInputError when more than `limit` entries match."""
    dialect = _dialect(session)
    found = session.connection().execute(
        _where(_rows_query(), filters, dialect).order_by(_ENTRY.c.pos).limit(limit + 1)
    )
    rows = [_row(r) for r in found]
    if len(rows) > limit:
        raise InvalidInputError(
            f"More than {limit} entries match: narrow the filters (e.g. a shorter period).",
            fields={"_": [f"More than {limit} entries match."]},
        )
    names = directory.names(session, {r.actor for r in rows}) if directory else {}
    frame = pd.DataFrame(
        [
            {
                "index": r.index,
                "id": str(r.id),
                "time": r.occurred_at.astimezone(UTC).isoformat(),
                "event": r.event,
                "actor": r.actor,
                "organisation": names.get(r.actor),
                "subject": r.subject,
                "purpose": r.purpose,
                "consent": str(r.consent_id) if r.consent_id else None,
                "decision": r.decision,
                "reason": r.reason,
                "leaf_hash": merkle.leaf_hash(r.leaf).hex(),
                "detail": "encrypted" if r.encrypted else r.detail,
            }
            for r in rows
        ],
        columns=[
            "index",
            "id",
            "time",
            "event",
            "actor",
            "organisation",
            "subject",
            "purpose",
            "consent",
            "decision",
            "reason",
            "leaf_hash",
            "detail",
        ],
    )
    frame["index"] = frame["index"].astype("Int64")  # unsealed rows have none: keep integers
    for column in frame.columns.drop("index"):
        frame[column] = frame[column].map(_cell)
    csv: str = frame.to_csv(index=False, lineterminator="\n")
    return csv


def sealed_entries(
    session: Session, filters: Filters, *, start: int, limit: int
) -> tuple[int, list[Leaf], int | None]:
    """Sealed leaves matching `filters` from index `start`, in log order, within the latest
    signed checkpoint: (its size, the leaves, the index to continue from or None)."""
    size = signed_size(session)
    if start >= size:
        return size, [], None
    query = (
        _where(
            select(_ENTRY.c.seq, _ENTRY.c.leaf).outerjoin(
                _DETAIL, _DETAIL.c.entry_id == _ENTRY.c.id
            ),
            filters,
            _dialect(session),
        )
        .where(_ENTRY.c.seq >= start, _ENTRY.c.seq < size)
        .order_by(_ENTRY.c.seq)
        .limit(limit + 1)
    )
    found = session.connection().execute(query).all()
    more = len(found) > limit
    leaves = [Leaf(r.seq, bytes(r.leaf)) for r in found[:limit]]
    return size, leaves, (leaves[-1].index + 1 if more else None)


# -- auditor accounts --------------------------------------------------------------------


def auditor_account(session: Session, citizen_id: uuid.UUID) -> AuditorAccount | None:
    """The auditor account of this portal account, or None."""
    return session.scalar(select(AuditorAccount).where(AuditorAccount.citizen_id == citizen_id))


def add_auditor(
    session: Session,
    *,
    citizen_id: uuid.UUID,
    subject_id: uuid.UUID,
    organisation: str | None,
    note: str = "",
    actor: str = "cli",
) -> AuditorAccount:
    """Let this portal account read the whole log on the auditor pages. Idempotent (an
    existing account keeps its organisation); the addition is itself logged."""
    found = auditor_account(session, citizen_id)
    if found is not None:
        return found
    account = AuditorAccount(
        id=uuid.uuid4(), citizen_id=citizen_id, organisation=organisation, note=note
    )
    session.add(account)
    session.flush()
    append(
        session,
        event="audit:auditor:add",
        actor=actor,
        subject_id=subject_id,
        detail={"auditor": str(account.id), "organisation": organisation},
    )
    return account


def remove_auditor(session: Session, *, citizen_id: uuid.UUID, actor: str = "system") -> bool:
    """This portal account may no longer read the log (it was closed, say). True if it
    could; the removal is itself logged, under no citizen: the account is going away."""
    found = auditor_account(session, citizen_id)
    if found is None:
        return False
    session.delete(found)
    append(session, event="audit:auditor:remove", actor=actor, detail={"auditor": str(found.id)})
    return True


# -- a citizen's own entries ---------------------------------------------------------------

Kind = Literal["access", "decision", "release", "account", "other"]


@dataclass(frozen=True, slots=True)
class CitizenEntry:
    """One line of "who accessed my data": the entry, who, why, on what basis, and whether
    its detail could still be read."""

    entry: SubjectEntry
    kind: Kind
    organisation: str | None
    purpose_title: str | None
    legal_basis: str | None
    data_categories: tuple[str, ...]
    readable: bool


def kind_of(event: str) -> Kind:
    """What an event is to the citizen it concerns."""
    if event.startswith(("consent:consent:", "oauth:authorization:")):
        return "decision"
    if event.startswith(("anonymize:release:", "broker:release:")):
        return "release"
    if event.startswith("consent:citizen:"):
        return "account"
    if event.startswith(("oauth:token:", "broker:records:", "broker:gateway:", "gateway:")):
        return "access"
    return "other"


def _own_entries(session: Session, subject_id: uuid.UUID) -> tuple[list[SubjectEntry], bool]:
    """The citizen's entries and whether their detail could be opened. A key that no longer
    opens (damaged, or rotated away) lists the leaves without detail instead of failing."""
    try:
        return entries_for_subject(session, subject_id), True
    except (InvalidTag, ValueError):
        tag = subject_tag(session, subject_id)
        if tag is None:
            return [], False
        found = session.connection().execute(
            select(_ENTRY).where(_ENTRY.c.subject_tag == tag).order_by(_ENTRY.c.pos)
        )
        entries = [
            SubjectEntry(
                id=r.id,
                index=r.seq,
                occurred_at=r.occurred_at,
                event=r.event,
                actor=r.actor,
                purpose=r.purpose,
                consent_id=r.consent_id,
                decision=r.decision,
                reason=r.reason,
                detail=None,
                leaf=bytes(r.leaf),
            )
            for r in found
        ]
        return entries, False


def _detail_ids(detail: Mapping[str, Any] | None, key: str) -> list[str]:
    value = (detail or {}).get(key)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _uuids(values: Collection[str]) -> set[uuid.UUID]:
    found = set()
    for value in values:
        try:
            found.add(uuid.UUID(value))
        except ValueError:
            continue
    return found


@dataclass(frozen=True, slots=True)
class CitizenPage:
    entries: list[CitizenEntry]
    total: int
    page: int
    pages: int


def citizen_entries(
    session: Session, subject_id: uuid.UUID, directory: Directory | None, lang: str
) -> list[CitizenEntry]:
    """Every entry about this citizen, newest first, with the organisation by name, the
    purpose's title and the consent's legal basis and data categories. Only theirs: the
    entries are found by their own tag. Empty once they are erased."""
    entries, readable = _own_entries(session, subject_id)
    return _describe(session, entries[::-1], readable, directory, lang)


def citizen_page(
    session: Session,
    subject_id: uuid.UUID,
    directory: Directory | None,
    lang: str,
    *,
    page: int,
    per_page: int = PER_PAGE,
) -> CitizenPage:
    """One page of `citizen_entries` (only that page is described and later verified).
    InvalidInputError (field `page`) for a page below 1 or past the last one."""
    entries, readable = _own_entries(session, subject_id)
    pages = max(1, -(-len(entries) // per_page))
    if not 1 <= page <= pages:
        raise InvalidInputError(
            "No such page.", fields={"page": [f"Must be between 1 and {pages}."]}
        )
    newest_first = entries[::-1][(page - 1) * per_page : page * per_page]
    described = _describe(session, newest_first, readable, directory, lang)
    return CitizenPage(described, len(entries), page, pages)


def _describe(
    session: Session,
    entries: list[SubjectEntry],
    readable: bool,
    directory: Directory | None,
    lang: str,
) -> list[CitizenEntry]:
    grants = {g for e in entries for g in _detail_ids(e.detail, "grant")}
    by_grant = directory.grant_consents(session, grants) if directory and grants else {}
    consent_ids: dict[uuid.UUID, set[uuid.UUID]] = {}
    for e in entries:
        ids = {e.consent_id} if e.consent_id else set()
        ids |= _uuids(_detail_ids(e.detail, "consent_ids"))
        for grant in _detail_ids(e.detail, "grant"):
            ids |= _uuids(by_grant.get(grant, []))
        consent_ids[e.id] = ids
    wanted = set().union(*consent_ids.values()) if consent_ids else set()
    terms = directory.consent_terms(session, wanted) if directory and wanted else {}
    names = directory.names(session, {e.actor for e in entries}) if directory else {}
    purposes = {p for e in entries if e.purpose for p in e.purpose.split(",")}
    titles = directory.purpose_titles(session, purposes, lang) if directory else {}
    shown = []
    for e in entries:
        found = [terms[c] for c in sorted(consent_ids[e.id]) if c in terms]
        categories = sorted({c for t in found for c in t.data_categories})
        bases = sorted({t.legal_basis for t in found})
        title = ", ".join(titles.get(p, p) for p in e.purpose.split(",")) if e.purpose else None
        shown.append(
            CitizenEntry(
                entry=e,
                kind=kind_of(e.event),
                organisation=names.get(e.actor),
                purpose_title=title,
                legal_basis=", ".join(bases) or None,
                data_categories=tuple(categories),
                readable=readable,
            )
        )
    return shown


def citizen_entry(session: Session, subject_id: uuid.UUID, entry_id: uuid.UUID) -> SubjectEntry:
    """One of this citizen's entries; NotFoundError for anyone else's (no IDOR)."""
    entries, _readable = _own_entries(session, subject_id)
    for entry in entries:
        if entry.id == entry_id:
            return entry
    raise NotFoundError("No such entry in your access log.")
