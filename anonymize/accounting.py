"""Per-citizen accounting: how many releases a citizen's rows entered, and the rho they spent.

One counter per (citizen, charter period), bumped in the release's own transaction by one
set-based upsert (INSERT ... SELECT DISTINCT ... ON CONFLICT DO UPDATE): the database does the
work, whatever the number of citizens. rho is counted in integer units of 1e-12 (the ledger's
precision, costs already rounded up to it), so a sum of many releases is exact on SQLite as
on PostgreSQL. Nothing commits here.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import cast

from sqlalchemy import Table, delete, literal, select
from sqlalchemy.orm import Session

from anonymize import pushdown
from anonymize.models import RHO_PLACES, Contribution, StagedRecord
from common.clock import utcnow
from common.db import insert_or_merge


def rho_units(rho: Decimal) -> int:
    """rho in integer units of 1e-12; a cost not on that grid is a bug upstream."""
    units = rho.scaleb(RHO_PLACES)
    if units != units.to_integral_value():
        raise ValueError("a release's rho is rounded up to 1e-12 before it is counted")
    return int(units)


def record(session: Session, grid: pushdown.Grid, *, period: str, rho: Decimal) -> int:
    """Count one release of `rho` for every citizen whose rows enter `grid`'s exact aggregate
    (the template's WHERE: dataset, purpose, recipient, window, public keys, consent in force,
    retention; truncation keeps at least one cell of each). Returns how many citizens."""
    table = cast(Table, Contribution.__table__)
    r = StagedRecord
    columns = table.c
    who = pushdown.filtered(
        grid,
        r.subject_id,
        literal(period, type_=columns.period.type).label("period"),
        literal(1, type_=columns.releases.type).label("releases"),
        literal(rho_units(rho), type_=columns.rho_units.type).label("rho_units"),
        literal(utcnow(), type_=columns.updated_at.type).label("updated_at"),
    ).distinct()
    insert = insert_or_merge(session, table).from_select(
        ["subject_id", "period", "releases", "rho_units", "updated_at"], who
    )
    excluded = insert.excluded
    statement = insert.on_conflict_do_update(
        index_elements=["subject_id", "period"],
        set_={
            "releases": columns.releases + excluded.releases,
            "rho_units": columns.rho_units + excluded.rho_units,
            "updated_at": excluded.updated_at,
        },
    )
    return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]


def read(session: Session, subject_id: uuid.UUID, period: str) -> tuple[int, Decimal]:
    """(releases, rho) of one citizen in one period; (0, 0) if none."""
    row = session.execute(
        select(Contribution.releases, Contribution.rho_units).where(
            Contribution.subject_id == subject_id, Contribution.period == period
        )
    ).one_or_none()
    if row is None:
        return 0, Decimal(0)
    return int(row.releases), Decimal(int(row.rho_units)).scaleb(-RHO_PLACES)


def erase(session: Session, subject_id: uuid.UUID) -> int:
    """Delete a citizen's counters (their own data: they go with their erasure)."""
    result = session.execute(delete(Contribution).where(Contribution.subject_id == subject_id))
    return int(result.rowcount)  # type: ignore[attr-defined]
