"""Tables of differentially private releases: staged records, the budget ledger, releases.

Staged values are integer fixed point keyed by Tiers' internal subject id (never a holder's);
budgets are zCDP rho as exact decimals; a release row is written once and never updated.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import Mapped, Mapper, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

from common.clock import utcnow
from common.db import Base, HasId

RHO_PLACES = 12  # rho is kept to 1e-12, always rounded up (a cost never shrinks in storage)
_BIGINT = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only


class ExactDecimal(TypeDecorator[Decimal]):
    """NUMERIC(24, 12) on PostgreSQL; a decimal string on SQLite, which has no exact decimal."""

    impl = Numeric(24, RHO_PLACES)
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> TypeEngine[Any]:
        chosen: TypeEngine[Any] = String(40) if dialect.name == "sqlite" else self.impl
        return cast(TypeEngine[Any], dialect.type_descriptor(chosen))

    def process_bind_param(self, value: Decimal | None, dialect: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError("rho is stored from a Decimal only (no float rounding)")
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Any) -> Decimal | None:
        return None if value is None else Decimal(str(value))


class DpDataset(Base):
    """What a release may compute on a dataset: the measure, its fixed point and its bounds.

    Public metadata, set by the ingestion from the holder's schema: `lower`/`upper` bound one
    citizen's value in one cell, in fixed-point units (`scale` units per dataset unit).
    """

    __tablename__ = "dp_dataset"
    dataset_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    data_category: Mapped[str] = mapped_column(String(64))
    measure: Mapped[str] = mapped_column(String(64))
    unit: Mapped[str] = mapped_column(String(32))
    scale: Mapped[int] = mapped_column(BigInteger)
    lower: Mapped[int] = mapped_column(BigInteger)
    upper: Mapped[int] = mapped_column(BigInteger)
    categories: Mapped[list[str]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class StagedRecord(Base):
    """One record pulled for an aggregate purpose, in integer fixed point.

    `month_index` is year * 12 + month - 1 in the territory's time zone: time buckets of
    releases are whole months, quarters or years. `recipient` is the recipient the consent
    it came under names (an organisation's slug, or a reuser category, as consents name
    them): a release by one reuser counts only rows staged under consents naming it. A
    citizen who consented for two recipients has one copy of their rows per recipient, and a
    release reads one recipient's copy only (service._recipient), never both.
    `valid_until` is when that consent ends; `expires_at` is the end of the charter's
    retention for the purpose.
    """

    __tablename__ = "dp_staged_record"
    __table_args__ = (
        Index("ix_dp_staged_record_subject", "dataset_id", "purpose", "subject_id"),
        Index("ix_dp_staged_record_cells", "dataset_id", "purpose", "month_index"),
    )
    id: Mapped[int] = mapped_column(_BIGINT, primary_key=True, autoincrement=True)
    dataset_id: Mapped[uuid.UUID]
    purpose: Mapped[str] = mapped_column(String(64))
    subject_id: Mapped[uuid.UUID]
    recipient: Mapped[str] = mapped_column(String(64))
    month_index: Mapped[int] = mapped_column(Integer)
    area: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(64), default="")
    value: Mapped[int] = mapped_column(BigInteger)
    staged_at: Mapped[datetime] = mapped_column(default=utcnow)
    valid_until: Mapped[datetime | None]
    expires_at: Mapped[datetime]


class BudgetAccount(HasId, Base):
    """One budget of the ledger: a population's or a reuser's rho for one charter period.

    Locked FOR UPDATE by every charge; `spent` only grows (nothing is ever refunded).
    """

    __tablename__ = "dp_budget_account"
    __table_args__ = (UniqueConstraint("kind", "holder", "period"),)
    kind: Mapped[str] = mapped_column(String(16))  # "population" | "reuser"
    holder: Mapped[str] = mapped_column(String(64))  # territory code | organisation id
    period: Mapped[str] = mapped_column(String(16))  # "2026", "2026-Q1", "2026-03"
    cap: Mapped[Decimal] = mapped_column(ExactDecimal())
    spent: Mapped[Decimal] = mapped_column(ExactDecimal())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Release(HasId, Base):
    """A differentially private release: its spec, its cost and its stored result. Immutable:
    served again at no cost; an UPDATE of a stored release raises."""

    __tablename__ = "dp_release"
    __table_args__ = (UniqueConstraint("organisation_id", "request_hash"),)
    organisation_id: Mapped[uuid.UUID] = mapped_column(index=True)
    client_id: Mapped[str] = mapped_column(String(64))
    request_hash: Mapped[str] = mapped_column(String(64))
    dataset_id: Mapped[uuid.UUID]
    purpose: Mapped[str] = mapped_column(String(64))
    period: Mapped[str] = mapped_column(String(16))
    mechanism: Mapped[str] = mapped_column(String(32))
    rho: Mapped[Decimal] = mapped_column(ExactDecimal())
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)


class BudgetCharge(HasId, Base):
    """One line of the ledger: what a release cost one account (append-only)."""

    __tablename__ = "dp_budget_charge"
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("dp_budget_account.id"), index=True)
    release_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("dp_release.id"), index=True)
    rho: Mapped[Decimal] = mapped_column(ExactDecimal())


class Contribution(Base):
    """How many releases one citizen's rows entered in one charter period, and their rho.

    A counter per (citizen, period), bumped by one set-based upsert in the release's own
    transaction: bounded by citizens x periods whatever the number of releases. rho is kept
    in integer units of 1e-12 (RHO_PLACES), so the sum is exact on every database. It is
    the citizen's own data: it goes with their erasure (service.erase_subject).
    """

    __tablename__ = "dp_contribution"
    subject_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)
    releases: Mapped[int] = mapped_column(Integer)
    rho_units: Mapped[int] = mapped_column(BigInteger)  # rho * 10**RHO_PLACES
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


@event.listens_for(Release, "before_update")
@event.listens_for(BudgetCharge, "before_update")
def _immutable(_mapper: Mapper[Any], _connection: Any, target: Any) -> None:
    raise RuntimeError(f"{type(target).__name__} rows are immutable")
