"""The policy decision point for reusers' access requests: charter + request -> decision.

`decide` answers `permit`, `deny` or `needs_approval`, with the obligations the gateway and
the releases must honour and, for each obligation and each refusal, the charter clause behind
it (`purposes.energy-coaching.approval`), so a reuser, the committee and an auditor can all see
why. It reads nothing but what it is given: the same request under the same charter always
gets the same answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from charter.document import CharterDocument, Purpose

INDIVIDUAL, AGGREGATE = "individual", "aggregate"


@dataclass(frozen=True)
class DatasetFacts:
    """What the decision needs to know of one dataset (from the holder's registration)."""

    id: str
    data_category: str
    subject_field: str | None
    fields: tuple[str, ...]
    sensitive: frozenset[str]


@dataclass(frozen=True)
class RequestFacts:
    """One access request as filed (already checked for shape by the schema)."""

    purpose_id: str
    mode: str
    datasets: tuple[DatasetFacts, ...]
    fields: Mapping[str, Sequence[str]]  # dataset id -> fields asked for (empty: the default)
    period_start: datetime
    period_end: datetime


@dataclass(frozen=True)
class Requester:
    slug: str
    reuser_category: str | None


@dataclass
class Decision:
    """The answer, with every obligation and refusal tied to its clause."""

    outcome: str  # permit | deny | needs_approval
    obligations: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[dict[str, Any]] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict)  # what will be served
    recipient_id: str = ""


def _clause(purpose: Purpose, name: str) -> str:
    return f"purposes.{purpose.id}.{name}"


def decide(doc: CharterDocument, requester: Requester, request: RequestFacts) -> Decision:
    """Decide one request under the charter `doc`."""
    purpose = doc.purpose(request.purpose_id)
    if purpose is None:
        return Decision(
            "deny",
            reasons=[{"clause": "purposes", "message": "No such purpose in the charter."}],
        )
    deny: list[dict[str, Any]] = []
    approval: list[dict[str, Any]] = []
    if requester.reuser_category not in purpose.reuser_categories:
        deny.append(
            {
                "clause": _clause(purpose, "reuser_categories"),
                "message": f"The purpose is open to {', '.join(purpose.reuser_categories)}"
                f" only, not to {requester.reuser_category or 'this organisation'}.",
            }
        )
    if purpose.recipients == "named" and requester.slug not in purpose.recipient_ids:
        deny.append(
            {
                "clause": _clause(purpose, "named_reusers"),
                "message": "The charter names the reusers of this purpose; you are not one.",
            }
        )
    recipient = requester.slug if purpose.recipients == "named" else requester.reuser_category
    if request.mode not in purpose.modes:
        deny.append(
            {
                "clause": _clause(purpose, "modes"),
                "message": f"This purpose allows {', '.join(purpose.modes)} access only.",
            }
        )
    for dataset in request.datasets:
        if dataset.data_category not in purpose.data_categories:
            deny.append(
                {
                    "clause": _clause(purpose, "data_categories"),
                    "message": f"Dataset {dataset.id} holds {dataset.data_category}, which this"
                    " purpose does not cover.",
                }
            )
    if deny:
        return Decision("deny", reasons=deny)

    obligations: list[dict[str, Any]] = [
        {
            "type": "retention",
            "days": purpose.retention_days,
            "clause": _clause(purpose, "retention_days"),
        }
    ]
    served: dict[str, list[str]] = {}
    if request.mode == AGGREGATE:
        obligations.append({"type": "aggregate_only", "clause": _clause(purpose, "modes")})
        obligations.append(
            {
                "type": "budget_cap",
                "rho_per_release": str(doc.privacy.rho_cap_per_release),
                "rho_per_period": str(doc.privacy.rho_per_period),
                "clause": "privacy.rho_cap_per_release",
            }
        )
    else:
        obligations.append({"type": "pseudonymise", "clause": "privacy.unit"})
        dropped: dict[str, list[str]] = {}
        for dataset in request.datasets:
            asked = list(request.fields.get(dataset.id) or ())
            ordinary = [f for f in dataset.fields if f != dataset.subject_field]
            chosen = asked or [f for f in ordinary if f not in dataset.sensitive]
            sensitive = sorted(set(chosen) & dataset.sensitive)
            if sensitive:
                approval.append(
                    {
                        "clause": _clause(purpose, "data_categories"),
                        "message": f"Sensitive fields of {dataset.id} asked for"
                        f" ({', '.join(sensitive)}): the committee decides.",
                    }
                )
            served[dataset.id] = chosen
            gone = [f for f in dataset.fields if f not in chosen]
            if gone:
                dropped[dataset.id] = gone
        if dropped:
            obligations.append({"type": "drop_fields", "fields": dropped, "clause": "privacy.unit"})
    if purpose.approval == "committee":
        approval.append(
            {
                "clause": _clause(purpose, "approval"),
                "message": "The charter has the committee approve every request for this purpose.",
            }
        )
    outcome = "needs_approval" if approval else "permit"
    return Decision(
        outcome,
        obligations=obligations,
        reasons=approval,
        fields=served,
        recipient_id=str(recipient),
    )
