"""Signed withdrawal notices to holders and reusers, delivered with retries, and the
deletion confirmations reusers send back.

A withdrawal (an outbox message, so a crash loses nothing) is planned into one notice per
organisation that must know: every holder the citizen is linked with whose datasets the
consent covers, and every reuser whose grant for that purpose served the citizen's data. Each
notice is a compact JWS from Tiers' keyring (docs/holder-protocol.md, "Notices") naming the
citizen by the recipient's own identifier: the holder's, or the reuser's pseudonym. Delivery
is attempted at once, then with exponential backoff; after `max_attempts` the notice is dead
and listed for the committee. The notice id is the Idempotency-Key of every attempt, so a
recipient that gets it twice (a worker killed after the POST, before the commit) records it
once. Nothing here commits.
"""

from __future__ import annotations

import http.client
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from anonymize.pseudonyms import Pseudonymiser
from audit import service as audit
from broker.models import AccessGrant, Dataset, GrantDelivery, Notice, NoticeStatus, Organisation
from broker.service import outbound
from common.clock import as_utc, utcnow
from common.errors import ConflictError, NotFoundError
from common.keyring import Keyring, sign
from consent import accounts, links
from consent.models import Consent, ConsentStatus

WITHDRAWN = "consent.withdrawn"
NOTICE_TYP = "tiers-notice+jwt"
MAX_BACKOFF = timedelta(hours=1)


@dataclass(frozen=True)
class Attempt:
    """One delivery to make: where, what (already signed), under which idempotency key."""

    notice_id: uuid.UUID
    url: str
    body: str


def _covers(consent: Consent, dataset: Dataset) -> bool:
    if consent.datasets:
        return str(dataset.id) in consent.datasets
    return dataset.data_category in consent.data_categories


def plan_withdrawal(session: Session, consent_id: str) -> list[uuid.UUID]:
    """The notices a withdrawal owes, created once; returns those still to deliver."""
    consent = session.get(Consent, uuid.UUID(consent_id))
    if consent is None or consent.status is not ConsentStatus.WITHDRAWN:
        return []
    recipients: dict[uuid.UUID, str] = {}
    holder_ids = {link.holder_id for link in links.list_links(session, consent.subject_id)}
    if holder_ids:
        for dataset in session.scalars(select(Dataset).where(Dataset.holder_id.in_(holder_ids))):
            if _covers(consent, dataset):
                recipients[dataset.holder_id] = "holder"
    served = session.scalars(
        select(AccessGrant.organisation_id)
        .join(GrantDelivery, GrantDelivery.grant_id == AccessGrant.id)
        .where(
            GrantDelivery.subject_id == consent.subject_id,
            AccessGrant.purpose_id == consent.purpose_id,
            AccessGrant.recipient_id == consent.recipient_id,
        )
    )
    for organisation_id in served:
        recipients.setdefault(organisation_id, "reuser")
    existing = {
        n.organisation_id: n
        for n in session.scalars(
            select(Notice).where(Notice.consent_id == consent.id, Notice.kind == WITHDRAWN)
        )
    }
    now = utcnow()
    for organisation_id, role in recipients.items():
        organisation = session.get(Organisation, organisation_id)
        if organisation_id in existing or organisation is None or not organisation.webhook_url:
            continue
        existing[organisation_id] = Notice(
            id=uuid.uuid4(),
            consent_id=consent.id,
            subject_id=consent.subject_id,
            organisation_id=organisation_id,
            kind=WITHDRAWN,
            purpose_id=consent.purpose_id,
            recipient_role=role,
            status=NoticeStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
        )
        session.add(existing[organisation_id])
    session.flush()
    return [n.id for n in existing.values() if n.status is NoticeStatus.PENDING]


def due(session: Session, *, limit: int = 100) -> list[uuid.UUID]:
    """Pending notices whose next attempt is due (the beat sweep that retries)."""
    return list(
        session.scalars(
            select(Notice.id)
            .where(Notice.status == NoticeStatus.PENDING, Notice.next_attempt_at <= utcnow())
            .order_by(Notice.next_attempt_at)
            .limit(limit)
        )
    )


def claim(
    session: Session, notice_id: uuid.UUID, *, issuer: str, keyring: Keyring
) -> Attempt | None:
    """Lock a pending notice for one attempt (until the caller's commit) and sign it; None
    if it is gone, delivered, dead, or another worker holds it."""
    notice = session.scalars(
        select(Notice).where(Notice.id == notice_id).with_for_update(of=Notice, skip_locked=True)
    ).one_or_none()
    if notice is None or notice.status is not NoticeStatus.PENDING:
        return None
    url = notice.organisation.webhook_url
    if not url:
        return None
    if notice.recipient_role == "holder":
        refs = links.linked_subjects(session, notice.organisation_id, [notice.subject_id])
        subject = next(iter(refs), None)
    else:
        subject = Pseudonymiser(notice.organisation_id)(notice.subject_id)
    claims = {
        "iss": issuer,
        "iat": int(utcnow().timestamp()),
        "jti": str(notice.id),
        "type": notice.kind,
        "consent": str(notice.consent_id),
        "purpose": notice.purpose_id,
        "subject": subject,
    }
    return Attempt(notice.id, url, sign(claims, keyring.active(), typ=NOTICE_TYP))


def send(attempt: Attempt, *, timeout: float, rules: outbound.Policy) -> str | None:
    """POST the notice; None when the recipient acknowledged it (2xx), else why not."""
    if refused := outbound.connection_problem(attempt.url, rules):
        return refused
    parts = urlsplit(attempt.url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname or "", parts.port, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    try:
        connection.request(
            "POST",
            path,
            body=attempt.body.encode(),
            headers={"Content-Type": "application/jose", "Idempotency-Key": str(attempt.notice_id)},
        )
        response = connection.getresponse()
        response.read(64 * 1024)
    except (OSError, http.client.HTTPException) as exc:
        return f"unreachable: {type(exc).__name__}"
    finally:
        connection.close()
    if 200 <= response.status < 300:
        return None
    return f"answered {response.status}"


def record_attempt(
    session: Session, notice_id: uuid.UUID, error: str | None, *, max_attempts: int
) -> Notice:
    """After one attempt: delivered, or the next try scheduled (2^n s, at most an hour), or
    dead after `max_attempts`. Delivery and death are in the citizen's log."""
    notice = session.get(Notice, notice_id)
    if notice is None:
        raise NotFoundError("No such notice.")
    now = utcnow()
    notice.attempts += 1
    notice.last_attempt_at = now
    notice.last_error = error[:300] if error else None
    if error is None:
        notice.status, notice.delivered_at = NoticeStatus.DELIVERED, now
    elif notice.attempts >= max_attempts:
        notice.status = NoticeStatus.DEAD
    else:
        notice.next_attempt_at = now + min(MAX_BACKOFF, timedelta(seconds=2**notice.attempts))
    if notice.status is not NoticeStatus.PENDING:
        audit.append(
            session,
            event=f"broker:notice:{'deliver' if error is None else 'dead-letter'}",
            actor="system",
            subject_id=notice.subject_id,
            purpose=notice.purpose_id,
            consent_id=notice.consent_id,
            decision=notice.status.value,
            reason=notice.last_error,
            detail={"notice": str(notice.id), "organisation": notice.organisation.slug},
        )
    return notice


def retry(session: Session, notice_id: uuid.UUID, *, actor: str) -> Notice:
    """The committee puts a dead notice back in the queue (the recipient fixed its service)."""
    notice = session.get(Notice, notice_id)
    if notice is None:
        raise NotFoundError("No such notice.")
    if notice.status is not NoticeStatus.DEAD:
        raise ConflictError("Only a dead notice can be retried.")
    if accounts.erased(session, notice.subject_id):
        # Their link (the holder's identifier) and their log's keys are gone: nothing could
        # name them to the recipient, and logging the attempt must not undo the erasure.
        raise ConflictError("The citizen's account was erased: this notice can no longer be sent.")
    notice.status, notice.attempts, notice.next_attempt_at = NoticeStatus.PENDING, 0, utcnow()
    audit.append(
        session, event="broker:notice:retry", actor=actor, detail={"notice": str(notice.id)}
    )
    return notice


# --- reading and confirming -----------------------------------------------------------------


def own(session: Session, organisation_id: uuid.UUID) -> list[Notice]:
    return list(
        session.scalars(
            select(Notice)
            .where(Notice.organisation_id == organisation_id)
            .order_by(Notice.created_at.desc())
        )
    )


def confirm_deletion(session: Session, organisation_id: uuid.UUID, notice_id: uuid.UUID) -> Notice:
    """A reuser says it erased the citizen's data. Idempotent; another's notice is NotFound."""
    notice = session.get(Notice, notice_id)
    if notice is None or notice.organisation_id != organisation_id:
        raise NotFoundError("No such notice.")
    if notice.deletion_confirmed_at is None:
        notice.deletion_confirmed_at = utcnow()
        audit.append(
            session,
            event="broker:notice:confirm-deletion",
            actor=f"org:{notice.organisation.slug}",
            subject_id=notice.subject_id,
            purpose=notice.purpose_id,
            consent_id=notice.consent_id,
            detail={"notice": str(notice.id)},
        )
    return notice


def all_notices(session: Session, status: NoticeStatus | None = None) -> list[Notice]:
    query = select(Notice).order_by(Notice.created_at.desc()).limit(500)
    if status is not None:
        query = query.where(Notice.status == status)
    return list(session.scalars(query))


@dataclass(frozen=True)
class RecipientStatus:
    """For the citizen: what each recipient of a withdrawn consent has done."""

    organisation: str
    role: str
    delivered_at: datetime | None
    deletion_confirmed_at: datetime | None
    status: str


def for_consent(
    session: Session, subject_id: uuid.UUID, consent_id: uuid.UUID
) -> list[RecipientStatus]:
    """The notices of the citizen's own consent (another citizen's consent: an empty list)."""
    rows: Sequence[Notice] = session.scalars(
        select(Notice).where(Notice.consent_id == consent_id, Notice.subject_id == subject_id)
    ).all()
    return [
        RecipientStatus(
            n.organisation.name,
            n.recipient_role,
            as_utc(n.delivered_at) if n.delivered_at else None,
            as_utc(n.deletion_confirmed_at) if n.deletion_confirmed_at else None,
            n.status.value,
        )
        for n in rows
    ]
