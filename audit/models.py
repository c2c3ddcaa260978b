"""Audit rows: append-only (a database trigger refuses UPDATE and DELETE)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, HasId


class AuditEntry(HasId, Base):
    """One event. No names, e-mails, tokens or holder identifiers: subjects appear as tags."""

    __tablename__ = "audit_entry"
    occurred_at: Mapped[datetime] = mapped_column(index=True)
    event: Mapped[str] = mapped_column(String(64), index=True)  # package:subject:action
    actor: Mapped[str] = mapped_column(String(128))
    subject_tag: Mapped[str | None] = mapped_column(String(64), index=True)
    purpose: Mapped[str | None] = mapped_column(String(64))
    consent_id: Mapped[uuid.UUID | None]
    decision: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
