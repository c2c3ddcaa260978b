"""The charter document: YAML format, validation, hashes, citizen notices and diffs.

Pure: no Flask, no database. Every error is reported with its path (DESIGN.md "The charter");
hashes are SHA-256 of RFC 8785 canonical JSON, so comments and key order never change them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import rfc8785
import yaml
from marshmallow import Schema, ValidationError, fields, post_load, validate

from common.errors import InvalidInputError

ROOT = "(root)"
MODES = ("individual", "aggregate")  # canonical order: a set of modes has one normal form
MAX_TILE = 63  # the tile map is at most 64 x 64 areas

_Seg = str | int
_Error = tuple[tuple[_Seg, ...], str]


class CharterInvalidError(InvalidInputError):
    """A charter that does not validate; `errors` lists every problem as "<path>: <message>"."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        fields_: dict[str, list[str]] = {}
        for path, message in errors:
            fields_.setdefault(path, []).append(message)
        count = len(errors)
        super().__init__(
            f"The charter is not valid: {count} error{'s' if count != 1 else ''}.", fields=fields_
        )
        self.errors = [f"{path}: {message}" for path, message in errors]


@dataclass(frozen=True)
class Text:
    """A text in both languages of the territory."""

    fr: str
    en: str

    def get(self, lang: str) -> str:
        """The text in `lang`, French for any language we do not have."""
        return self.en if lang == "en" else self.fr


@dataclass(frozen=True)
class DataCategory:
    """A kind of personal data a holder may deposit (e.g. energy.gas.daily)."""

    id: str
    title: Text
    sensitivity: str


@dataclass(frozen=True)
class ReuserCategory:
    """A kind of organisation that may receive data (e.g. public_service)."""

    id: str
    title: Text


@dataclass(frozen=True)
class NamedReuser:
    """One organisation named by a purpose whose consents name their recipient."""

    id: str
    name: str
    category: str


@dataclass(frozen=True)
class Partition:
    """One public area of a territory partition (a district, a commune).

    `tile` places it on the observatory's tile map (column, row from the top left); optional,
    and absent from the canonical form when absent, so that charters written before it keep
    their hash. Areas without one are laid out in order.
    """

    id: str
    name: str
    tile: tuple[int, int] | None = None


@dataclass(frozen=True)
class Territory:
    """The territory and its public partitions (keys for statistics, DESIGN.md)."""

    name: str
    code: str
    partitions: dict[str, tuple[Partition, ...]]


@dataclass(frozen=True)
class Privacy:
    """The differential privacy budget: zCDP rho per citizen across the territory's datasets,
    per period; what one reuser and one release may spend of it; and when a released value
    is flagged as inaccurate.

    `rho_per_reuser_per_period` absent: one reuser may spend the whole period's budget.
    `max_relative_error` absent: 0.5 (a value is flagged when its 95 % half-width exceeds half
    of it). Both are left out of the canonical form when absent (older hashes stay).
    """

    unit: str
    period: str
    rho_per_period: Decimal
    rho_cap_per_release: Decimal
    min_cohort: int
    rho_per_reuser_per_period: Decimal | None = None
    max_relative_error: Decimal | None = None

    @property
    def reuser_cap(self) -> Decimal:
        return self.rho_per_reuser_per_period or self.rho_per_period

    @property
    def flag_above(self) -> float:
        return float(self.max_relative_error) if self.max_relative_error else 0.5


@dataclass(frozen=True)
class Purpose:
    """One purpose citizens consent to; everything here is in its terms hash."""

    id: str
    title: Text
    description: Text
    citizen_keeps: Text
    data_categories: tuple[str, ...]
    reuser_categories: tuple[str, ...]
    recipients: str
    named_reusers: tuple[NamedReuser, ...]
    modes: tuple[str, ...]
    retention_days: int
    approval: str
    consent_max_days: int

    @property
    def recipient_ids(self) -> tuple[str, ...]:
        """Who a consent may name: the named reusers, or else the reuser categories."""
        if self.recipients == "named":
            return tuple(r.id for r in self.named_reusers)
        return self.reuser_categories


@dataclass(frozen=True)
class CharterDocument:
    """A validated charter version. Not hashable: partitions is a dict."""

    version: str
    effective_from: date
    supersede_grace_days: int
    territory: Territory
    data_categories: tuple[DataCategory, ...]
    reuser_categories: tuple[ReuserCategory, ...]
    purposes: tuple[Purpose, ...]
    privacy: Privacy

    def purpose(self, purpose_id: str) -> Purpose | None:
        """The purpose with this id, or None."""
        return next((p for p in self.purposes if p.id == purpose_id), None)

    def data_category(self, category_id: str) -> DataCategory | None:
        """The data category with this id, or None."""
        return next((c for c in self.data_categories if c.id == category_id), None)

    def reuser_category(self, category_id: str) -> ReuserCategory | None:
        """The reuser category with this id, or None."""
        return next((c for c in self.reuser_categories if c.id == category_id), None)


# --- marshmallow schemas: shape, types and ranges; references are checked in _cross_check ---


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be empty.")


def _ident(pattern: str, what: str) -> validate.Regexp:
    return validate.Regexp(pattern, error=f"Must be {what}.")


_KEBAB = _ident(r"^[a-z0-9]+(-[a-z0-9]+)*\Z", "a lowercase kebab-case id (e.g. energy-coaching)")
_SNAKE = _ident(r"^[a-z][a-z0-9_]*\Z", "a lowercase snake_case id (e.g. public_service)")
_DOTTED = _ident(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\Z", "a dotted lowercase id")
_CODE = _ident(r"^[A-Za-z0-9._-]{1,32}\Z", "1 to 32 characters among A-Z a-z 0-9 . _ -")
_KEY = _ident(r"^[A-Za-z0-9._-]{1,64}\Z", "1 to 64 characters among A-Z a-z 0-9 . _ -")


def _str(*validators: Any) -> fields.String:
    return fields.String(required=True, validate=[_not_blank, *validators])


def _int(low: int, high: int | None = None, **kwargs: Any) -> fields.Integer:
    kwargs.setdefault("required", True)
    return fields.Integer(strict=True, validate=validate.Range(min=low, max=high), **kwargs)


def _list(inner: fields.Field[Any], **kwargs: Any) -> fields.List[Any]:
    return fields.List(inner, validate=validate.Length(min=1), **kwargs)


class _Date(fields.Field[date]):
    """A calendar date: a YAML date or an ISO 8601 string (the form to_dict writes)."""

    default_error_messages = {"invalid": "Not a valid date (expected YYYY-MM-DD)."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> date:
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        raise self.make_error("invalid")


class _Positive(fields.Field[Decimal]):
    """A positive decimal, written as a string so no float rounding enters the budget."""

    default_error_messages = {"invalid": "Not a valid decimal.", "positive": "Must be > 0."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        number = _to_decimal(value)
        if number is None:
            raise self.make_error("invalid")
        if number <= 0:
            raise self.make_error("positive")
        return number


def _to_decimal(value: Any) -> Decimal | None:
    # str() of a float is its shortest repr, so "rho: 0.1" in YAML means exactly 0.1
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number.normalize() if number.is_finite() else None


class _Partitions(fields.Field[dict[str, tuple[Partition, ...]]]):
    """Partition name -> entries, with errors keyed so paths read partitions.districts[0].id."""

    default_error_messages = {"invalid": "Not a valid mapping type."}

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> dict[str, tuple[Partition, ...]]:
        if not isinstance(value, dict):
            raise self.make_error("invalid")
        name_field = fields.String(validate=_SNAKE)
        entries_field = _list(fields.Nested(_PartitionSchema))
        result: dict[str, tuple[Partition, ...]] = {}
        errors: dict[str, Any] = {}
        for name, entries in value.items():
            try:
                key = str(name_field.deserialize(name))
                parsed: Any = entries_field.deserialize(entries)
                result[key] = tuple(parsed)
            except ValidationError as exc:
                errors[str(name)] = exc.messages
        if errors:
            raise ValidationError(errors)
        return result


class _Schema(Schema):
    """Loads into the frozen dataclass `model`: lists become tuples, strings are stripped."""

    model: Any = None

    def normalize(self, data: dict[str, Any]) -> dict[str, Any]:
        return data

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> Any:
        # Surrounding whitespace (YAML folded blocks end with a newline) is not part of the terms
        clean = {
            k: tuple(v) if isinstance(v, list) else v.strip() if isinstance(v, str) else v
            for k, v in data.items()
        }
        return self.model(**self.normalize(clean))


class _TextSchema(_Schema):
    model = Text
    fr = _str()
    en = _str()


def _text() -> fields.Nested:
    return fields.Nested(_TextSchema, required=True)


class _PartitionSchema(_Schema):
    model = Partition
    id = _str(_KEY)
    name = _str()
    tile = fields.List(
        fields.Integer(strict=True, validate=validate.Range(min=0, max=MAX_TILE)),
        validate=validate.Length(equal=2, error="A tile is [column, row]."),
        load_default=None,
    )


class _TerritorySchema(_Schema):
    model = Territory
    name = _str()
    code = _str(_CODE)
    partitions = _Partitions(load_default=dict)


class _DataCategorySchema(_Schema):
    model = DataCategory
    id = _str(_DOTTED)
    title = _text()
    sensitivity = _str(validate.OneOf(["low", "medium", "high"]))


class _ReuserCategorySchema(_Schema):
    model = ReuserCategory
    id = _str(_SNAKE)
    title = _text()


class _NamedReuserSchema(_Schema):
    model = NamedReuser
    id = _str(_KEBAB)
    name = _str()
    category = _str(_SNAKE)


class _PurposeSchema(_Schema):
    model = Purpose
    id = _str(_KEBAB, validate.Length(max=64))
    title = _text()
    description = _text()
    citizen_keeps = _text()
    data_categories = _list(fields.String(validate=_DOTTED), required=True)
    reuser_categories = _list(fields.String(validate=_SNAKE), required=True)
    recipients = _str(validate.OneOf(["named", "category"]))
    named_reusers = fields.List(fields.Nested(_NamedReuserSchema), load_default=list)
    modes = _list(fields.String(validate=validate.OneOf(MODES)), required=True)
    retention_days = _int(1, 3650)
    approval = _str(validate.OneOf(["auto", "committee"]))
    consent_max_days = _int(1, 1825)

    def normalize(self, data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "modes": tuple(m for m in MODES if m in data["modes"])}


class _PrivacySchema(_Schema):
    model = Privacy
    unit = _str(validate.OneOf(["citizen"]))
    period = _str(validate.OneOf(["year", "quarter", "month"]))
    rho_per_period = _Positive(required=True)
    rho_cap_per_release = _Positive(required=True)
    min_cohort = _int(1)
    rho_per_reuser_per_period = _Positive(required=False, load_default=None)
    max_relative_error = _Positive(required=False, load_default=None)


class _CharterSchema(_Schema):
    model = CharterDocument
    version = _str(_CODE)
    effective_from = _Date(required=True)
    supersede_grace_days = _int(0, 365, required=False, load_default=30)
    territory = fields.Nested(_TerritorySchema, required=True)
    data_categories = _list(fields.Nested(_DataCategorySchema), required=True)
    reuser_categories = _list(fields.Nested(_ReuserCategorySchema), required=True)
    purposes = _list(fields.Nested(_PurposeSchema), required=True)
    privacy = fields.Nested(_PrivacySchema, required=True)


# --- parsing and validation ---


def parse(text: str) -> CharterDocument:
    """Load and validate a charter from YAML; raises CharterInvalidError listing every error."""
    try:
        loader = _Loader(text)  # reads the stream at once: control characters fail here
        try:
            node = loader.get_single_node()
            raw = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}" if mark is not None else ROOT
        raise CharterInvalidError([(where, f"could not parse YAML: {exc.problem}")]) from None
    except yaml.reader.ReaderError as exc:
        where = f"line {text.count(chr(10), 0, exc.position) + 1}"
        raise CharterInvalidError([(where, f"could not parse YAML: {exc.reason}")]) from None
    except yaml.YAMLError as exc:
        raise CharterInvalidError([(ROOT, f"could not parse YAML: {exc}")]) from None
    return _validate(raw, node)


def from_dict(data: Mapping[str, Any]) -> CharterDocument:
    """Validate a charter given as the dict to_dict produces (or any equivalent mapping)."""
    return _validate(dict(data) if isinstance(data, Mapping) else data, None)


class _Loader(yaml.SafeLoader):
    """SafeLoader that turns an impossible date (2026-13-01) into a YAML error with its line."""

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(None, None, str(exc), node.start_mark) from exc


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


def _validate(raw: Any, node: yaml.Node | None) -> CharterDocument:
    if not isinstance(raw, dict):
        kinds = {type(None): "nothing", list: "a list", str: "a string", bool: "a boolean"}
        kind = kinds.get(type(raw), "a number")
        raise CharterInvalidError([(ROOT, f"the charter must be a mapping of keys, got {kind}")])
    errors: list[_Error] = list(_duplicate_keys(node, ())) if node is not None else []
    doc: CharterDocument | None = None
    try:
        doc = _CharterSchema().load(raw)
    except ValidationError as exc:
        _flatten(exc.messages, raw, (), errors)
    # A reference error at a path marshmallow already rejected would only repeat it
    seen = {segs for segs, _ in errors}
    errors += [e for e in _cross_check(raw) if e[0] not in seen]
    if errors or doc is None:
        if node is not None:
            # Document order; the sort is stable, so errors at one node keep their order
            errors.sort(key=lambda e: _position(node, e[0]))
        raise CharterInvalidError([(_render(segs), message) for segs, message in errors])
    return doc


def _render(segments: tuple[_Seg, ...]) -> str:
    out = ""
    for seg in segments:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else seg)
    return out or ROOT


def _flatten(errors: Any, raw: Any, path: tuple[_Seg, ...], out: list[_Error]) -> None:
    """marshmallow's nested error dict -> (path, message) pairs, list indexes kept as ints."""
    if isinstance(errors, dict):
        for key, sub in errors.items():
            if key == "_schema":
                _flatten(sub, raw, path, out)
                continue
            if isinstance(raw, list) and isinstance(key, int):
                child = raw[key] if 0 <= key < len(raw) else None
                _flatten(sub, child, (*path, key), out)
            else:
                child = raw.get(key) if isinstance(raw, dict) else None
                _flatten(sub, child, (*path, str(key)), out)
    elif isinstance(errors, list):
        for message in errors:
            _flatten(message, raw, path, out)
    else:
        out.append((path, str(errors)))


def _entries(value: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    if isinstance(value, list):
        yield from ((i, e) for i, e in enumerate(value) if isinstance(e, dict))


def _unique_ids(items: Any, path: tuple[_Seg, ...], out: list[_Error]) -> set[str]:
    first: dict[str, int] = {}
    for i, entry in _entries(items):
        ident = entry.get("id")
        if not isinstance(ident, str):
            continue
        if ident in first:
            where = _render((*path, first[ident]))
            out.append(((*path, i, "id"), f'duplicate id "{ident}" (already used by {where})'))
        else:
            first[ident] = i
    return set(first)


def _unique_tiles(items: Any, path: tuple[_Seg, ...], out: list[_Error]) -> None:
    """Two areas of one partition never share a tile of the map."""
    first: dict[tuple[Any, ...], int] = {}
    for i, entry in _entries(items):
        tile = entry.get("tile")
        if not isinstance(tile, list) or len(tile) != 2:
            continue
        key = tuple(tile)
        if key in first:
            where = _render((*path, first[key]))
            out.append(((*path, i, "tile"), f"tile {list(key)} is already used by {where}"))
        else:
            first[key] = i


def _cross_check(raw: dict[str, Any]) -> list[_Error]:
    """Uniqueness and references, on the raw data so they are reported even beside type errors."""
    out: list[_Error] = []
    data_ids = _unique_ids(raw.get("data_categories"), ("data_categories",), out)
    reuser_ids = _unique_ids(raw.get("reuser_categories"), ("reuser_categories",), out)
    _unique_ids(raw.get("purposes"), ("purposes",), out)
    territory = raw.get("territory")
    partitions = territory.get("partitions") if isinstance(territory, dict) else None
    if isinstance(partitions, dict):
        for name, entries in partitions.items():
            _unique_ids(entries, ("territory", "partitions", str(name)), out)
            _unique_tiles(entries, ("territory", "partitions", str(name)), out)
    for i, purpose in _entries(raw.get("purposes")):
        base: tuple[_Seg, ...] = ("purposes", i)
        own = purpose.get("reuser_categories")
        refs = (
            ("data_categories", data_ids, "unknown data category"),
            ("reuser_categories", reuser_ids, "unknown category"),
            ("modes", set(MODES), None),
        )
        for key, known, unknown in refs:
            values = purpose.get(key)
            values = values if isinstance(values, list) else []
            for j, value in enumerate(values):
                if isinstance(value, str) and value in values[:j]:
                    out.append(((*base, key, j), f'"{value}" is listed twice'))
                elif isinstance(value, str) and unknown and value not in known:
                    out.append(((*base, key, j), f'{unknown} "{value}"'))
        named = purpose.get("named_reusers")
        recipients = purpose.get("recipients")
        if recipients == "named" and not named:
            out.append(((*base, "named_reusers"), 'required when recipients is "named"'))
        if recipients == "category" and named:
            out.append(((*base, "named_reusers"), 'must be empty when recipients is "category"'))
        _unique_ids(named, (*base, "named_reusers"), out)
        for j, reuser in _entries(named):
            category = reuser.get("category")
            if not isinstance(category, str):
                continue
            path = (*base, "named_reusers", j, "category")
            if category not in reuser_ids:
                out.append((path, f'unknown category "{category}"'))
            elif not isinstance(own, list) or category not in own:
                out.append((path, f'"{category}" is not one of this purpose\'s reuser_categories'))
    privacy = raw.get("privacy")
    if isinstance(privacy, dict):
        budget = _to_decimal(privacy.get("rho_per_period"))
        cap = _to_decimal(privacy.get("rho_cap_per_release"))
        if budget is not None and cap is not None and cap > budget:
            path = ("privacy", "rho_cap_per_release")
            out.append((path, f"must not exceed rho_per_period ({_decimal_str(budget)})"))
        per_reuser = _to_decimal(privacy.get("rho_per_reuser_per_period"))
        if budget is not None and per_reuser is not None and per_reuser > budget:
            path = ("privacy", "rho_per_reuser_per_period")
            out.append((path, f"must not exceed rho_per_period ({_decimal_str(budget)})"))
        flag = _to_decimal(privacy.get("max_relative_error"))
        if flag is not None and flag > 10:
            out.append((("privacy", "max_relative_error"), "must be at most 10 (1000 %)"))
    return out


def _duplicate_keys(node: yaml.Node, path: tuple[_Seg, ...]) -> Iterator[_Error]:
    # PyYAML silently keeps the last of two equal keys; in a charter that hides a clause
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value)
            if name in lines:
                yield (*path, name), f"duplicate key (first on line {lines[name]})"
            lines.setdefault(name, key.start_mark.line + 1)
            yield from _duplicate_keys(value, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*path, i))


def _position(node: yaml.Node, path: tuple[_Seg, ...]) -> tuple[int, int]:
    """Where `path` is in the YAML, to report errors in document order.

    A missing key sorts at the end of the mapping that lacks it.
    """
    for seg in path:
        if isinstance(node, yaml.MappingNode):
            found = [v for k, v in node.value if str(k.value) == str(seg)]
            if not found:
                return node.end_mark.line, node.end_mark.column
            node = found[-1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(seg, int) and seg < len(node.value):
            node = node.value[seg]
        else:
            break
    return node.start_mark.line, node.start_mark.column


# --- normal form and hashes ---


def _decimal_str(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _text_dict(text: Text) -> dict[str, str]:
    return {"fr": text.fr, "en": text.en}


def purpose_dict(p: Purpose) -> dict[str, Any]:
    return {
        "id": p.id,
        "title": _text_dict(p.title),
        "description": _text_dict(p.description),
        "citizen_keeps": _text_dict(p.citizen_keeps),
        "data_categories": list(p.data_categories),
        "reuser_categories": list(p.reuser_categories),
        "recipients": p.recipients,
        "named_reusers": [
            {"id": r.id, "name": r.name, "category": r.category} for r in p.named_reusers
        ],
        "modes": list(p.modes),
        "retention_days": p.retention_days,
        "approval": p.approval,
        "consent_max_days": p.consent_max_days,
    }


def _partition_dict(entry: Partition) -> dict[str, Any]:
    # No "tile" key when there is none: the canonical form (and hash) of older charters stays.
    out: dict[str, Any] = {"id": entry.id, "name": entry.name}
    if entry.tile is not None:
        out["tile"] = list(entry.tile)
    return out


def to_dict(doc: CharterDocument) -> dict[str, Any]:
    """The normalized, JSON-able form: ISO dates, decimals as strings, defaults filled in."""
    t = doc.territory
    return {
        "version": doc.version,
        "effective_from": doc.effective_from.isoformat(),
        "supersede_grace_days": doc.supersede_grace_days,
        "territory": {
            "name": t.name,
            "code": t.code,
            "partitions": {
                name: [_partition_dict(e) for e in entries]
                for name, entries in t.partitions.items()
            },
        },
        "data_categories": [
            {"id": c.id, "title": _text_dict(c.title), "sensitivity": c.sensitivity}
            for c in doc.data_categories
        ],
        "reuser_categories": [
            {"id": c.id, "title": _text_dict(c.title)} for c in doc.reuser_categories
        ],
        "purposes": [purpose_dict(p) for p in doc.purposes],
        "privacy": _privacy_dict(doc.privacy),
    }


def _privacy_dict(privacy: Privacy) -> dict[str, Any]:
    # Optional figures only when set: the canonical form (and hash) of older charters stays.
    out: dict[str, Any] = {
        "unit": privacy.unit,
        "period": privacy.period,
        "rho_per_period": _decimal_str(privacy.rho_per_period),
        "rho_cap_per_release": _decimal_str(privacy.rho_cap_per_release),
        "min_cohort": privacy.min_cohort,
    }
    for name in ("rho_per_reuser_per_period", "max_relative_error"):
        found = getattr(privacy, name)
        if found is not None:
            out[name] = _decimal_str(found)
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_bytes(doc: CharterDocument) -> bytes:
    """RFC 8785 canonical JSON of to_dict(doc): what the charter's hash is computed over."""
    return bytes(rfc8785.dumps(to_dict(doc)))


def document_hash(doc: CharterDocument) -> str:
    """Hex SHA-256 of the canonical form; independent of YAML layout, comments and key order."""
    return _sha256(canonical_bytes(doc))


def terms_hash(purpose: Purpose) -> str:
    """Hex SHA-256 of one purpose's canonical terms; consents record it (DESIGN.md)."""
    return _sha256(bytes(rfc8785.dumps(purpose_dict(purpose))))


def terms_hashes(doc: CharterDocument) -> dict[str, str]:
    """Purpose id -> terms hash, in charter order."""
    return {p.id: terms_hash(p) for p in doc.purposes}
