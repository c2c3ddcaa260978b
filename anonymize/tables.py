"""A release as a table: the accessible equivalent of its chart and maps, every cell with
every measure it carries (value, 95 % interval, flags), whatever the measure.

Generic on purpose: measures come and go (histograms and quantiles carry more than one value
per cell), and a page that knew only count, sum and mean would hide the others. Pure: no
Flask, no database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from anonymize.maps import KEYS, number, scalar

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
