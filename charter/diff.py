"""Which purposes' terms changed between two charter versions, and how (`tiers charter diff`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from charter.document import CharterDocument, purpose_dict, terms_hash, to_dict


@dataclass(frozen=True)
class FieldChange:
    """One value that differs between two versions, at a dotted path."""

    path: str
    old: Any
    new: Any


def _show(value: Any) -> str:
    return "(absent)" if value is None else json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class CharterDiff:
    """What a new charter version changes; a purpose is changed iff its terms hash differs."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: dict[str, tuple[FieldChange, ...]]
    unchanged: tuple[str, ...]
    other_changes: tuple[FieldChange, ...]

    def summary_lines(self) -> list[str]:
        """One human-readable line per change, for the CLI."""
        lines = [
            f"~ {pid}: {c.path} {_show(c.old)} -> {_show(c.new)}"
            for pid, changes in self.changed.items()
            for c in changes
        ]
        lines += [f"+ {pid}" for pid in self.added]
        lines += [f"- {pid}" for pid in self.removed]
        lines += [f"= {pid} (unchanged)" for pid in self.unchanged]
        lines += [
            f"~ charter: {c.path} {_show(c.old)} -> {_show(c.new)}" for c in self.other_changes
        ]
        return lines


def _changes(old: Any, new: Any, path: str) -> list[FieldChange]:
    # Mappings are compared key by key; lists and scalars as whole values
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[FieldChange] = []
        for key in [*old, *(k for k in new if k not in old)]:
            sub = key if not path else (f"{path}{key}" if key.startswith("[") else f"{path}.{key}")
            out += _changes(old.get(key), new.get(key), sub)
        return out
    return [] if old == new else [FieldChange(path, old, new)]


def _by_id(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"[{e['id']}]": {k: v for k, v in e.items() if k != "id"} for e in entries}


def _outside_purposes(doc: CharterDocument) -> dict[str, Any]:
    # version and effective_from identify the version itself, so they are not "changes"
    d = to_dict(doc)
    for key in ("version", "effective_from", "purposes"):
        del d[key]
    for key in ("data_categories", "reuser_categories"):
        d[key] = _by_id(d[key])
    parts = d["territory"]["partitions"]
    d["territory"]["partitions"] = {name: _by_id(entries) for name, entries in parts.items()}
    return d


def diff(old: CharterDocument, new: CharterDocument) -> CharterDiff:
    """Compare two charter versions, purpose by purpose (by terms hash) and for the rest."""
    old_purposes = {p.id: p for p in old.purposes}
    new_ids = {p.id for p in new.purposes}
    changed: dict[str, tuple[FieldChange, ...]] = {}
    unchanged: list[str] = []
    added: list[str] = []
    for purpose in new.purposes:
        before = old_purposes.get(purpose.id)
        if before is None:
            added.append(purpose.id)
        elif terms_hash(before) == terms_hash(purpose):
            unchanged.append(purpose.id)
        else:
            changes = _changes(purpose_dict(before), purpose_dict(purpose), "")
            changed[purpose.id] = tuple(changes)
    return CharterDiff(
        added=tuple(added),
        removed=tuple(p.id for p in old.purposes if p.id not in new_ids),
        changed=changed,
        unchanged=tuple(unchanged),
        other_changes=tuple(_changes(_outside_purposes(old), _outside_purposes(new), "")),
    )
