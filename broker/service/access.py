"""Reusers' access requests and the grants they become.

A request is decided by the charter at once (policies/access.py): `permit` makes a grant,
`deny` is recorded with its reasons, `needs_approval` waits for the committee, who approve or
reject it with a reason. Grants run from the request's period start to its end, and the
committee can suspend and resume them. A reuser only ever sees its own requests and grants:
another's answers NotFound, like one that does not exist. Every decision is audited in the
caller's transaction; nothing commits here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from audit import service as audit
from broker.models import (
    AccessGrant,
    AccessRequest,
    Dataset,
    Decision,
    Organisation,
    RequestStatus,
    Role,
)
from charter import service as charters
from common.clock import as_utc, utcnow
from common.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from policies import access as policy

T = TypeVar("T", AccessRequest, AccessGrant)
REQUESTER_ROLES = frozenset({Role.REUSER, Role.OBSERVATORY, Role.CITY_SERVICE})
MAX_PERIOD = timedelta(days=3 * 366)
MAX_DATASETS = 16


class GrantUnavailableError(ForbiddenError):
    """The grant exists and is the caller's, but cannot be used now (suspended, expired…)."""


@dataclass(frozen=True)
class GrantState:
    """Whether a grant may be used now, and why not."""

    usable: bool
    status: str  # active | suspended | expired | not_started


def grant_state(grant: AccessGrant, now: datetime | None = None) -> GrantState:
    now = now or utcnow()
    if grant.suspended_at is not None:
        return GrantState(False, "suspended")
    if as_utc(grant.expires_at) <= now:
        return GrantState(False, "expired")
    if as_utc(grant.starts_at) > now:
        return GrantState(False, "not_started")
    return GrantState(True, "active")


# --- filing ------------------------------------------------------------------------------


def _requester(session: Session, organisation_id: uuid.UUID) -> Organisation:
    organisation = session.get(Organisation, organisation_id)
    if organisation is None or organisation.role not in REQUESTER_ROLES:
        raise ForbiddenError("Only reusers, observatories and city services file access requests.")
    if organisation.suspended_at is not None:
        raise ForbiddenError("This organisation is suspended.")
    return organisation


def _datasets(session: Session, refs: Sequence[str], errors: dict[str, list[str]]) -> list[Dataset]:
    found: list[Dataset] = []
    for index, ref in enumerate(refs):
        try:
            dataset = session.get(Dataset, uuid.UUID(ref))
        except ValueError:
            dataset = None
        if dataset is None:
            errors[f"datasets[{index}]"] = ["No such dataset in the catalog."]
        elif not dataset.personal:
            errors[f"datasets[{index}]"] = [
                "Open data needs no request: download it from the catalog under its licence."
            ]
        else:
            found.append(dataset)
    return found


def _facts(dataset: Dataset) -> policy.DatasetFacts:
    return policy.DatasetFacts(
        id=str(dataset.id),
        data_category=dataset.data_category,
        subject_field=dataset.subject_field,
        fields=tuple(f["name"] for f in dataset.fields),
        sensitive=frozenset(f["name"] for f in dataset.fields if f.get("sensitive")),
    )


def _check_fields(
    datasets: Sequence[Dataset], asked: Mapping[str, Sequence[str]], errors: dict[str, list[str]]
) -> None:
    known = {str(d.id): d for d in datasets}
    for ref, names in asked.items():
        dataset = known.get(ref)
        if dataset is None:
            errors[f"fields.{ref}"] = ["Not one of the requested datasets."]
            continue
        declared = {f["name"] for f in dataset.fields} - {dataset.subject_field}
        unknown = sorted(set(names) - declared)
        if unknown:
            errors[f"fields.{ref}"] = [f"Not fields of this dataset: {', '.join(unknown)}."]


def file_request(
    session: Session,
    *,
    organisation_id: uuid.UUID,
    client_pk: uuid.UUID | None,
    data: Mapping[str, Any],
    actor: str,
) -> AccessRequest:
    """File a request and decide it under the charter in force; a permit makes its grant.

    InvalidInputError (by field) for what no charter could decide: unknown or open datasets,
    unknown fields, a period that ends before it starts or is too long.
    """
    organisation = _requester(session, organisation_id)
    errors: dict[str, list[str]] = {}
    refs = list(dict.fromkeys(data["datasets"]))
    datasets = _datasets(session, refs, errors)
    asked: Mapping[str, Sequence[str]] = data.get("fields") or {}
    _check_fields(datasets, asked, errors)
    start, end = as_utc(data.get("period_start") or utcnow()), as_utc(data["period_end"])
    if end <= start:
        errors["period_end"] = ["Must be after the start of the period."]
    elif end - start > MAX_PERIOD:
        errors["period_end"] = ["A grant lasts three years at most; file a new request then."]
    if end <= utcnow():
        errors.setdefault("period_end", []).append("Must be in the future.")
    if errors:
        raise InvalidInputError("The request cannot be filed as it is.", fields=errors)
    charter = charters.current(session)
    facts = policy.RequestFacts(
        purpose_id=data["purpose"],
        mode=data["mode"],
        datasets=tuple(_facts(d) for d in datasets),
        fields={ref: list(names) for ref, names in asked.items()},
        period_start=start,
        period_end=end,
    )
    requester = policy.Requester(organisation.slug, organisation.reuser_category)
    decision = policy.decide(charter.doc, requester, facts)
    row = AccessRequest(
        id=uuid.uuid4(),
        organisation_id=organisation.id,
        client_pk=client_pk,
        purpose_id=facts.purpose_id,
        mode=facts.mode,
        dataset_ids=[str(d.id) for d in datasets],
        fields=decision.fields,
        justification=data["justification"],
        period_start=start,
        period_end=end,
        charter_version=charter.doc.version,
        decision=Decision(decision.outcome),
        obligations=decision.obligations,
        reasons=decision.reasons,
        status={
            "permit": RequestStatus.APPROVED,
            "deny": RequestStatus.DENIED,
            "needs_approval": RequestStatus.PENDING,
        }[decision.outcome],
        created_at=utcnow(),
    )
    if decision.outcome != "needs_approval":  # the charter decided alone
        row.decided_at, row.decided_by = row.created_at, "charter"
    session.add(row)
    session.flush()
    audit.append(
        session,
        event="broker:access-request:decide",
        actor=actor,
        purpose=facts.purpose_id,
        decision=decision.outcome,
        reason="; ".join(r["clause"] for r in decision.reasons)[:200] or None,
        detail={
            "request": str(row.id),
            "organisation": organisation.slug,
            "mode": facts.mode,
            "datasets": row.dataset_ids,
        },
    )
    if decision.outcome == "permit":
        _make_grant(session, row, decision.recipient_id, actor="charter")
    return row


def _make_grant(
    session: Session, request: AccessRequest, recipient_id: str, *, actor: str
) -> AccessGrant:
    grant = AccessGrant(
        id=uuid.uuid4(),
        request_id=request.id,
        organisation_id=request.organisation_id,
        purpose_id=request.purpose_id,
        mode=request.mode,
        recipient_id=recipient_id,
        dataset_ids=list(request.dataset_ids),
        fields=dict(request.fields),
        obligations=list(request.obligations),
        starts_at=request.period_start,
        expires_at=request.period_end,
        created_at=utcnow(),
    )
    session.add(grant)
    session.flush()
    audit.append(
        session,
        event="broker:grant:create",
        actor=actor,
        purpose=grant.purpose_id,
        decision="permit",
        detail={
            "grant": str(grant.id),
            "request": str(request.id),
            "until": grant.expires_at.isoformat(),
        },
    )
    return grant


# --- the committee ---------------------------------------------------------------------------


def _locked(session: Session, model: type[T], row_id: uuid.UUID) -> T | None:
    """The row, locked until commit; only its own table is locked (PostgreSQL refuses FOR
    UPDATE on the nullable side of the outer joins that load its relationships)."""
    query = select(model).where(model.id == row_id).with_for_update(of=model)
    return session.scalars(query).one_or_none()


def _pending(session: Session, request_id: uuid.UUID) -> AccessRequest:
    row = _locked(session, AccessRequest, request_id)
    if row is None:
        raise NotFoundError("No such access request.")
    if row.status is not RequestStatus.PENDING:
        raise ConflictError(f"This request is already {row.status.value}.")
    return row


def _note(note: str) -> str:
    note = note.strip()
    if not note:
        raise InvalidInputError("Give the reason.", fields={"reason": ["Required."]})
    if len(note) > 2000:
        raise InvalidInputError(
            "The reason is too long.", fields={"reason": ["2000 characters at most."]}
        )
    return note


def approve(session: Session, request_id: uuid.UUID, *, actor: str, reason: str) -> AccessGrant:
    """The committee approves a pending request: its grant is made with the request's terms.

    The charter is asked again first: a request the charter in force now denies (a purpose
    since removed, a reuser category since excluded) cannot be approved.
    """
    note = _note(reason)
    row = _pending(session, request_id)
    datasets = [d for d in (session.get(Dataset, uuid.UUID(ref)) for ref in row.dataset_ids) if d]
    facts = policy.RequestFacts(
        purpose_id=row.purpose_id,
        mode=row.mode,
        datasets=tuple(_facts(d) for d in datasets),
        fields=row.fields,
        period_start=row.period_start,
        period_end=row.period_end,
    )
    organisation = row.organisation
    decision = policy.decide(
        charters.current(session).doc,
        policy.Requester(organisation.slug, organisation.reuser_category),
        facts,
    )
    if decision.outcome == "deny" or len(datasets) != len(row.dataset_ids):
        raise ConflictError("The charter in force no longer permits this request; reject it.")
    row.status, row.decided_at, row.decided_by, row.decision_note = (
        RequestStatus.APPROVED,
        utcnow(),
        actor,
        note,
    )
    return _make_grant(session, row, decision.recipient_id, actor=actor)


def reject(session: Session, request_id: uuid.UUID, *, actor: str, reason: str) -> AccessRequest:
    note = _note(reason)
    row = _pending(session, request_id)
    row.status, row.decided_at, row.decided_by, row.decision_note = (
        RequestStatus.REJECTED,
        utcnow(),
        actor,
        note,
    )
    audit.append(
        session,
        event="broker:access-request:reject",
        actor=actor,
        purpose=row.purpose_id,
        decision="deny",
        detail={"request": str(row.id)},
    )
    return row


def _grant_for_update(session: Session, grant_id: uuid.UUID) -> AccessGrant:
    grant = _locked(session, AccessGrant, grant_id)
    if grant is None:
        raise NotFoundError("No such grant.")
    return grant


def suspend(session: Session, grant_id: uuid.UUID, *, actor: str, reason: str) -> AccessGrant:
    note = _note(reason)
    grant = _grant_for_update(session, grant_id)
    if grant.suspended_at is not None:
        raise ConflictError("This grant is already suspended.")
    grant.suspended_at, grant.suspended_reason = utcnow(), note
    audit.append(
        session,
        event="broker:grant:suspend",
        actor=actor,
        purpose=grant.purpose_id,
        detail={"grant": str(grant.id)},
    )
    return grant


def resume(session: Session, grant_id: uuid.UUID, *, actor: str, reason: str) -> AccessGrant:
    note = _note(reason)
    grant = _grant_for_update(session, grant_id)
    if grant.suspended_at is None:
        raise ConflictError("This grant is not suspended.")
    grant.suspended_at, grant.suspended_reason = None, None
    audit.append(
        session,
        event="broker:grant:resume",
        actor=actor,
        purpose=grant.purpose_id,
        reason=note[:200],
        detail={"grant": str(grant.id)},
    )
    return grant


# --- reading ---------------------------------------------------------------------------------


def own_requests(session: Session, organisation_id: uuid.UUID) -> list[AccessRequest]:
    return list(
        session.scalars(
            select(AccessRequest)
            .where(AccessRequest.organisation_id == organisation_id)
            .order_by(AccessRequest.created_at.desc())
        )
    )


def own_request(
    session: Session, organisation_id: uuid.UUID, request_id: uuid.UUID
) -> AccessRequest:
    row = session.get(AccessRequest, request_id)
    if row is None or row.organisation_id != organisation_id:
        raise NotFoundError("No such access request.")
    return row


def own_grants(session: Session, organisation_id: uuid.UUID) -> list[AccessGrant]:
    return list(
        session.scalars(
            select(AccessGrant)
            .where(AccessGrant.organisation_id == organisation_id)
            .order_by(AccessGrant.created_at.desc())
        )
    )


def own_grant(session: Session, organisation_id: uuid.UUID, grant_id: uuid.UUID) -> AccessGrant:
    grant = session.get(AccessGrant, grant_id)
    if grant is None or grant.organisation_id != organisation_id:
        raise NotFoundError("No such grant.")
    return grant


def all_requests(session: Session, status: RequestStatus | None = None) -> list[AccessRequest]:
    """For the committee: every request, pending first."""
    query = select(AccessRequest).order_by(AccessRequest.created_at.desc())
    if status is not None:
        query = query.where(AccessRequest.status == status)
    return list(session.scalars(query))


def all_grants(session: Session) -> list[AccessGrant]:
    return list(session.scalars(select(AccessGrant).order_by(AccessGrant.created_at.desc())))


@dataclass(frozen=True)
class RegisterEntry:
    """One line of the public register of approved reuses."""

    organisation: str
    purpose_id: str
    mode: str
    datasets: list[Dataset]
    until: datetime
    status: str


def public_register(session: Session) -> list[RegisterEntry]:
    """Every approved reuse that has not ended: who, why, which data, until when. Suspended
    ones stay listed, as suspended: the public sees that the committee acted."""
    now = utcnow()
    grants = session.scalars(
        select(AccessGrant).where(AccessGrant.expires_at > now).order_by(AccessGrant.expires_at)
    ).all()
    ids = {uuid.UUID(ref) for grant in grants for ref in grant.dataset_ids}
    datasets = (
        {str(d.id): d for d in session.scalars(select(Dataset).where(Dataset.id.in_(ids)))}
        if ids
        else {}
    )
    return [
        RegisterEntry(
            organisation=grant.organisation.name,
            purpose_id=grant.purpose_id,
            mode=grant.mode,
            datasets=[datasets[ref] for ref in grant.dataset_ids if ref in datasets],
            until=grant.expires_at,
            status=grant_state(grant, now).status,
        )
        for grant in grants
    ]
