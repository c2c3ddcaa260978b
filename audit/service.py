"""`append`: the one door into the access log. Callers pass their session; nothing commits here.

The tamper-evident tree (a later issue) replaces the inside of `append`, never its callers.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from audit.models import AuditEntry
from common.clock import utcnow
from common.settings import keyed_tag

MAX_DETAIL_KEYS = 16


def subject_tag(subject_id: uuid.UUID) -> str:
    """The keyed HMAC that stands for a citizen in the log (never their id in clear)."""
    return keyed_tag("audit-subject", str(subject_id))


def append(
    session: Session,
    *,
    event: str,
    actor: str,
    subject_id: uuid.UUID | None = None,
    purpose: str | None = None,
    consent_id: uuid.UUID | None = None,
    decision: str | None = None,
    reason: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry in the caller's transaction: it exists iff the action it records does."""
    if len(detail or {}) > MAX_DETAIL_KEYS:
        raise ValueError("audit detail is bounded; put large data elsewhere")
    entry = AuditEntry(
        occurred_at=utcnow(),
        event=event,
        actor=actor,
        subject_tag=subject_tag(subject_id) if subject_id else None,
        purpose=purpose,
        consent_id=consent_id,
        decision=decision,
        reason=reason,
        detail=dict(detail or {}),
    )
    session.add(entry)
    return entry
