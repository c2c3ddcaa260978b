"""The policy decision point: may this reuser ask citizens for this access, under the charter?

Checked before a citizen ever sees a consent screen, so nobody is asked to agree to
something the charter forbids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from charter import service as charters
from charter.document import Purpose
from common.errors import InvalidInputError

# RFC 9396 `type` of Tiers' authorization details, under the project's own URI.
DATA_ACCESS = "https://tiers-territorial.fr/oauth/data-access"
MAX_DETAILS = 8
_KNOWN_FIELDS = frozenset(
    {"type", "purpose", "datasets", "data_categories", "mode", "charter_version", "locations"}
)


@dataclass(frozen=True)
class Requester:
    """The organisation behind a client, as the charter knows it."""

    slug: str
    name: str
    reuser_category: str | None


@dataclass(frozen=True)
class DataAccess:
    """One authorization detail the charter permits, with what the consent will record."""

    purpose: Purpose
    mode: str
    data_categories: tuple[str, ...]
    datasets: tuple[str, ...]
    charter_version: str
    recipient_id: str

    def as_detail(self) -> dict[str, Any]:
        """The RFC 9396 object as granted (explicit values, never defaults left implicit)."""
        detail: dict[str, Any] = {
            "type": DATA_ACCESS,
            "purpose": self.purpose.id,
            "mode": self.mode,
            "data_categories": list(self.data_categories),
            "charter_version": self.charter_version,
        }
        if self.datasets:
            detail["datasets"] = list(self.datasets)
        return detail


def check_data_access(session: Session, details: Any, requester: Requester) -> list[DataAccess]:
    """Decide each detail against the current charter; InvalidInputError lists every refusal
    by path (`authorization_details[0].purpose`), so the reuser can fix its request."""
    if not isinstance(details, list) or not details:
        raise InvalidInputError(
            "authorization_details must be a non-empty JSON array.",
            fields={"authorization_details": ["Must be a non-empty JSON array."]},
        )
    if len(details) > MAX_DETAILS:
        raise InvalidInputError(
            "Too many authorization details.",
            fields={"authorization_details": [f"At most {MAX_DETAILS}."]},
        )
    charter = charters.current(session)
    errors: dict[str, list[str]] = {}
    granted: list[DataAccess] = []
    for index, detail in enumerate(details):
        path = f"authorization_details[{index}]"
        decided = _check_one(charter, detail, requester, path, errors)
        if decided is not None:
            granted.append(decided)
    if errors:
        raise InvalidInputError("The charter does not permit this request.", fields=errors)
    return granted


def _check_one(
    charter: charters.Charter,
    detail: Any,
    requester: Requester,
    path: str,
    errors: dict[str, list[str]],
) -> DataAccess | None:
    if not isinstance(detail, dict):
        errors[path] = ["Must be a JSON object."]
        return None
    if detail.get("type") != DATA_ACCESS:
        errors[f"{path}.type"] = [f'Must be "{DATA_ACCESS}".']
        return None
    unknown = sorted(set(detail) - _KNOWN_FIELDS)
    if unknown:
        errors[path] = [f"Unknown fields: {', '.join(unknown)}."]
    doc = charter.doc
    version = detail.get("charter_version", doc.version)
    if version != doc.version:
        errors[f"{path}.charter_version"] = [f"The charter in force is version {doc.version}."]
    purpose = next((p for p in doc.purposes if p.id == detail.get("purpose")), None)
    if purpose is None:
        errors[f"{path}.purpose"] = ["No such purpose in the charter."]
        return None
    if requester.reuser_category not in purpose.reuser_categories:
        errors[f"{path}.purpose"] = [
            f"The charter does not let {requester.reuser_category or 'this organisation'}"
            f" use the purpose {purpose.id!r}."
        ]
        return None
    if purpose.recipients == "named":
        recipient = requester.slug
        if recipient not in purpose.recipient_ids:
            errors[f"{path}.purpose"] = [
                f"The charter names the reusers of {purpose.id!r}; {requester.slug} is not one."
            ]
            return None
    else:
        recipient = str(requester.reuser_category)
    modes = list(purpose.modes)
    mode = detail.get("mode", modes[0] if len(modes) == 1 else None)
    if mode not in modes:
        errors[f"{path}.mode"] = [f"Must be one of: {', '.join(modes)}."]
    categories = _strings(detail.get("data_categories", []), f"{path}.data_categories", errors)
    datasets = _strings(detail.get("datasets", []), f"{path}.datasets", errors)
    outside = sorted(set(categories) - set(purpose.data_categories))
    if outside:
        errors[f"{path}.data_categories"] = [f"Not covered by this purpose: {', '.join(outside)}."]
    if path in errors or any(key.startswith(f"{path}.") for key in errors):
        return None
    return DataAccess(
        purpose=purpose,
        mode=str(mode),
        data_categories=tuple(categories) or purpose.data_categories,
        datasets=tuple(datasets),
        charter_version=doc.version,
        recipient_id=recipient,
    )


def _strings(value: Any, path: str, errors: dict[str, list[str]]) -> Sequence[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        errors[path] = ["Must be a list of strings."]
        return ()
    if len(value) > 32:
        errors[path] = ["At most 32."]
        return ()
    return list(dict.fromkeys(value))
