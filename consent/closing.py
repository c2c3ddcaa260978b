"""Closing an account (GDPR art. 17), composed from the account, its consents and its links.

What must outlive the closing for a while (links at holders, the access log's keys, DP
staging) is erased later by broker's erasure sweep, once every recipient has been told.
"""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from audit import service as audit
from common import outbox
from common.errors import NotFoundError
from consent import accounts, links, service
from consent.models import Citizen, ConsentStatus

ACCOUNT_CLOSED = "consent.account_closed"  # outbox topic: revoke what acts for the citizen


def close_own_account(
    session: Session,
    *,
    citizen_id: uuid.UUID,
    password: str,
    client: str,
    limit: accounts.RateLimit,
) -> accounts.SignIn:
    """A signed-in citizen closes their account. The password is checked as at sign-in, same
    rate limit, so a borrowed session can neither close the account nor guess the password
    through this form; failures are returned, not raised, for the caller to commit. Closed iff
    the outcome has a citizen. NotFoundError for an account already closed."""
    citizen = session.get(Citizen, citizen_id, with_for_update=True)
    if citizen is None or citizen.closed_at is not None:
        raise NotFoundError("No such account.")
    outcome = accounts.authenticate(
        session,
        email=citizen.email,
        password=password,
        client=client,
        limit=limit,
        action="reauthenticate",
    )
    if outcome.citizen is not None:
        close_account(session, outcome.citizen, actor="citizen")
    return outcome


def close_account(session: Session, citizen: Citizen, *, actor: str) -> None:
    """Close an account (GDPR art. 17); effective at commit.

    Every consent in force is withdrawn (the usual withdrawal: tokens revoked, recipients
    told, staged data dropped), pairing codes end, sessions end, and the address and
    password are scrubbed, so the address may sign up afresh. The consent records stay,
    under the pseudonymous subject id, as the proof of what was consented. Links at holders,
    the access log and DP staging are erased later by broker's erasure sweep, once every
    recipient has been told: a holder's notice names the citizen by the identifier the link
    keeps.
    """
    subject_id = citizen.subject_id
    withdraw_all(session, subject_id)
    links.end_codes(session, subject_id)
    accounts.scrub(session, citizen)
    audit.append(session, event="consent:citizen:close", actor=actor, subject_id=subject_id)
    outbox.publish(
        session,
        ACCOUNT_CLOSED,
        {"subject_id": str(subject_id)},
        idempotency_key=f"{ACCOUNT_CLOSED}:{subject_id}",
    )


def still_sending(session: Session, subject_id: uuid.UUID) -> bool:
    """Whether an outbox message of this citizen's consents (a withdrawal whose grants are
    not yet revoked, its staged rows not yet dropped, its notices not yet planned) or of
    their closing is still undelivered. The keys are consent's own (`service._record`)."""
    consent_ids = [c.id for c in service.list_for_subject(session, subject_id)]
    return outbox.undelivered(
        session,
        [f"consent.%:{c}:%" for c in consent_ids] + [f"{ACCOUNT_CLOSED}:{subject_id}"],
    )


def withdraw_all(session: Session, subject_id: uuid.UUID) -> int:
    """Withdraw every consent of this citizen still in force (method `account_closed`);
    returns how many. The erasure sweep calls it again, for a consent given in a request
    that raced the closing."""
    in_force = service.list_for_subject(session, subject_id, statuses=[ConsentStatus.GIVEN])
    for consent in in_force:
        service.withdraw(
            session, subject_id=subject_id, consent_id=consent.id, method="account_closed"
        )
    return len(in_force)
