"""The exact part of a release, run where the data lives: a fixed SQL template on PostgreSQL,
pandas in chunks of whole citizens on the embedded default (SQLite).

Both compute, for a public grid of cells (time bucket x area x category): per citizen and
cell, the sum of their staged values; that sum clamped to the dataset's bounds; at most
`max_cells` cells per citizen (the first ones in key order, a rule that depends on that
citizen's rows only); then per cell the number of citizens and the sum of their clamped
values, as integers. Every key of the grid is in the result, in the grid's order, whatever
the data (anchors-dp.md §5.1, conditions 1-5).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlalchemy import Select, case, func, literal, or_, select
from sqlalchemy.orm import Session

from anonymize.models import StagedRecord

CHUNK_ROWS = 200_000
Key = tuple[int, str, str]  # (bucket, area, category); "" where the release does not group


@dataclass(frozen=True, slots=True)
class Grid:
    """The public key set of a release and the bounds of each citizen's contribution."""

    dataset_id: uuid.UUID
    purpose: str
    start_month: int  # month_index of the first bucket
    width: int  # months per bucket
    buckets: int
    areas: tuple[str, ...] | None  # None: no grouping by area
    categories: tuple[str, ...] | None  # None: no grouping by category
    lower: int
    upper: int
    max_cells: int
    at: datetime  # release time: consents and retention are checked at this instant

    def keys(self) -> list[Key]:
        """Every cell, in the one order the output uses."""
        return list(
            itertools.product(range(self.buckets), self.areas or ("",), self.categories or ("",))
        )

    @property
    def end_month(self) -> int:
        return self.start_month + self.width * self.buckets


@dataclass(frozen=True, slots=True)
class Exact:
    """Exact, contribution-bounded aggregates aligned with `Grid.keys()`."""

    counts: list[int]
    sums: list[int]


def _filtered(grid: Grid, *columns: object) -> Select[tuple[object, ...]]:
    """The template's WHERE: this dataset and purpose, the time window, the public keys only,
    consents still valid and retention not over at release time."""
    r = StagedRecord
    statement = select(*columns).where(  # type: ignore[call-overload]
        r.dataset_id == grid.dataset_id,
        r.purpose == grid.purpose,
        r.month_index >= grid.start_month,
        r.month_index < grid.end_month,
        or_(r.valid_until.is_(None), r.valid_until > grid.at),
        r.expires_at > grid.at,
    )
    if grid.areas is not None:
        statement = statement.where(r.area.in_(grid.areas))
    if grid.categories is not None:
        statement = statement.where(r.category.in_(grid.categories))
    return statement  # type: ignore[no-any-return]


def aggregate_sql(session: Session, grid: Grid) -> Exact:
    """The exact part as one SQL statement from a fixed template (PostgreSQL's path)."""
    r = StagedRecord
    bucket = ((r.month_index - grid.start_month) // grid.width).label("bucket")
    area = (r.area if grid.areas is not None else literal("")).label("area")
    category = (r.category if grid.categories is not None else literal("")).label("category")
    per_cell = (
        _filtered(grid, r.subject_id, bucket, area, category, func.sum(r.value).label("v"))
        .group_by(r.subject_id, bucket, area, category)
        .subquery("per_cell")
    )
    c = per_cell.c
    clamped = case((c.v < grid.lower, grid.lower), (c.v > grid.upper, grid.upper), else_=c.v)
    rank = func.row_number().over(
        partition_by=c.subject_id, order_by=(c.bucket, c.area, c.category)
    )
    bounded = select(c.bucket, c.area, c.category, clamped.label("v"), rank.label("rn")).subquery(
        "bounded"
    )
    b = bounded.c
    rows = session.execute(
        select(b.bucket, b.area, b.category, func.count(), func.sum(b.v))
        .where(b.rn <= grid.max_cells)
        .group_by(b.bucket, b.area, b.category)
    ).all()
    found = {(int(k), str(a), str(g)): (int(n), int(s)) for k, a, g, n, s in rows}
    return _align(grid, found)


def aggregate_frame(frame: pd.DataFrame, grid: Grid) -> dict[Key, tuple[int, int]]:
    """The exact part on whole citizens' rows (columns subject_id, month_index, area,
    category, value), already filtered to the grid; pure, so it is property-tested."""
    if frame.empty:
        return {}
    data = pd.DataFrame(
        {
            "subject_id": frame["subject_id"],
            "bucket": (frame["month_index"].astype("int64") - grid.start_month) // grid.width,
            "area": frame["area"] if grid.areas is not None else "",
            "category": frame["category"] if grid.categories is not None else "",
            "value": frame["value"].astype("int64"),
        }
    )
    per_cell = (
        data.groupby(["subject_id", "bucket", "area", "category"], sort=True)["value"]
        .sum()
        .clip(lower=grid.lower, upper=grid.upper)
        .reset_index()
    )
    # sorted by subject then key order: the first max_cells cells of each citizen
    kept = per_cell[per_cell.groupby("subject_id", sort=False).cumcount() < grid.max_cells]
    cells = kept.groupby(["bucket", "area", "category"])["value"].agg(["size", "sum"])
    return {
        (int(k), str(a), str(g)): (int(n), int(s))
        for (k, a, g), n, s in zip(cells.index, cells["size"], cells["sum"], strict=True)
    }


def _chunks(session: Session, grid: Grid, rows: int) -> Iterator[pd.DataFrame]:
    """Staged rows ordered by citizen, cut only between citizens (truncation stays local)."""
    r = StagedRecord
    columns = ["subject_id", "month_index", "area", "category", "value"]
    result = session.execute(
        _filtered(grid, r.subject_id, r.month_index, r.area, r.category, r.value).order_by(
            r.subject_id
        ),
        execution_options={"yield_per": rows},
    )
    held = pd.DataFrame(columns=columns)
    while batch := result.fetchmany(rows):
        frame = pd.DataFrame([tuple(row) for row in batch], columns=columns)
        frame["subject_id"] = frame["subject_id"].astype(str)
        frame = pd.concat([held, frame], ignore_index=True) if len(held) else frame
        last = frame["subject_id"].iloc[-1]
        done = frame["subject_id"] != last
        held = frame[~done]  # the last citizen may go on in the next batch
        if done.any():
            yield frame[done]
    if len(held):
        yield held


def aggregate_pandas(session: Session, grid: Grid, *, chunk_rows: int = CHUNK_ROWS) -> Exact:
    """The exact part in pandas, chunk by chunk; memory bounded by one chunk (SQLite's path)."""
    total: dict[Key, tuple[int, int]] = {}
    for frame in _chunks(session, grid, chunk_rows):
        for key, (n, s) in aggregate_frame(frame, grid).items():
            before = total.get(key, (0, 0))
            total[key] = (before[0] + n, before[1] + s)
    return _align(grid, total)


def aggregate(session: Session, grid: Grid) -> Exact:
    """The exact part, pushed down to PostgreSQL when there, else pandas in chunks."""
    if session.get_bind().dialect.name == "postgresql":
        return aggregate_sql(session, grid)
    return aggregate_pandas(session, grid)


def _align(grid: Grid, found: dict[Key, tuple[int, int]]) -> Exact:
    keys = grid.keys()
    unknown = set(found) - set(keys)
    if unknown:  # the WHERE keeps public keys only: anything else is a bug, not data
        raise RuntimeError("the exact aggregate produced keys outside the public grid")
    values = [found.get(key, (0, 0)) for key in keys]
    return Exact(counts=[n for n, _ in values], sums=[s for _, s in values])
