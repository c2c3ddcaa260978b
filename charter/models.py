"""Stored charter versions: the normalized document and its hashes, never edited."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, String
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, HasId


class CharterVersion(HasId, Base):
    """One published version. `sha256` is over the RFC 8785 canonical form of `document`."""

    __tablename__ = "charter_version"
    version: Mapped[str] = mapped_column(String(32), unique=True)
    sha256: Mapped[str] = mapped_column(String(64))
    effective_from: Mapped[date] = mapped_column(Date)
    published_at: Mapped[datetime] = mapped_column(index=True)
    supersede_grace_days: Mapped[int]
    # Deferred: parsed documents are cached by sha256, so most reads never need these.
    document: Mapped[dict[str, Any]] = mapped_column(JSON, deferred=True)
    terms_hashes: Mapped[dict[str, str]] = mapped_column(JSON)
    source_yaml: Mapped[str] = mapped_column(deferred=True)
