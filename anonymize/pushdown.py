"""The exact part of a release, run where the data lives: a fixed SQL template on PostgreSQL,
pandas and numpy in chunks of whole citizens on the embedded default (SQLite).

Both compute, for a public grid of cells (time bucket x area x category): per citizen and
cell, the sum of their staged values; that sum clamped to the dataset's bounds; at most
`max_cells` cells per citizen (the first ones in the grid's key order, a rule that depends
on that citizen's rows only); then per cell the number of citizens and the sum of their
clamped values, or for a histogram per cell and bin the number of citizens whose clamped
value falls in the bin, as integers. Cells are numbered by their position in the grid's key
order on both paths (never by a collation or a Python sort, which may disagree), and every
key of the grid is in the result, in that order, whatever the data (anchors-dp.md §5.1,
conditions 1-5).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sqlalchemy import ColumnElement, Select, case, func, literal, or_, select
from sqlalchemy.orm import Session

from anonymize.models import StagedRecord

CHUNK_ROWS = 200_000
Key = tuple[int, str, str]  # (bucket, area, category); "" where the release does not group
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Grid:
    """The public key set of a release and the bounds of each citizen's contribution.

    `recipient` is the one recipient, as consents name it, whose staged rows the release
    reads (a citizen has one copy of their rows per recipient: reading two would count them
    twice). `edges`, for a histogram, are the bins' edges in fixed point, increasing: a
    clamped value v falls in bin i when edges[i] <= v < edges[i + 1], values below the
    first inner edge in the first bin and from the last inner edge on in the last one.
    """

    dataset_id: uuid.UUID
    purpose: str
    recipient: str
    start_month: int  # month_index of the first bucket
    width: int  # months per bucket
    buckets: int
    areas: tuple[str, ...] | None  # None: no grouping by area
    categories: tuple[str, ...] | None  # None: no grouping by category
    lower: int
    upper: int
    max_cells: int
    at: datetime  # release time: consents and retention are checked at this instant
    edges: tuple[int, ...] | None = None  # a histogram's bin edges; None: count and sum

    def keys(self) -> list[Key]:
        """Every cell, in the one order the output uses."""
        return list(
            itertools.product(range(self.buckets), self.areas or ("",), self.categories or ("",))
        )

    @property
    def end_month(self) -> int:
        return self.start_month + self.width * self.buckets

    @property
    def cells(self) -> int:
        return self.buckets * len(self.areas or ("",)) * len(self.categories or ("",))

    @property
    def bins(self) -> int:
        return 0 if self.edges is None else len(self.edges) - 1


@dataclass(frozen=True, slots=True)
class Exact:
    """Exact, contribution-bounded aggregates aligned with `Grid.keys()`; `histogram` is
    cell-major (cell * bins + bin), None unless the grid has bins."""

    counts: list[int]
    sums: list[int]
    histogram: list[int] | None = None


def filtered(grid: Grid, *columns: Any) -> Select[Any]:
    """The template's WHERE: this dataset, purpose and recipient, the time window, the
    public keys only, consents still valid and retention not over at release time."""
    r = StagedRecord
    statement = select(*columns).where(
        r.dataset_id == grid.dataset_id,
        r.purpose == grid.purpose,
        r.recipient == grid.recipient,
        r.month_index >= grid.start_month,
        r.month_index < grid.end_month,
        or_(r.valid_until.is_(None), r.valid_until > grid.at),
        r.expires_at > grid.at,
    )
    if grid.areas is not None:
        statement = statement.where(r.area.in_(grid.areas))
    if grid.categories is not None:
        statement = statement.where(r.category.in_(grid.categories))
    return statement


def _position(column: Any, keys: tuple[str, ...] | None) -> ColumnElement[int]:
    """A key's position in the grid's list (0 when the release does not group by it)."""
    if keys is None:
        return literal(0)
    return case({key: index for index, key in enumerate(keys)}, value=column, else_=-1)


def _cell_sql(grid: Grid) -> ColumnElement[int]:
    r = StagedRecord
    areas, categories = len(grid.areas or ("",)), len(grid.categories or ("",))
    bucket = (r.month_index - grid.start_month) // grid.width
    return (
        bucket * (areas * categories)
        + _position(r.area, grid.areas) * categories
        + _position(r.category, grid.categories)
    )


def _bin_sql(value: Any, edges: Sequence[int]) -> ColumnElement[int]:
    inner = edges[1:-1]
    if not inner:
        return literal(0)
    return case(*((value < edge, index) for index, edge in enumerate(inner)), else_=len(inner))


def aggregate_sql(session: Session, grid: Grid) -> Exact:
    """The exact part as one SQL statement from a fixed template (PostgreSQL's path)."""
    r = StagedRecord
    cell = _cell_sql(grid).label("cell")
    per_cell = (
        filtered(grid, r.subject_id, cell, func.sum(r.value).label("v"))
        .group_by(r.subject_id, cell)
        .subquery("per_cell")
    )
    c = per_cell.c
    clamped = case((c.v < grid.lower, grid.lower), (c.v > grid.upper, grid.upper), else_=c.v)
    rank = func.row_number().over(partition_by=c.subject_id, order_by=c.cell)
    bounded = select(c.cell, clamped.label("v"), rank.label("rn")).subquery("bounded")
    b = bounded.c
    counts, sums = np.zeros(grid.cells, np.int64), np.zeros(grid.cells, np.int64)
    if grid.edges is not None:
        bin_ = _bin_sql(b.v, grid.edges).label("bin")
        rows = session.execute(
            select(b.cell, bin_, func.count()).where(b.rn <= grid.max_cells).group_by(b.cell, bin_)
        ).all()
        histogram = np.zeros(grid.cells * grid.bins, np.int64)
        for index, slot, n in rows:
            _check(grid, int(index))
            histogram[int(index) * grid.bins + int(slot)] += int(n)
            counts[int(index)] += int(n)
        return Exact(counts.tolist(), sums.tolist(), histogram.tolist())
    rows = session.execute(
        select(b.cell, func.count(), func.sum(b.v)).where(b.rn <= grid.max_cells).group_by(b.cell)
    ).all()
    for index, n, s in rows:
        _check(grid, int(index))
        counts[int(index)], sums[int(index)] = int(n), int(s)
    return Exact(counts.tolist(), sums.tolist())


def _check(grid: Grid, index: int) -> None:
    if not 0 <= index < grid.cells:  # the WHERE keeps public keys only: a bug, not data
        raise RuntimeError("the exact aggregate produced keys outside the public grid")


def _codes(values: pd.Series, keys: tuple[str, ...] | None) -> Ints:
    if keys is None:
        return np.zeros(len(values), np.int64)
    codes: Ints = np.asarray(pd.Categorical(values, categories=list(keys)).codes, np.int64)
    if (codes < 0).any():
        raise RuntimeError("the exact aggregate produced keys outside the public grid")
    return codes


def _arrays(frame: pd.DataFrame, grid: Grid) -> tuple[Ints, Ints, Ints | None]:
    """counts, sums and histogram of one chunk of whole citizens, on integer codes only."""
    cells, bins = grid.cells, grid.bins
    counts, sums = np.zeros(cells, np.int64), np.zeros(cells, np.int64)
    histogram = np.zeros(cells * bins, np.int64) if grid.edges is not None else None
    if frame.empty:
        return counts, sums, histogram
    areas, categories = len(grid.areas or ("",)), len(grid.categories or ("",))
    bucket = (frame["month_index"].to_numpy(np.int64) - grid.start_month) // grid.width
    if ((bucket < 0) | (bucket >= grid.buckets)).any():
        raise RuntimeError("the exact aggregate produced keys outside the public grid")
    cell = (
        bucket * (areas * categories)
        + _codes(frame["area"], grid.areas) * categories
        + _codes(frame["category"], grid.categories)
    )
    subject = pd.factorize(frame["subject_id"])[0].astype(np.int64)
    # one group per (citizen, cell), by hashing (linear), then only the groups are sorted:
    # by citizen, then by the cell's grid position
    groups, key = pd.factorize(subject * cells + cell)
    per_cell = _group_sums(groups, frame["value"].to_numpy(np.int64), len(key))
    order = np.argsort(key)
    key = key[order]
    values = np.clip(per_cell[order], grid.lower, grid.upper)
    owner, cell = key // cells, key % cells
    firsts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    rank = np.arange(len(owner)) - np.repeat(firsts, np.diff(np.r_[firsts, len(owner)]))
    kept = rank < grid.max_cells  # each citizen's first max_cells cells in key order
    cell, values = cell[kept], values[kept]
    counts += np.bincount(cell, minlength=cells)
    if histogram is not None and grid.edges is not None:  # a histogram releases no sums
        slot = np.searchsorted(np.asarray(grid.edges[1:-1], np.int64), values, side="right")
        histogram += np.bincount(cell * bins + slot, minlength=cells * bins)
    else:
        sums += _group_sums(cell, values, cells)
    return counts, sums, histogram


_EXACT_FLOAT = 2**53  # every integer of smaller magnitude is a float64, and so is their sum


def _group_sums(groups: Ints, values: Ints, size: int) -> Ints:
    """Exact integer sums of `values` per group. numpy's fast grouped sum (bincount) adds in
    float64: exact when no partial sum can reach 2**53 in magnitude, which the largest value
    times the number of values bounds; otherwise the slower integer np.add.at."""
    if not len(values) or int(np.abs(values).max()) * len(values) < _EXACT_FLOAT:
        return np.bincount(groups, weights=values, minlength=size).astype(np.int64)
    out = np.zeros(size, np.int64)
    np.add.at(out, groups, values)
    return out


def aggregate_frame(frame: pd.DataFrame, grid: Grid) -> Exact:
    """The exact part on whole citizens' rows (columns subject_id, month_index, area,
    category, value), already filtered to the grid; pure, so it is property-tested."""
    counts, sums, histogram = _arrays(frame, grid)
    return Exact(counts.tolist(), sums.tolist(), None if histogram is None else histogram.tolist())


COLUMNS = ("subject_id", "month_index", "area", "category", "value")


def _chunks(session: Session, grid: Grid, rows: int) -> Iterator[pd.DataFrame]:
    """Staged rows ordered by citizen, cut only between citizens (truncation stays local).
    Columns go straight into arrays: no ORM rows, no UUID objects turned into strings."""
    r = StagedRecord
    result = session.execute(
        filtered(grid, r.subject_id, r.month_index, r.area, r.category, r.value).order_by(
            r.subject_id
        ),
        execution_options={"yield_per": rows},
    )
    held: pd.DataFrame | None = None
    while batch := result.fetchmany(rows):
        frame = pd.DataFrame(dict(zip(COLUMNS, zip(*batch, strict=True), strict=True)))
        frame = pd.concat([held, frame], ignore_index=True) if held is not None else frame
        subjects = frame["subject_id"].to_numpy()
        done = subjects != subjects[-1]
        held = frame[~done]  # the last citizen may go on in the next batch
        if done.any():
            yield frame[done]
    if held is not None and len(held):
        yield held


def aggregate_pandas(session: Session, grid: Grid, *, chunk_rows: int = CHUNK_ROWS) -> Exact:
    """The exact part in pandas, chunk by chunk; memory bounded by one chunk (SQLite's path)."""
    counts, sums = np.zeros(grid.cells, np.int64), np.zeros(grid.cells, np.int64)
    histogram = np.zeros(grid.cells * grid.bins, np.int64) if grid.edges is not None else None
    for frame in _chunks(session, grid, chunk_rows):
        n, s, h = _arrays(frame, grid)
        counts += n
        sums += s
        if histogram is not None and h is not None:
            histogram += h
    return Exact(counts.tolist(), sums.tolist(), None if histogram is None else histogram.tolist())


def aggregate(session: Session, grid: Grid) -> Exact:
    """The exact part, pushed down to PostgreSQL when there, else pandas in chunks."""
    if session.get_bind().dialect.name == "postgresql":
        return aggregate_sql(session, grid)
    return aggregate_pandas(session, grid)
