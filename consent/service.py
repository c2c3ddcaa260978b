"""Consents: give, renew, withdraw, expire, supersede; receipts and DPV / ISO 27560 exports.

Each change appends a ConsentEvent, updates the projection, signs a new receipt, writes an
audit entry and an outbox message, all in the caller's transaction (effective at commit).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Insert, Table, bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, class_mapper, make_transient_to_detached

from audit import service as audit
from charter import service as charters
from charter.document import CharterDocument, Purpose
from common import outbox
from common.clock import as_utc, utcnow
from common.errors import ConflictError, InvalidInputError, NotFoundError
from common.keyring import app_keyring, sign
from common.settings import setting
from consent.models import (
    Consent,
    ConsentEvent,
    ConsentStatus,
    EventType,
    Mode,
    RecipientKind,
)

LEGAL_BASIS = "dpv:ExplicitlyExpressedConsent"  # GDPR art. 6-1-a, given by an explicit act
LANGUAGES = ("fr", "en")
DPV_STATUS = {
    EventType.GIVEN: "dpv:ConsentGiven",
    EventType.RENEWED: "dpv:RenewedConsentGiven",
    EventType.WITHDRAWN: "dpv:ConsentWithdrawn",
    EventType.EXPIRED: "dpv:ConsentExpired",
    EventType.SUPERSEDED: "dpv:ConsentInvalidated",
}
STATUS_AFTER = {
    EventType.GIVEN: ConsentStatus.GIVEN,
    EventType.RENEWED: ConsentStatus.GIVEN,
    EventType.WITHDRAWN: ConsentStatus.WITHDRAWN,
    EventType.EXPIRED: ConsentStatus.EXPIRED,
    EventType.SUPERSEDED: ConsentStatus.SUPERSEDED,
}


@dataclass(frozen=True)
class GiveConsent:
    """A citizen's consent to one purpose, for one recipient, in one mode.

    Empty `data_categories` means all of the purpose's; no `duration_days` means the
    charter's maximum for that purpose; `notice_hash`, when given, must be the notice
    this charter renders (the proof of what the citizen was shown).
    """

    subject_id: uuid.UUID
    purpose_id: str
    terms_hash: str
    recipient_id: str
    language: str = "fr"
    mode: Mode | None = None
    data_categories: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    duration_days: int | None = None
    notice_hash: str | None = None
    method: str = "portal"
    # An app acting for the citizen may only give consents naming its own organisation.
    recipients: Collection[str] | None = None


@dataclass(frozen=True)
class RenewConsent:
    """Renew a consent under the current terms, for the same recipient and mode."""

    subject_id: uuid.UUID
    consent_id: uuid.UUID
    terms_hash: str
    language: str = "fr"
    duration_days: int | None = None
    notice_hash: str | None = None
    method: str = "portal"
    recipients: Collection[str] | None = None


def _check_terms(
    charter: charters.Charter,
    purpose: Purpose,
    *,
    terms: str,
    language: str,
    shown_notice: str | None,
    duration_days: int | None,
    errors: dict[str, list[str]],
) -> None:
    if terms != charter.terms_hash(purpose):
        errors["terms_hash"] = [
            f"These are not the terms of charter {charter.version}; read them again."
        ]
    if language not in LANGUAGES:
        errors["language"] = ['Must be "fr" or "en".']
    elif shown_notice is not None and shown_notice != charter.notice_hash(purpose, language):
        errors["notice_hash"] = ["This is not the notice of the current charter."]
    if duration_days is not None and not 1 <= duration_days <= purpose.consent_max_days:
        errors["duration_days"] = [
            f"The charter allows from 1 to {purpose.consent_max_days} days for this purpose."
        ]


def _recipient_kind(purpose: Purpose) -> RecipientKind:
    return RecipientKind.ORGANISATION if purpose.recipients == "named" else RecipientKind.CATEGORY


def give(session: Session, command: GiveConsent) -> Consent:
    """Record a consent under the current charter; effective at commit.

    InvalidInputError lists every field the charter refuses; ConflictError if the same
    consent (purpose, recipient, mode) is already in force: renew it instead.
    """
    charter = charters.current(session)
    purpose = charter.require_purpose(command.purpose_id)
    errors: dict[str, list[str]] = {}
    _check_terms(
        charter,
        purpose,
        terms=command.terms_hash,
        language=command.language,
        shown_notice=command.notice_hash,
        duration_days=command.duration_days,
        errors=errors,
    )
    if command.recipient_id not in purpose.recipient_ids:
        errors["recipient_id"] = [f"Must be one of: {', '.join(purpose.recipient_ids)}."]
    elif command.recipients is not None and command.recipient_id not in command.recipients:
        errors["recipient_id"] = ["This app may only record consents naming its organisation."]
    modes = list(purpose.modes)
    mode = command.mode or (Mode(modes[0]) if len(modes) == 1 else None)
    if mode is None or mode.value not in modes:
        errors["mode"] = [f"Must be one of: {', '.join(modes)}."]
    unknown = sorted(set(command.data_categories) - set(purpose.data_categories))
    if unknown:
        errors["data_categories"] = [f"Not covered by this purpose: {', '.join(unknown)}."]
    if errors:
        raise InvalidInputError("The consent does not fit the charter.", fields=errors)
    assert mode is not None  # noqa: S101 (checked above; for the type checker)

    now = utcnow()
    days = command.duration_days or purpose.consent_max_days
    consent = Consent(
        id=uuid.uuid4(),
        subject_id=command.subject_id,
        purpose_id=purpose.id,
        recipient_kind=_recipient_kind(purpose),
        recipient_id=command.recipient_id,
        mode=mode,
        data_categories=list(command.data_categories or purpose.data_categories),
        datasets=list(command.datasets),
        legal_basis=LEGAL_BASIS,
        method=command.method,
        language=command.language,
        charter_version=charter.version,
        terms_hash=charter.terms_hash(purpose),
        notice_hash=charter.notice_hash(purpose, command.language),
        status=ConsentStatus.GIVEN,
        given_at=now,
        expires_at=now + timedelta(days=days),
        withdrawn_at=None,
        ended_at=None,
        receipt="",
        created_at=now,
        events=[],  # a new consent has no history to load
    )
    _record(session, consent, EventType.GIVEN, method=command.method, actor="citizen", at=now)
    _insert_new(session, consent)
    return consent


def _insert_new(session: Session, consent: Consent) -> None:
    """Write a new consent and its first event, then put both in the session as if loaded.

    Two Core INSERTs (one statement on PostgreSQL) do what the flush of the two new objects
    would, without the unit of work's overhead (it was the largest single cost of giving a
    consent). The partial unique
    index decides races between two consents in force, as in `_flush_in_force`.
    """
    (first,) = consent.events
    connection = session.connection()
    try:
        if connection.dialect.name == "postgresql":
            values = _column_values(consent, "c_") | _column_values(first, "e_")
            connection.execute(_INSERT_BOTH, values)
        else:
            connection.execute(_INSERT_CONSENT, _column_values(consent))
            connection.execute(_INSERT_EVENT, _column_values(first))
    except IntegrityError as exc:
        raise ConflictError(
            "A consent for this purpose, recipient and mode is already in force; renew it."
        ) from exc
    # Documented SQLAlchemy: a transient object whose row exists becomes persistent and clean.
    make_transient_to_detached(first)
    make_transient_to_detached(consent)
    session.add(consent)  # and its event, by cascade


_INSERT_CONSENT = insert(cast(Table, Consent.__table__)).inline()
_INSERT_EVENT = insert(cast(Table, ConsentEvent.__table__)).inline()
_COLUMNS = {
    model: [(attr.key, attr.columns[0].key) for attr in class_mapper(model).column_attrs]
    for model in (Consent, ConsentEvent)
}


def _both_at_once() -> Insert:
    """PostgreSQL: the consent and its first event in one statement (a data-modifying CTE);
    the event's foreign key is checked at the end of the statement, when the consent exists."""
    consent, event = cast(Table, Consent.__table__), cast(Table, ConsentEvent.__table__)

    def values(table: Table, prefix: str) -> dict[str, Any]:
        return {c.key: bindparam(prefix + c.key, type_=c.type) for c in table.columns}

    new_consent = insert(consent).values(values(consent, "c_")).cte("new_consent")
    return insert(event).values(values(event, "e_")).add_cte(new_consent)


_INSERT_BOTH = _both_at_once()


def _column_values(instance: Consent | ConsentEvent, prefix: str = "") -> dict[str, Any]:
    return {prefix + column: getattr(instance, key) for key, column in _COLUMNS[type(instance)]}


def _flush_in_force(session: Session) -> None:
    """Flush now: the partial unique index decides races between two consents in force."""
    try:
        session.flush()
    except IntegrityError as exc:
        raise ConflictError(
            "A consent for this purpose, recipient and mode is already in force; renew it."
        ) from exc


def renew(session: Session, command: RenewConsent) -> Consent:
    """Renew under the current terms in one step; the new expiry counts from now.

    A withdrawn consent is not renewed (the citizen gives a new one). NotFoundError for a
    consent that is not the citizen's.
    """
    consent = get_for_subject(
        session, command.subject_id, command.consent_id, lock=True, recipients=command.recipients
    )
    charter = charters.current(session)
    purpose = _renewable_purpose(consent, charter)
    errors: dict[str, list[str]] = {}
    _check_terms(
        charter,
        purpose,
        terms=command.terms_hash,
        language=command.language,
        shown_notice=command.notice_hash,
        duration_days=command.duration_days,
        errors=errors,
    )
    if errors:
        raise InvalidInputError("The renewal does not fit the charter.", fields=errors)
    now = utcnow()
    consent.charter_version = charter.version
    consent.terms_hash = charter.terms_hash(purpose)
    consent.language = command.language
    consent.notice_hash = charter.notice_hash(purpose, command.language)
    consent.expires_at = now + timedelta(days=command.duration_days or purpose.consent_max_days)
    consent.ended_at = None
    _record(session, consent, EventType.RENEWED, method=command.method, actor="citizen", at=now)
    _flush_in_force(session)
    return consent


@dataclass(frozen=True)
class RenewalTerms:
    """What a renewal of a consent would accept now."""

    terms_hash: str
    notice_hash: str
    terms_changed: bool  # the charter changed this purpose's terms since the consent


def _renewable_purpose(consent: Consent, charter: charters.Charter | None) -> Purpose:
    if consent.status is ConsentStatus.WITHDRAWN:
        raise ConflictError("A withdrawn consent cannot be renewed; give a new one.")
    purpose = charter.doc.purpose(consent.purpose_id) if charter else None
    if purpose is None:
        raise ConflictError("This purpose is no longer in the charter.")
    return purpose


def renewal_terms(
    consent: Consent, charter: charters.Charter | None, language: str
) -> RenewalTerms | None:
    """The terms a renewal would accept now, or None when `renew` would refuse it."""
    try:
        purpose = _renewable_purpose(consent, charter)
    except ConflictError:
        return None
    assert charter is not None  # noqa: S101 (a purpose was found in it)
    current_terms = charter.terms_hash(purpose)
    return RenewalTerms(
        terms_hash=current_terms,
        notice_hash=charter.notice_hash(purpose, language),
        terms_changed=current_terms != consent.terms_hash,
    )


def withdraw(
    session: Session,
    *,
    subject_id: uuid.UUID,
    consent_id: uuid.UUID,
    method: str,
    recipients: Collection[str] | None = None,
) -> Consent:
    """Withdraw; effective at commit. Idempotent: a consent no longer in force is returned
    as it is. NotFoundError for someone else's consent (no IDOR)."""
    consent = get_for_subject(session, subject_id, consent_id, lock=True, recipients=recipients)
    if consent.status is not ConsentStatus.GIVEN:
        return consent
    _record(session, consent, EventType.WITHDRAWN, method=method, actor="citizen", at=utcnow())
    return consent


def sweep(session: Session) -> dict[str, int]:
    """End what time has ended: consents past their expiry become `expired`, consents under
    terms that a later charter version changed become `superseded` once its grace period
    is over. Idempotent; run by Celery beat."""
    now = utcnow()
    counts = {"expired": 0, "superseded": 0}
    in_force = session.scalars(
        select(Consent).where(Consent.status == ConsentStatus.GIVEN).with_for_update()
    ).all()
    deadlines = _supersede_deadlines(session)
    for consent in in_force:
        if consent.expires_at <= now:
            _record(session, consent, EventType.EXPIRED, method="system", actor="system", at=now)
            counts["expired"] += 1
            continue
        deadline = deadlines(consent)
        if deadline is not None and deadline <= now:
            _record(session, consent, EventType.SUPERSEDED, method="system", actor="system", at=now)
            counts["superseded"] += 1
    return counts


def _supersede_deadlines(session: Session) -> Callable[[Consent], datetime | None]:
    """For a consent: when the first version that changed (or dropped) its purpose's terms,
    published after the consent's terms, ends its grace period; None if none did."""
    history = [charters.get_version(session, row.version) for row in charters.versions(session)]

    def deadline(consent: Consent) -> datetime | None:
        start = next(
            (i for i, c in enumerate(history) if c.version == consent.charter_version), None
        )
        for charter in history[(start or 0) + 1 :]:
            if charter.row.terms_hashes.get(consent.purpose_id) != consent.terms_hash:
                return charter.supersede_deadline()
        return None

    return deadline


def _record(
    session: Session, consent: Consent, kind: EventType, *, method: str, actor: str, at: datetime
) -> None:
    """Append the event, move the projection, re-sign the receipt, audit, and publish."""
    seq = len(consent.events) + 1
    consent.events.append(
        ConsentEvent(
            id=uuid.uuid4(),
            created_at=at,
            consent_id=consent.id,  # set now: a new consent is written without a flush
            seq=seq,
            type=kind,
            method=method,
            actor=actor,
            occurred_at=at,
            charter_version=consent.charter_version,
            terms_hash=consent.terms_hash,
            notice_hash=consent.notice_hash,
            expires_at=consent.expires_at,
        )
    )
    _project(consent, consent.events[-1])
    consent.receipt = _sign_receipt(consent)
    audit.append(
        session,
        event=f"consent:consent:{_VERB[kind]}",
        actor=actor,
        subject_id=consent.subject_id,
        purpose=consent.purpose_id,
        consent_id=consent.id,
        decision=consent.status.value,
        detail={"method": method, "charter_version": consent.charter_version, "seq": seq},
    )
    outbox.publish(
        session,
        f"consent.{kind.value}",
        {"consent_id": str(consent.id)},
        idempotency_key=f"consent.{kind.value}:{consent.id}:{seq}",
    )


_VERB = {
    EventType.GIVEN: "give",
    EventType.RENEWED: "renew",
    EventType.WITHDRAWN: "withdraw",
    EventType.EXPIRED: "expire",
    EventType.SUPERSEDED: "supersede",
}


def _project(consent: Consent, event: ConsentEvent) -> None:
    """Apply one event to the projection (the only place the state moves)."""
    consent.status = STATUS_AFTER[event.type]
    consent.charter_version = event.charter_version
    consent.terms_hash = event.terms_hash
    consent.notice_hash = event.notice_hash
    consent.expires_at = event.expires_at
    if event.type is EventType.GIVEN:
        consent.given_at = event.occurred_at
    if event.type is EventType.WITHDRAWN:
        consent.withdrawn_at = event.occurred_at
    consent.ended_at = None if consent.status is ConsentStatus.GIVEN else event.occurred_at


def replay(events: Sequence[ConsentEvent]) -> dict[str, Any]:
    """The state that a consent's events imply, to check the stored projection against."""
    state: dict[str, Any] = {}
    for event in sorted(events, key=lambda e: e.seq):
        state["status"] = STATUS_AFTER[event.type]
        state["expires_at"] = event.expires_at
        state["terms_hash"] = event.terms_hash
        state["charter_version"] = event.charter_version
        if event.type is EventType.WITHDRAWN:
            state["withdrawn_at"] = event.occurred_at
    return state


def get_for_subject(
    session: Session,
    subject_id: uuid.UUID,
    consent_id: uuid.UUID,
    *,
    lock: bool = False,
    recipients: Collection[str] | None = None,
) -> Consent:
    """One of the citizen's consents. NotFoundError if absent or someone else's (no IDOR),
    or, when `recipients` is given (an app acting for the citizen), if it names another."""
    consent = session.get(Consent, consent_id, with_for_update=lock)
    if consent is None or consent.subject_id != subject_id:
        raise NotFoundError("No such consent.")
    if recipients is not None and consent.recipient_id not in recipients:
        raise NotFoundError("No such consent.")
    return consent


def list_for_subject(
    session: Session,
    subject_id: uuid.UUID,
    *,
    statuses: Iterable[ConsentStatus] = (),
    recipients: Collection[str] | None = None,
) -> list[Consent]:
    """The citizen's consents, newest first, optionally only in the given statuses, and
    only those naming `recipients` when an app acting for the citizen asks."""
    query = select(Consent).where(Consent.subject_id == subject_id)
    if recipients is not None:
        query = query.where(Consent.recipient_id.in_(list(recipients)))
    wanted = list(statuses)
    if wanted:
        query = query.where(Consent.status.in_(wanted))
    return list(session.scalars(query.order_by(Consent.given_at.desc())))


def find_in_force(
    session: Session, *, subject_id: uuid.UUID, purpose_id: str, recipient_id: str, mode: Mode
) -> Consent | None:
    """The citizen's consent in force for this purpose, recipient and mode, if any."""
    return session.scalar(
        select(Consent).where(
            Consent.subject_id == subject_id,
            Consent.purpose_id == purpose_id,
            Consent.recipient_id == recipient_id,
            Consent.mode == mode,
            Consent.status == ConsentStatus.GIVEN,
            Consent.expires_at > utcnow(),
        )
    )


def in_force_for(
    session: Session,
    *,
    purpose_id: str,
    recipient_id: str,
    mode: Mode,
    dataset_id: str,
    data_category: str,
) -> dict[uuid.UUID, uuid.UUID]:
    """Citizens whose consent is in force *now* for this purpose, recipient, mode and dataset,
    each with that consent's id. For the gateway, at the moment of each read: a consent past
    its expiry or its supersede deadline counts as ended even before the sweep records it.

    A consent that names datasets covers those only; otherwise it covers its data categories.
    """
    now = utcnow()
    rows = session.execute(
        select(
            Consent.id,
            Consent.subject_id,
            Consent.purpose_id,
            Consent.datasets,
            Consent.data_categories,
            Consent.charter_version,
            Consent.terms_hash,
        ).where(
            Consent.purpose_id == purpose_id,
            Consent.recipient_id == recipient_id,
            Consent.mode == mode,
            Consent.status == ConsentStatus.GIVEN,
            Consent.expires_at > now,
        )
    ).all()
    deadlines = _supersede_deadlines(session)
    found: dict[uuid.UUID, uuid.UUID] = {}
    for consent in rows:
        covers = (
            dataset_id in consent.datasets
            if consent.datasets
            else data_category in consent.data_categories
        )
        deadline = deadlines(consent)  # type: ignore[arg-type] # a row with the same fields
        if covers and (deadline is None or deadline > now):
            found[consent.subject_id] = consent.id
    return found


def statuses(session: Session, consent_ids: Iterable[str]) -> dict[str, ConsentStatus]:
    """The status of each consent *now*: one past its expiry counts as expired even before
    the sweep records it, so nothing relies on a consent a moment too long."""
    ids = [uuid.UUID(i) for i in consent_ids]
    if not ids:
        return {}
    now = utcnow()
    rows = session.execute(
        select(Consent.id, Consent.status, Consent.expires_at).where(Consent.id.in_(ids))
    ).all()
    found = {
        str(cid): ConsentStatus.EXPIRED
        if status is ConsentStatus.GIVEN and as_utc(expires) <= now
        else status
        for cid, status, expires in rows
    }
    return {str(i): found.get(str(i), ConsentStatus.WITHDRAWN) for i in ids}


def dpv_status(consent: Consent) -> str:
    """The DPV consent status of the current state (RenewedConsentGiven after a renewal)."""
    return DPV_STATUS[consent.events[-1].type] if consent.events else "dpv:ConsentUnknown"


def record(consent: Consent) -> dict[str, Any]:
    """The consent record as plain JSON: what the receipt signs."""
    return {
        "id": str(consent.id),
        "subject": str(consent.subject_id),
        "controller": setting("ISSUER"),
        "purpose": {
            "id": consent.purpose_id,
            "charter_version": consent.charter_version,
            "terms_hash": consent.terms_hash,
        },
        "notice": {"language": consent.language, "sha256": consent.notice_hash},
        "recipient": {"kind": consent.recipient_kind.value, "id": consent.recipient_id},
        "mode": consent.mode.value,
        "data_categories": list(consent.data_categories),
        "datasets": list(consent.datasets),
        "legal_basis": consent.legal_basis,
        "method": consent.method,
        "status": consent.status.value,
        "dpv_status": dpv_status(consent),
        "given_at": consent.given_at.isoformat(),
        "expires_at": consent.expires_at.isoformat(),
        "withdrawn_at": consent.withdrawn_at.isoformat() if consent.withdrawn_at else None,
        "events": len(consent.events),
    }


def _sign_receipt(consent: Consent) -> str:
    now = utcnow()
    claims = {
        "iss": setting("ISSUER"),
        "iat": int(now.timestamp()),
        "jti": str(uuid.uuid4()),
        "sub": str(consent.subject_id),
        "consent": record(consent),
    }
    return sign(claims, app_keyring().active(), typ="consent-receipt+jwt")


def to_jsonld(consent: Consent, doc: CharterDocument | None = None) -> dict[str, Any]:
    """The record as W3C DPV / ISO/IEC TS 27560 JSON-LD, with its full event history."""
    issuer = setting("ISSUER")
    purpose = doc.purpose(consent.purpose_id) if doc else None
    purpose_iri = (
        f"{issuer}/api/v1/charter/versions/{consent.charter_version}/odrl#{consent.purpose_id}"
    )
    return {
        "@context": {
            "dpv": "https://w3id.org/dpv#",
            "dct": "http://purl.org/dc/terms/",
            "xsd": "http://www.w3.org/2001/XMLSchema#",
            "tiers": f"{issuer}/ns#",
        },
        "@id": f"urn:uuid:{consent.id}",
        "@type": "dpv:ConsentRecord",
        "dct:conformsTo": "https://w3id.org/dpv/guides/consent-27560",
        "dct:identifier": str(consent.id),
        "dpv:hasDataSubject": {"@id": f"urn:tiers:subject:{consent.subject_id}"},
        "dpv:hasDataController": {"@id": issuer, "@type": "dpv:DataController"},
        "dpv:hasPurpose": {
            "@id": purpose_iri,
            "dct:identifier": consent.purpose_id,
            **(
                {
                    "dct:title": {
                        "@value": purpose.title.get(consent.language),
                        "@language": consent.language,
                    }
                }
                if purpose
                else {}
            ),
        },
        "dpv:hasPersonalData": [
            {"@id": f"{issuer}/ns/data-categories/{c}"} for c in consent.data_categories
        ],
        "tiers:datasets": list(consent.datasets),
        "dpv:hasRecipient": {
            "@type": "dpv:Recipient",
            "dct:identifier": consent.recipient_id,
            "tiers:recipientKind": consent.recipient_kind.value,
        },
        "tiers:mode": consent.mode.value,
        "dpv:hasLegalBasis": {"@id": consent.legal_basis},
        "dpv:hasConsentStatus": {"@id": dpv_status(consent)},
        "dpv:hasNotice": {
            "@type": "dpv:ConsentNotice",
            "dct:language": consent.language,
            "tiers:sha256": consent.notice_hash,
        },
        "dct:language": consent.language,
        "dpv:hasJurisdiction": {"@id": "https://w3id.org/dpv/loc#FR"},
        "dpv:hasStorageCondition": (
            {"@type": "dpv:StorageDuration", "dpv:hasDuration": f"P{purpose.retention_days}D"}
            if purpose
            else {"@type": "dpv:StorageDuration"}
        ),
        "dpv:hasConsentControl": {
            "@type": "dpv:WithdrawConsent",
            "dct:description": f"{issuer}/me/consents/{consent.id}",
        },
        "dpv:hasIndicationMethod": consent.method,
        "dpv:isIndicatedAtTime": {"@value": consent.given_at.isoformat(), "@type": "xsd:dateTime"},
        "dct:valid": f"{consent.given_at.isoformat()}/{consent.expires_at.isoformat()}",
        "tiers:charterVersion": consent.charter_version,
        "tiers:termsHash": consent.terms_hash,
        "tiers:events": [
            {
                "dct:date": {"@value": e.occurred_at.isoformat(), "@type": "xsd:dateTime"},
                "dpv:hasConsentStatus": {"@id": DPV_STATUS[e.type]},
                "dpv:isIndicatedBy": e.actor,
                "dpv:hasIndicationMethod": e.method,
                "tiers:charterVersion": e.charter_version,
                "tiers:termsHash": e.terms_hash,
                "dct:valid": e.expires_at.isoformat(),
            }
            for e in consent.events
        ],
    }


def export_all(
    session: Session, subject_id: uuid.UUID, *, recipients: Collection[str] | None = None
) -> dict[str, Any]:
    """Every consent of one citizen as one JSON-LD document (their data portability)."""
    doc = current_doc(session)
    consents = list_for_subject(session, subject_id, recipients=recipients)
    records = [to_jsonld(c, doc) for c in consents]
    return {"@context": records[0]["@context"] if records else {}, "@graph": records}


def current_doc(session: Session) -> CharterDocument | None:
    """The document of the charter in force, if any (exports name purposes with it)."""
    charter = charters.current_or_none(session)
    return charter.doc if charter else None
