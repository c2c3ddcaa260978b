"""The holder side of docs/holder-protocol.md: datasets, query parameters, cursors and pages.

No Flask here: the app turns a request's arguments into a `Query` and a `Page` into JSON. Every
bad parameter is named (RFC 9457 problems with per-field messages), pages come in a stable order
(subjects sorted, then time), and a cursor resumes exactly after the last record it saw, so a
walk through all pages gives every record once, whatever the page size.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import Any, TypeGuard

Record = dict[str, str | int]
Position = tuple[int, ...]  # a record's place within its subject's records, increasing

MAX_SUBJECTS = 500  # per request (docs/holder-protocol.md)
MAX_LIMIT = 1000
DEFAULT_LIMIT = 500
PARAMETERS = frozenset({"subject", "since", "until", "cursor", "limit"})
_MAX_POSITION = 10**9
_CURSOR_VERSION = 1
LICENCE_OUVERTE = "https://www.etalab.gouv.fr/licence-ouverte-open-licence/"


@dataclass(frozen=True)
class Window:
    """The half-open time filter `[since, until)` on a dataset's time field; None is unbounded."""

    since: datetime | None = None
    until: datetime | None = None

    def slots(self, origin: datetime, step: timedelta, count: int) -> range:
        """Indexes of the slots `origin + i * step`, `0 <= i < count`, that start in the window."""
        low = 0 if self.since is None else _ceil_steps(self.since - origin, step)
        high = count if self.until is None else _ceil_steps(self.until - origin, step)
        return range(max(0, min(low, count)), max(0, min(high, count)))

    def contains(self, moment: datetime) -> bool:
        return (self.since is None or self.since <= moment) and (
            self.until is None or moment < self.until
        )


def _ceil_steps(offset: timedelta, step: timedelta) -> int:
    return -((-offset) // step)


def resume(slots: range, after: Position | None) -> range:
    """The slots still to serve once the record at `after` was served."""
    if after is None:
        return slots
    return range(max(slots.start, after[0] + 1), slots.stop)


@dataclass(frozen=True)
class Field:
    """One field of a dataset's schema, as the holder registers it at Tiers (DESIGN.md,
    "Brokering": types, the subject identifier, personal or sensitive, DP clamping bounds).

    `personal`: the value tells something about the citizen (their id, consumption, where they
    live or were); a time grid shared by every meter does not. `minimum`/`maximum` hold every
    value the holder serves, so clamping to them changes nothing but bounds the sensitivity.
    """

    name: str
    type: str  # string | integer | date | datetime
    description: str
    unit: str | None = None  # UCUM: W, W.h, L, m, g, m2
    minimum: int | None = None
    maximum: int | None = None
    personal: bool = False
    sensitive: bool = False
    identifier: bool = False
    pattern: str | None = None
    values: tuple[str, ...] | None = None
    partition: str | None = None  # a charter partition (territory.partitions) it keys into

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "description": self.description,
            "personal": self.personal,
            "sensitive": self.sensitive,
        }
        optional = {
            "unit": self.unit,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "pattern": self.pattern,
            "enum": list(self.values) if self.values is not None else None,
            "partition": self.partition,
        }
        described.update({key: value for key, value in optional.items() if value is not None})
        if self.identifier:
            described["identifier"] = True
        return described


@dataclass(frozen=True)
class Schema:
    """What a dataset declares about itself (GET /datasets)."""

    id: str
    title: dict[str, str]
    data_category: str
    subject_field: str
    time_field: str | None
    fields: tuple[Field, ...]
    personal: bool = True
    resolution: str | None = None  # ISO 8601 duration of one record's time span
    max_records_per_subject_per_day: int | None = None
    licence: str | None = None
    refresh: str = "P1D"
    notes: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "data_category": self.data_category,
            "personal": self.personal,
            "licence": self.licence,
            "subject_field": self.subject_field,
            "time_field": self.time_field,
            "resolution": self.resolution,
            "max_records_per_subject_per_day": self.max_records_per_subject_per_day,
            "refresh": self.refresh,
            "fields": [f.describe() for f in self.fields],
            **self.notes,
        }


class Dataset(ABC):
    """A dataset a holder serves: its schema and a lazy, resumable reader per subject."""

    schema: Schema

    @property
    def id(self) -> str:
        return self.schema.id

    @property
    def personal(self) -> bool:
        return self.schema.personal

    @abstractmethod
    def well_formed(self, subject: str) -> bool:
        """Whether `subject` has the shape of this holder's identifiers (else: 400)."""

    @abstractmethod
    def records(
        self, subject: str, window: Window, after: Position | None
    ) -> Iterator[tuple[Position, Record]]:
        """The subject's records in the window, positions increasing, strictly after `after`.

        A well-formed identifier that names nothing here yields nothing: Tiers asks only for
        linked subjects, and one closed account must not fail the read of the others.
        """

    def all_subjects(self) -> Sequence[str]:
        """Every subject in order: open datasets serve them all (`subject` is ignored)."""
        return ()


class InvalidQueryError(Exception):
    """Bad parameters, each named with what is wrong with it."""

    def __init__(self, errors: Mapping[str, list[str]]) -> None:
        super().__init__("; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in errors.items()))
        self.errors = dict(errors)


@dataclass(frozen=True)
class Query:
    subjects: tuple[str, ...]
    window: Window
    limit: int
    fingerprint: str
    start: int = 0  # index in `subjects` to resume from
    after: Position | None = None  # position of the last record served for subjects[start]


def _instant(name: str, raw: str, errors: dict[str, list[str]]) -> datetime | None:
    """An ISO 8601 instant with a time zone, or a date (midnight UTC)."""
    text = raw.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        errors.setdefault(name, []).append(
            f"{raw!r} is not an ISO 8601 date or date-time (e.g. 2025-01-01T00:00:00Z)."
        )
        return None
    if moment.tzinfo is None:
        errors.setdefault(name, []).append(
            f"{raw!r} has no time zone: add Z or an offset such as +01:00."
        )
        return None
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first representable instant
        errors.setdefault(name, []).append(f"{raw!r} is out of range.")
        return None


def _fingerprint(dataset: Dataset, subjects: Sequence[str], window: Window) -> str:
    """What a cursor belongs to: the same dataset, subjects and window (not the page size)."""
    material = json.dumps(
        [
            dataset.id,
            list(subjects),
            window.since.isoformat() if window.since else None,
            window.until.isoformat() if window.until else None,
        ],
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]


def encode_cursor(query: Query, index: int, position: Position) -> str:
    payload = {"v": _CURSOR_VERSION, "q": query.fingerprint, "s": index, "p": list(position)}
    raw = json.dumps(payload, separators=(",", ":")).encode("ascii")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode_cursor(raw: str, fingerprint: str, subjects: int) -> tuple[int, Position]:
    """The (subject index, position) a cursor resumes after; ValueError with a reason."""
    if len(raw) > 512:
        raise ValueError("is too long to be one of ours.")
    try:
        padded = raw + "=" * (-len(raw) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        raise ValueError("is not a cursor from this holder (use next_cursor as given).") from None
    if not isinstance(payload, dict) or payload.get("v") != _CURSOR_VERSION:
        raise ValueError("is not a cursor from this holder (use next_cursor as given).")
    if payload.get("q") != fingerprint:
        raise ValueError(
            "belongs to another query: keep subject, since and until as they were on page one."
        )
    index, position = payload.get("s"), payload.get("p")
    if (
        not _small_int(index)
        or not 0 <= index < max(subjects, 1)
        or not isinstance(position, list)
        or not 1 <= len(position) <= 4
        or not all(_small_int(p) for p in position)
    ):
        raise ValueError("is damaged (use next_cursor as given).")
    return index, tuple(position)


def _small_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_POSITION


def parse_query(dataset: Dataset, args: Mapping[str, list[str]]) -> Query:
    """Validate a records request's parameters; raises InvalidQueryError naming each bad one."""
    errors: dict[str, list[str]] = {}
    for name in sorted(set(args) - PARAMETERS):
        errors[name] = [f"Unknown parameter; this endpoint takes {', '.join(sorted(PARAMETERS))}."]
    for name in ("since", "until", "cursor", "limit"):
        if len(args.get(name, [])) > 1:
            errors.setdefault(name, []).append("Give this parameter at most once.")

    def single(name: str) -> str | None:
        values = args.get(name, [])
        return values[0] if len(values) == 1 else None

    since_raw, until_raw = single("since"), single("until")
    if dataset.schema.time_field is None:
        for name, raw in (("since", since_raw), ("until", until_raw)):
            if raw is not None:
                errors.setdefault(name, []).append(
                    f"Dataset {dataset.id} has no time field to filter on."
                )
        since = until = None
    else:
        since = _instant("since", since_raw, errors) if since_raw is not None else None
        until = _instant("until", until_raw, errors) if until_raw is not None else None
        if since is not None and until is not None and until <= since:
            errors.setdefault("until", []).append("Must be later than since ([since, until)).")
    window = Window(since, until)

    limit = DEFAULT_LIMIT
    limit_raw = single("limit")
    if limit_raw is not None:
        text = limit_raw.strip()
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
            errors.setdefault("limit", []).append(f"Must be a whole number from 1 to {MAX_LIMIT}.")
        else:
            limit = int(text)

    subjects = _subjects(dataset, args.get("subject", []), errors)
    fingerprint = _fingerprint(dataset, subjects, window)
    start, after = 0, None
    cursor_raw = single("cursor")
    if cursor_raw is not None and "cursor" not in errors and not errors.keys() & {"since", "until"}:
        try:
            start, after = _decode_cursor(cursor_raw, fingerprint, len(subjects))
        except ValueError as reason:
            errors.setdefault("cursor", []).append(f"This cursor {reason}")
    if errors:
        raise InvalidQueryError(errors)
    return Query(subjects, window, limit, fingerprint, start, after)


def _subjects(dataset: Dataset, raw: list[str], errors: dict[str, list[str]]) -> tuple[str, ...]:
    """The subjects in a stable order (sorted, deduplicated), whatever order they came in."""
    if not dataset.personal:
        return tuple(dataset.all_subjects())  # open data: the filter is ignored (the protocol)
    if not raw:
        errors["subject"] = ["At least one subject is required: this dataset is personal."]
        return ()
    unique = sorted({value.strip() for value in raw})
    if len(unique) > MAX_SUBJECTS:
        errors["subject"] = [f"At most {MAX_SUBJECTS} subjects per request ({len(unique)} given)."]
    malformed = [value for value in unique if not dataset.well_formed(value)]
    if malformed:
        shown = ", ".join(repr(value) for value in malformed[:5])
        more = f" and {len(malformed) - 5} more" if len(malformed) > 5 else ""
        errors.setdefault("subject", []).append(
            f"Not a {dataset.schema.subject_field}: {shown}{more}."
        )
    return tuple(unique)


@dataclass(frozen=True)
class Page:
    records: list[Record]
    next_cursor: str | None

    def body(self) -> dict[str, Any]:
        return {"records": self.records, "next_cursor": self.next_cursor}


def read_page(dataset: Dataset, query: Query) -> Page:
    """One page: at most `limit` records, and a cursor only if at least one more exists.

    One record past the page is computed to know whether to give a cursor; memory is one page.
    """
    walk = islice(_walk(dataset, query), query.limit + 1)
    taken = list(walk)
    next_cursor = None
    if len(taken) > query.limit:
        index, position, _ = taken[query.limit - 1]
        next_cursor = encode_cursor(query, index, position)
        taken = taken[: query.limit]
    return Page([record for _, _, record in taken], next_cursor)


def _walk(dataset: Dataset, query: Query) -> Iterator[tuple[int, Position, Record]]:
    for index in range(query.start, len(query.subjects)):
        after = query.after if index == query.start else None
        for position, record in dataset.records(query.subjects[index], query.window, after):
            yield index, position, record


def dumps(body: Any) -> str:
    """Compact JSON in a fixed key order: the same page is the same bytes."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
