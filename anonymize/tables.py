"""A release as a table: the accessible equivalent of its chart and maps, every cell with
every measure it carries (value, 95 % interval, flags), whatever the measure.

Generic on purpose: measures come and go, and a page that knew only count, sum and mean would
hide the others. Histograms and quantiles, which carry more than one value per cell, get
rows of their own: one per cell and bin (`bin_rows`), one per cell and q (`quantile_rows`).
Pure: no Flask, no database.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from anonymize.maps import DASH, KEYS, number, scalar

MAX_ITEMS = 24  # items of a list shown in one table cell; the JSON download has them all


@dataclass(frozen=True, slots=True)
class Entry:
    """One measure of one cell, ready to show: a value with its interval and flag, and the
    entry's other parts (a histogram's bins, say) as short texts."""

    value: str | None
    low: str | None
    high: str | None
    low_accuracy: bool
    other: tuple[tuple[str, str], ...]


def measures(result: Mapping[str, Any]) -> list[str]:
    """The measures the cells carry, the count first, then in the order they appear."""
    seen: dict[str, None] = {}
    for cell in result.get("cells", ()):
        for name, entry in cell.items():
            if name not in KEYS and entry is not None:
                seen.setdefault(name)
    return sorted(seen, key=lambda n: (n != "count", n != result.get("measure")))


def compact(value: Any) -> str:
    """Any JSON value in a few characters: numbers rounded, long lists cut."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int | float):
        return number(value)
    found = scalar(value)
    if found is not None:
        return number(found["value"])
    if isinstance(value, Mapping):
        return "; ".join(f"{k} = {compact(v)}" for k, v in value.items())
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = [compact(v) for v in list(value)[:MAX_ITEMS]]
        more = " …" if len(value) > MAX_ITEMS else ""
        return "[" + ", ".join(items) + more + "]"
    return str(value)


def entry(raw: Any) -> Entry | None:
    """One measure of a cell, or None when the cell has none (suppressed)."""
    if raw is None:
        return None
    found = scalar(raw)
    if found is None:
        return Entry(None, None, None, False, (("", compact(raw)),))
    interval = found.get("ci95") or (None, None)
    other = tuple(
        (str(k), compact(v)) for k, v in found.items() if k not in ("value", "ci95", "low_accuracy")
    )
    return Entry(
        value=number(found["value"]),
        low=None if interval[0] is None else number(interval[0]),
        high=None if interval[1] is None else number(interval[1]),
        low_accuracy=bool(found.get("low_accuracy")),
        other=other,
    )


def rows(result: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], list[Entry | None]]]:
    """Each cell with its entries, in the order of `measures(result)`."""
    names = measures(result)
    return [(cell, [entry(cell.get(n)) for n in names]) for cell in result.get("cells", ())]


# --- histograms and quantiles --------------------------------------------------------------


def edge(value: float) -> str:
    """A bin edge as asked: whole numbers without decimals, others to six digits."""
    if float(value).is_integer():
        return number(int(value))
    return f"{value:.6g}"


def stretched(edges: Sequence[float], bounds: Mapping[str, float] | None) -> list[float]:
    """The edges as the bins hold values: values are clamped to the dataset's bounds and those
    beyond the inner edges fall in the outer bins (anonymize/pushdown.py), so the first bin
    starts at the lower bound when it is lower, and the last one ends at the upper bound."""
    out = [float(e) for e in edges]
    if bounds is not None and len(out) >= 2:
        out[0] = min(out[0], float(bounds["lower"]))
        out[-1] = max(out[-1], float(bounds["upper"]))
    return out


def bin_label(edges: Sequence[float], index: int, bounds: Mapping[str, float] | None = None) -> str:
    """Bin `index` as `[lo, hi)`, the last one `[lo, hi]` (it holds the upper bound)."""
    ends = stretched(edges, bounds)
    last = index == len(ends) - 2
    return f"[{edge(ends[index])}, {edge(ends[index + 1])}{']' if last else ')'}"


def _count(raw: Mapping[str, Any]) -> Entry:
    """A noisy count: whole, with its interval to three digits."""
    found = raw["value"]
    shown = number(int(found)) if float(found).is_integer() else number(found)
    low, high = raw.get("ci95") or (None, None)
    return Entry(
        value=shown,
        low=None if low is None else number(low),
        high=None if high is None else number(high),
        low_accuracy=bool(raw.get("low_accuracy")),
        other=(),
    )


@dataclass(frozen=True, slots=True)
class BinRow:
    """One bin of one cell's histogram, or (`total`) the cell's count over every bin; a
    suppressed cell has its total row only, without a value."""

    cell: Mapping[str, Any]
    label: str  # the bin, "[lo, hi)"; empty on a total row
    entry: Entry | None
    total: bool = False


def bin_rows(result: Mapping[str, Any]) -> list[BinRow]:
    """Each cell's bins in order, then its total; none for a release without bins."""
    edges = result.get("bins") or []
    if not edges:
        return []
    bounds = result.get("bounds")
    out: list[BinRow] = []
    for cell in result.get("cells", ()):
        bins = cell.get("histogram")
        if cell.get("suppressed") or not bins:
            out.append(BinRow(cell, "", None, total=True))
            continue
        for index, found in enumerate(bins):
            label = bin_label(edges, index, bounds) if len(edges) == len(bins) + 1 else ""
            out.append(BinRow(cell, label, _count(found)))
        count = cell.get("count")
        out.append(BinRow(cell, "", _count(count) if count else None, total=True))
    return out


@dataclass(frozen=True, slots=True)
class QuantileRow:
    """One quantile of one cell: its value and the bin it falls in (its uncertainty: the
    bin's width, not a confidence interval); no value when the cell is suppressed or its
    noisy histogram is empty."""

    cell: Mapping[str, Any]
    q: str
    value: str | None
    interval: str | None
    low_accuracy: bool


def _q(value: float) -> str:
    return f"{value:g}"


def quantile_rows(result: Mapping[str, Any]) -> list[QuantileRow]:
    """Each cell's quantiles in the order asked; none for a release without quantiles."""
    edges = list(result.get("bins") or [])
    bounds = result.get("bounds")
    qs = result.get("quantiles") or []
    out: list[QuantileRow] = []
    for cell in result.get("cells", ()):
        found = {f["q"]: f for f in cell.get("quantiles") or ()}
        for q in qs:
            one = found.get(q)
            if cell.get("suppressed") or one is None or one.get("value") is None:
                out.append(QuantileRow(cell, _q(q), None, None, not cell.get("suppressed")))
                continue
            lo, hi = one["interval"]
            pairs = list(itertools.pairwise(edges))
            interval = (
                bin_label(edges, pairs.index((lo, hi)), bounds)
                if (lo, hi) in pairs
                else f"{edge(lo)} {DASH} {edge(hi)}"
            )
            out.append(
                QuantileRow(cell, _q(q), number(one["value"]), interval, bool(one["low_accuracy"]))
            )
    return out
