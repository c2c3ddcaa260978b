"""Erasing closed accounts (GDPR art. 17): what closing an account leaves for later.

Closing (consent.accounts.close_account) withdraws every consent and scrubs the address and
password at once. What the withdrawals still need waits: the notices to holders name the
citizen by the identifier their link keeps, and each notice attempt is logged under the
citizen's key. So the rest is erased here, by Celery beat, once nothing about the citizen is
still on its way. Nothing commits here.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import ColumnElement, delete, exists, or_, select
from sqlalchemy.orm import Session

from anonymize import service as anonymize
from audit import service as audit
from audit.service import browse
from broker.models import CommitteeMember, Notice, NoticeStatus, OrganisationMember
from common.clock import utcnow
from common.outbox import OutboxMessage
from consent import accounts, closing, links
from consent import service as consents


def erase_closed_accounts(session: Session, *, grace: timedelta) -> int:
    """Erase what remains of accounts closed over `grace` ago whose withdrawals are settled
    (`still_telling`): their links at holders, their DP staging and counters, the roles
    their account held, and their access log, crypto-shredded last. Returns how many were
    erased; idempotent. Accounts locked by another run are left to it."""
    erased = 0
    for citizen in accounts.closed_awaiting_erasure(session, closed_before=utcnow() - grace):
        subject_id = citizen.subject_id
        if closing.withdraw_all(session, subject_id):
            continue  # given in a request that raced the closing: told now, erased later
        if still_telling(session, subject_id):
            continue
        links.forget_subject(session, subject_id)
        anonymize.erase_subject(session, subject_id)
        session.execute(delete(CommitteeMember).where(CommitteeMember.citizen_id == citizen.id))
        session.execute(
            delete(OrganisationMember).where(OrganisationMember.citizen_id == citizen.id)
        )
        browse.remove_auditor(session, citizen_id=citizen.id)
        # Last: whatever the lines above logged about the citizen is shredded with the rest.
        audit.erase_subject(session, subject_id)
        accounts.mark_erased(citizen)
        erased += 1
    return erased


def still_telling(session: Session, subject_id: uuid.UUID) -> bool:
    """Whether something about this citizen is still on its way: an outbox message of one of
    their consents (a withdrawal not yet planned into notices) or of their closing, or a
    notice to a recipient still pending (delivered or dead ones are settled)."""
    consent_ids = [c.id for c in consents.list_for_subject(session, subject_id)]
    keys: list[ColumnElement[bool]] = [
        OutboxMessage.idempotency_key.like(f"consent.%:{c}:%") for c in consent_ids
    ]
    keys.append(OutboxMessage.idempotency_key == f"{closing.ACCOUNT_CLOSED}:{subject_id}")
    in_outbox = exists().where(OutboxMessage.delivered_at.is_(None), or_(*keys))
    pending = exists().where(Notice.subject_id == subject_id, Notice.status == NoticeStatus.PENDING)
    return bool(session.scalar(select(in_outbox | pending)))
