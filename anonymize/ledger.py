"""The privacy-budget ledger: check and charge rho in the caller's transaction, under a lock.

Accounts are rows locked FOR UPDATE (PostgreSQL; SQLite's BEGIN IMMEDIATE serialises writers),
always in the same order, so two concurrent releases can never both spend the last of a
budget. A charge happens before any noise is drawn and is never refunded (anchors-dp.md §4.1).
Nothing commits here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import cast
from zoneinfo import ZoneInfo

from sqlalchemy import Insert, Table, select
from sqlalchemy.orm import Session

from anonymize.models import BudgetAccount
from common.clock import utcnow
from common.db import insert_or_merge
from common.errors import ConflictError

POPULATION = "population"
REUSER = "reuser"
TERRITORY_TIME = ZoneInfo("Europe/Paris")  # periods and months follow the territory's calendar


@dataclass(frozen=True, slots=True, order=True)
class AccountKey:
    """Which budget: a population (territory code) or a reuser (organisation id), one period."""

    kind: str
    holder: str
    period: str


@dataclass(frozen=True, slots=True)
class Balance:
    """An account as read: its cap, what is spent and what is left."""

    key: AccountKey
    cap: Decimal
    spent: Decimal

    @property
    def remaining(self) -> Decimal:
        return max(self.cap - self.spent, Decimal(0))


class BudgetExceededError(ConflictError):
    """The release would overspend a budget; nothing was charged. `remaining` per account."""

    code = "budget-exceeded"

    def __init__(self, detail: str, *, remaining: dict[str, Decimal]) -> None:
        super().__init__(detail, fields={k: [f"remaining rho {v}"] for k, v in remaining.items()})
        self.remaining = remaining


def period_of(when: datetime, period: str) -> str:
    """The charter period (`year`, `quarter` or `month`) `when` falls in, as a stable label."""
    local = when.astimezone(TERRITORY_TIME)
    if period == "year":
        return f"{local.year}"
    if period == "quarter":
        return f"{local.year}-Q{(local.month - 1) // 3 + 1}"
    if period == "month":
        return f"{local.year}-{local.month:02d}"
    raise ValueError(f"unknown budget period {period!r}")


def _insert(session: Session) -> Insert:
    table = cast(Table, BudgetAccount.__table__)
    return insert_or_merge(session, table).on_conflict_do_nothing(
        index_elements=["kind", "holder", "period"]
    )


def _lock(session: Session, key: AccountKey, cap: Decimal) -> BudgetAccount:
    """The account row, created at `cap` if new, locked until the transaction ends."""
    now = utcnow()
    session.execute(
        _insert(session).values(
            id=uuid.uuid4(),
            created_at=now,
            updated_at=now,
            kind=key.kind,
            holder=key.holder,
            period=key.period,
            cap=cap,
            spent=Decimal(0),
        )
    )
    return session.scalars(
        select(BudgetAccount)
        .where(
            BudgetAccount.kind == key.kind,
            BudgetAccount.holder == key.holder,
            BudgetAccount.period == key.period,
        )
        .with_for_update()
        .execution_options(populate_existing=True)  # the locked row, not a stale identity
    ).one()


def charge(
    session: Session, accounts: dict[AccountKey, Decimal], rho: Decimal
) -> list[BudgetAccount]:
    """Charge `rho` to every account (key -> cap for the period), or to none.

    Raises BudgetExceededError naming what remains when any account would go over its cap.
    The cap in force is the current charter's, also for an account made under an older one.
    """
    if rho <= 0:
        raise ValueError("a charge is positive")
    locked = [(_lock(session, key, cap), cap) for key, cap in sorted(accounts.items())]
    short: dict[str, Decimal] = {}
    for account, cap in locked:
        if account.cap != cap:
            account.cap = cap  # the charter in force decides, never a stale row
        if account.spent + rho > account.cap:
            short[f"{account.kind}:{account.period}"] = max(account.cap - account.spent, Decimal(0))
    if short:
        raise BudgetExceededError(
            f"This release needs rho {rho}; the budget left is "
            + ", ".join(f"{k}: {v}" for k, v in short.items())
            + ". Nothing was charged.",
            remaining=short,
        )
    now = utcnow()
    for account, _ in locked:
        account.spent = account.spent + rho
        account.updated_at = now
    session.flush()
    return [account for account, _ in locked]


def balance(session: Session, key: AccountKey, cap: Decimal) -> Balance:
    """An account's balance without locking it; an account never charged has spent 0."""
    row = session.scalar(
        select(BudgetAccount).where(
            BudgetAccount.kind == key.kind,
            BudgetAccount.holder == key.holder,
            BudgetAccount.period == key.period,
        )
    )
    return Balance(key, cap, row.spent if row is not None else Decimal(0))
