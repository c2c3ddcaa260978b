"""Server-side SVG of a release by area: a tile map, one square per area of the partition,
coloured by value on a sober sequential scale shared by every map of the release.

A tile map, not a geographic one: it needs no boundaries (the charter has none), keeps every
area the same size whatever its surface, and reads well at any zoom. Each area sits where
the charter's optional `tile: [column, row]` puts it, else in order, row by row.

Suppressed and low-accuracy cells are never coloured as data: suppressed ones are hatched,
low-accuracy ones white with a dashed outline, so the eye does not compare a value with an
interval wider than itself. Pure: no Flask, no database, no script.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from charter.document import Partition

TILE = 64
GAP = 4
PAD = 8
# ColorBrewer "Blues", 5 classes: sequential, readable in greyscale, colour-blind safe.
CLASSES = ("#eff3ff", "#bdd7e7", "#6baed6", "#3182bd", "#08519c")
DARK_FROM = 3  # classes drawn dark enough for white text
KEYS = ("time", "area", "category", "suppressed")
DASH = "\N{EN DASH}"  # between the ends of an interval


@dataclass(frozen=True, slots=True)
class Area:
    """One area of the partition and its place on the map."""

    id: str
    name: str
    col: int
    row: int


@dataclass(frozen=True, slots=True)
class Scale:
    """Equal-interval classes from `low` to `high` over the values shown as data."""

    low: float
    high: float

    def index(self, value: float) -> int:
        if self.high <= self.low:
            return len(CLASSES) // 2
        share = (value - self.low) / (self.high - self.low)
        return min(int(share * len(CLASSES)), len(CLASSES) - 1)

    def bounds(self) -> list[tuple[float, float]]:
        step = (self.high - self.low) / len(CLASSES)
        return [(self.low + i * step, self.low + (i + 1) * step) for i in range(len(CLASSES))]


@dataclass(frozen=True, slots=True)
class Words:
    """What the SVGs say, already translated by the caller (this module knows no locale)."""

    suppressed: str = "suppressed (too few people)"
    low_accuracy: str = "low accuracy: the interval is wider than the value"
    interval: str = "95 % interval"
    legend: str = "Legend"
    no_value: str = "no value"


def layout(area_ids: Sequence[str], partition: Sequence[Partition] | None) -> list[Area]:
    """Every area of the release on the grid: at its charter tile when it has one, else in
    the first free places row by row (an area the charter no longer names keeps its id)."""
    known = {p.id: p for p in partition or ()}
    placed: dict[tuple[int, int], str] = {}
    out: dict[str, Area] = {}
    for ident in area_ids:
        entry = known.get(ident)
        tile = entry.tile if entry is not None else None
        if tile is not None and tuple(tile) not in placed:
            col, row = tile
            placed[(col, row)] = ident
            out[ident] = Area(ident, entry.name if entry else ident, col, row)
    width = max(
        math.ceil(math.sqrt(len(area_ids) or 1)),
        max((c + 1 for c, _ in placed), default=0),
    )
    free = ((i % width, i // width) for i in range(len(area_ids) * 2 + len(placed) * 2 + 1))
    for ident in area_ids:
        if ident in out:
            continue
        spot = next(s for s in free if s not in placed)
        placed[spot] = ident
        entry = known.get(ident)
        out[ident] = Area(ident, entry.name if entry else ident, *spot)
    return [out[i] for i in area_ids]


def scalar(entry: Any) -> dict[str, Any] | None:
    """A measure entry with a numeric value (count, sum, mean…), else None."""
    if isinstance(entry, Mapping):
        value = entry.get("value")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return dict(entry)
    return None


def measure_of(result: Mapping[str, Any]) -> str | None:
    """The measure a chart or a map shows: the release's own when its cells carry one value
    each, else the count (a histogram's or a quantile's cells carry more than one)."""
    for name in (result.get("measure"), "count"):
        if name and any(scalar(cell.get(name)) for cell in result.get("cells", ())):
            return str(name)
    return None


def slices(result: Mapping[str, Any]) -> list[tuple[str | None, str | None]]:
    """(time, category) of each map of the release, in the release's order."""
    keys = result.get("keys") or {}
    times = keys.get("time") or [None]
    categories = keys.get("category") or [None]
    return [(t, c) for t in times for c in categories]


def scale_of(result: Mapping[str, Any], measure: str) -> Scale | None:
    """One scale for every map of the release, over the values drawn as data only."""
    values = [
        found["value"]
        for cell in result.get("cells", ())
        if not cell.get("suppressed")
        and (found := scalar(cell.get(measure))) is not None
        and not found.get("low_accuracy")
    ]
    if not values:
        return None
    return Scale(min(values), max(values))


def number(value: float | None) -> str:
    """A value short enough for a tile: whole numbers as they are, others to three
    significant digits below 100 and to the unit above."""
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,d}".replace(",", "\N{NARROW NO-BREAK SPACE}")
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}".replace(",", "\N{NARROW NO-BREAK SPACE}")
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _hatch(ident: str) -> str:
    return (
        f'<defs><pattern id="{ident}-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f2f2f2"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#999" stroke-width="2"/></pattern></defs>'
    )


def _tile(
    area: Area,
    cell: Mapping[str, Any] | None,
    measure: str,
    scale: Scale | None,
    unit: str,
    words: Words,
    hatch: str,
) -> str:
    x, y = PAD + area.col * (TILE + GAP), PAD + area.row * (TILE + GAP)
    found = scalar(cell.get(measure)) if cell is not None else None
    name = f"{area.id} {area.name}" if area.name != area.id else area.id
    if cell is None or cell.get("suppressed") or found is None:
        fill, ink, stroke, shown = hatch, "#333", "#999", "—"
        why = words.suppressed if cell is not None and cell.get("suppressed") else words.no_value
        tip = f"{name}: {why}"
        state = "suppressed"
    else:
        value = found["value"]
        interval = found.get("ci95")
        tip = f"{name}: {number(value)} {unit}".rstrip()
        if interval:
            tip += f" ({words.interval}: {number(interval[0])} {DASH} {number(interval[1])})"
        shown = number(value)
        if found.get("low_accuracy") or scale is None:
            fill, ink, stroke, state = "#ffffff", "#555", "#555", "low-accuracy"
            tip += f" — {words.low_accuracy}"
            shown = f"~{shown}"
        else:
            index = scale.index(value)
            fill, stroke, state = CLASSES[index], "#ffffff", f"class-{index}"
            ink = "#ffffff" if index >= DARK_FROM else "#161616"
    dash = ' stroke-dasharray="4 3"' if state == "low-accuracy" else ""
    return (
        f'<g data-area={quoteattr(area.id)} data-state="{state}">'
        f"<title>{escape(tip)}</title>"
        f'<rect x="{x}" y="{y}" width="{TILE}" height="{TILE}" fill="{fill}" '
        f'stroke="{stroke}" stroke-width="1.5"{dash}/>'
        f'<text x="{x + 6}" y="{y + 16}" fill="{ink}" font-weight="bold">{escape(area.id)}</text>'
        f'<text x="{x + 6}" y="{y + TILE - 10}" fill="{ink}">{escape(shown)}</text>'
        "</g>"
    )


def tile_map(
    result: Mapping[str, Any],
    areas: Sequence[Area],
    *,
    time: str | None,
    category: str | None,
    measure: str,
    scale: Scale | None,
    title: str,
    desc: str,
    ident: str,
    words: Words | None = None,
) -> str:
    """One map: the cells of one time bucket (and category), one tile per area. `ident`
    prefixes the SVG's ids (several maps share a page)."""
    words = words or Words()
    cells = {
        cell.get("area"): cell
        for cell in result.get("cells", ())
        if cell.get("time") == time and cell.get("category") == category
    }
    cols = max((a.col for a in areas), default=0) + 1
    rows = max((a.row for a in areas), default=0) + 1
    width, height = PAD * 2 + cols * (TILE + GAP) - GAP, PAD * 2 + rows * (TILE + GAP) - GAP
    unit = "" if measure == "count" else str(result.get("unit") or "")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-labelledby="{ident}-t {ident}-d" '
        'font-family="sans-serif" font-size="11" class="tile-map">',
        f'<title id="{ident}-t">{escape(title)}</title>',
        f'<desc id="{ident}-d">{escape(desc)}</desc>',
        _hatch(ident),
    ]
    hatch = f"url(#{ident}-hatch)"
    parts += [_tile(a, cells.get(a.id), measure, scale, unit, words, hatch) for a in areas]
    parts.append("</svg>")
    return "\n".join(parts)


def legend(
    scale: Scale | None, *, unit: str, title: str, ident: str, words: Words | None = None
) -> str:
    """The classes of the scale, and how suppressed and low-accuracy areas look."""
    words = words or Words()
    rows: list[tuple[str, str, str]] = []
    for index, (low, high) in enumerate(scale.bounds() if scale else []):
        rows.append((CLASSES[index], "", f"{number(low)} {DASH} {number(high)} {unit}".rstrip()))
    rows.append(("#ffffff", ' stroke-dasharray="4 3"', f"~ {words.low_accuracy}"))
    rows.append((f"url(#{ident}-hatch)", "", words.suppressed))
    line = 20
    height = PAD * 2 + line * (len(rows) + 1)
    width = 420
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label={quoteattr(title)} '
        'font-family="sans-serif" font-size="11" class="tile-map-legend">',
        f"<title>{escape(title)}</title>",
        _hatch(ident),
        f'<text x="{PAD}" y="{PAD + 10}" font-weight="bold">{escape(words.legend)}</text>',
    ]
    for index, (fill, dash, label) in enumerate(rows, start=1):
        y = PAD + index * line
        parts.append(
            f'<rect x="{PAD}" y="{y}" width="24" height="14" fill="{fill}" stroke="#555"{dash}/>'
            f'<text x="{PAD + 32}" y="{y + 11}">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)
