"""Erasing closed accounts (GDPR art. 17): what closing an account leaves for later.

Closing (consent.closing.close_account) withdraws every consent and scrubs the address and
password at once. What the withdrawals still need waits: the notices to holders name the
citizen by the identifier their link keeps, and each notice attempt is logged under the
citizen's key. So the rest is erased here, by Celery beat, once nothing about the citizen is
still on its way. One account per transaction (the caller's): one that fails holds up no
other. Nothing commits here.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Literal

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from anonymize import service as anonymize
from audit import service as audit
from audit.service import browse
from broker.models import Notice, NoticeStatus
from broker.service import notices, organisations
from common.clock import as_utc, utcnow
from consent import accounts, closing, links
from consent import service as consents
from consent.models import ConsentStatus

Outcome = Literal["erased", "waiting", "skipped"]


def settle(session: Session, citizen_id: uuid.UUID, *, grace: timedelta) -> Outcome:
    """Move one closed account towards its erasure, and erase it when it is due.

    Every round: a consent given in a request that raced the closing is withdrawn, and the
    notices of every withdrawn consent are planned (idempotent: the relay marks a message
    delivered when it hands it to Celery, not when `notify_withdrawal` has run). Erased
    only once `grace` has passed since the closing and nothing about the citizen is still
    on its way (`still_telling`): their links at holders, DP staging and counters, the roles
    their account held, and last their access log, crypto-shredded. "skipped": not a
    closed account awaiting erasure, or another run holds it.
    """
    citizen = accounts.lock_closed(session, citizen_id)
    if citizen is None:
        return "skipped"
    assert citizen.closed_at is not None  # noqa: S101 (lock_closed finds closed accounts only)
    subject_id = citizen.subject_id
    raced = closing.withdraw_all(session, subject_id)
    withdrawn = consents.list_for_subject(session, subject_id, statuses=[ConsentStatus.WITHDRAWN])
    for consent in withdrawn:
        notices.plan_withdrawal(session, str(consent.id))
    if raced or as_utc(citizen.closed_at) > utcnow() - grace:
        return "waiting"
    if still_telling(session, subject_id):
        return "waiting"
    links.forget_subject(session, subject_id)
    anonymize.erase_subject(session, subject_id)
    organisations.remove_memberships(session, citizen.id, actor="system")
    browse.remove_auditor(session, citizen_id=citizen.id)
    # Last: whatever the lines above logged about the citizen is shredded with the rest, and
    # what is logged about them afterwards names no one (audit.append).
    audit.erase_subject(session, subject_id)
    accounts.mark_erased(citizen)
    return "erased"


def still_telling(session: Session, subject_id: uuid.UUID) -> bool:
    """Whether something about this citizen is still on its way: an undelivered outbox
    message of their consents or of their closing (closing.still_sending), or a notice to a
    recipient still pending (delivered and dead ones are settled; a dead one cannot be
    retried once they are erased, notices.retry)."""
    if closing.still_sending(session, subject_id):
        return True
    pending = exists().where(Notice.subject_id == subject_id, Notice.status == NoticeStatus.PENDING)
    return bool(session.scalar(select(pending)))
