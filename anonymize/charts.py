"""Server-side SVG of a release: one line per cell, the value as a dot and its 95 % interval
as a bar; suppressed cells keep their line, marked. Pure: no Flask, no database, no script.

Quantiles get one line per cell and q, the bar being the bin the value falls in (its
uncertainty, not a confidence interval); a histogram one small chart per cell, a bar per bin
with its 95 % interval, every chart of a release on one shared scale. `error_bars` charts
any other measure whose cells carry more than one value through its count."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from anonymize.maps import DASH, Words, measure_of, number, scalar
from anonymize.tables import bin_label, edge, stretched

ROW = 16
LABEL = 170
PLOT = 420
PAD = 12


def cell_label(cell: Mapping[str, Any]) -> str:
    """A cell's keys as one line: time · area · category."""
    return " · ".join(str(cell[k]) for k in ("time", "area", "category") if cell.get(k))


# One line of an error-bar chart: its label, the value (None: a dash) and the bar's ends.
Line = tuple[str, float | None, Sequence[float] | None, bool]


def _bars(lines: Sequence[Line], heading: str, *, title: str, desc: str | None) -> str:
    ends = [
        v
        for _, found, bar, _ in lines
        if found is not None
        for v in [found, *(bar or [])]
        if isinstance(v, int | float)
    ]
    low, high = min([0.0, *ends]), max([0.0, *ends])
    span = (high - low) or 1.0

    def x(value: float) -> float:
        return round(float(LABEL + PAD + (value - low) / span * PLOT), 1)

    height = PAD * 3 + ROW * (len(lines) + 1)
    width = LABEL + PLOT + PAD * 2
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label={quoteattr(title)} '
        'font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        *([f"<desc>{escape(desc)}</desc>"] if desc else []),
        f'<text x="{PAD}" y="{PAD + 4}" font-weight="bold">{escape(heading)}</text>',
        f'<line x1="{x(0)}" y1="{PAD * 2}" x2="{x(0)}" y2="{height - PAD}" stroke="#bbb"/>',
    ]
    for index, (label, found, bar, low_accuracy) in enumerate(lines):
        y = PAD * 2 + ROW * (index + 1)
        parts.append(f'<text x="{PAD}" y="{y + 4}">{escape(label)}</text>')
        if found is None:
            parts.append(f'<text x="{LABEL + PAD}" y="{y + 4}" fill="#777">—</text>')
            continue
        if bar:
            lo, hi = bar
            colour = "#c77" if low_accuracy else "#57a"
            parts.append(
                f'<line x1="{x(lo)}" y1="{y}" x2="{x(hi)}" y2="{y}" stroke="{colour}" '
                'stroke-width="2"/>'
            )
        parts.append(
            f'<circle cx="{x(found)}" cy="{y}" r="3" fill="#124">'
            f"<title>{escape(label)}: {found:.6g}</title></circle>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def error_bars(result: dict[str, Any], *, title: str, desc: str | None = None) -> str:
    """The release's main measure (mean, sum or count) with its intervals, as an SVG."""
    name = measure_of(result) or str(result.get("measure", "count"))
    lines: list[Line] = []
    for cell in result["cells"]:
        found = scalar(cell.get(name))
        if found is None:
            lines.append((cell_label(cell), None, None, False))
        else:
            bar = found.get("ci95")
            lines.append((cell_label(cell), found["value"], bar, bool(found.get("low_accuracy"))))
    unit = "" if name == "count" else f" ({result.get('unit', '')})"
    return _bars(lines, name + unit, title=title, desc=desc)


def quantile_bars(result: Mapping[str, Any], *, title: str, desc: str | None = None) -> str:
    """A quantile release: one line per cell and q, the dot its value and the bar the bin it
    falls in; a suppressed cell keeps one line, marked."""
    lines: list[Line] = []
    for cell in result["cells"]:
        found = {f["q"]: f for f in cell.get("quantiles") or ()}
        if cell.get("suppressed"):
            lines.append((cell_label(cell), None, None, False))
            continue
        for q in result.get("quantiles") or ():
            one = found.get(q) or {}
            label = f"{cell_label(cell)} · q = {q:g}"
            lines.append(
                (label, one.get("value"), one.get("interval"), bool(one.get("low_accuracy")))
            )
    return _bars(lines, f"quantile ({result.get('unit', '')})", title=title, desc=desc)


# --- small histograms ----------------------------------------------------------------------

SMALL_W, SMALL_H = 280, 170
LEFT, BOTTOM, TOP = 44, 30, 10


def histogram_range(cells: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """The counts' shared scale over these cells' bins and intervals (zero included)."""
    ends = [
        v
        for cell in cells
        for found in cell.get("histogram") or ()
        for v in [found["value"], *(found.get("ci95") or ())]
    ]
    return min([0.0, *ends]), max([1.0, *ends])


def histogram(
    result: Mapping[str, Any],
    cell: Mapping[str, Any],
    *,
    scale: tuple[float, float],
    title: str,
    desc: str,
    ident: str,
    words: Words | None = None,
) -> str:
    """One cell's histogram: a bar per bin (its noisy count), its 95 % interval as an error
    bar (red when low accuracy), the bins' edges below; a suppressed cell says so."""
    words = words or Words()
    edges = result.get("bins") or []
    bounds = result.get("bounds")
    low, high = scale
    plot_w, plot_h = SMALL_W - LEFT - PAD, SMALL_H - TOP - BOTTOM

    def y(value: float) -> float:
        return round(TOP + (high - value) / ((high - low) or 1.0) * plot_h, 1)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SMALL_W}" height="{SMALL_H}" '
        f'viewBox="0 0 {SMALL_W} {SMALL_H}" role="img" aria-labelledby="{ident}-t {ident}-d" '
        'font-family="sans-serif" font-size="10" class="histogram">',
        f'<title id="{ident}-t">{escape(title)}</title>',
        f'<desc id="{ident}-d">{escape(desc)}</desc>',
        f'<line x1="{LEFT}" y1="{y(0)}" x2="{SMALL_W - PAD}" y2="{y(0)}" stroke="#bbb"/>',
        f'<text x="{LEFT - 4}" y="{y(high) + 4}" text-anchor="end">{escape(number(high))}</text>',
        f'<text x="{LEFT - 4}" y="{y(0) + 4}" text-anchor="end">0</text>',
    ]
    bins = cell.get("histogram") or []
    if cell.get("suppressed") or not bins:
        parts.append(
            f'<text x="{LEFT + 8}" y="{TOP + plot_h / 2}" fill="#555">'
            f"{escape(words.suppressed if cell.get('suppressed') else words.no_value)}</text>"
        )
    step = plot_w / max(len(bins), 1)
    for index, found in enumerate(bins):
        x0 = round(LEFT + index * step + 1, 1)
        value = float(found["value"])
        top, bottom = sorted((y(value), y(0)))
        label = bin_label(edges, index, bounds) if len(edges) == len(bins) + 1 else str(index)
        lo, hi = found["ci95"]
        tip = f"{label}: {number(value)} ({words.interval}: {number(lo)} {DASH} {number(hi)})"
        state = "low-accuracy" if found.get("low_accuracy") else "data"
        fill, colour = ("#ffffff", "#c77") if state == "low-accuracy" else ("#9ecae1", "#124")
        centre = round(x0 + (step - 2) / 2, 1)
        parts.append(
            f'<g data-bin="{index}" data-state="{state}"><title>{escape(tip)}</title>'
            f'<rect x="{x0}" y="{top}" width="{round(step - 2, 1)}" '
            f'height="{round(bottom - top, 1)}" '
            f'fill="{fill}" stroke="#3182bd"/>'
            f'<line x1="{centre}" y1="{y(lo)}" x2="{centre}" y2="{y(hi)}" stroke="{colour}" '
            'stroke-width="1.5"/></g>'
        )
    ends = stretched(edges, bounds)
    shown = range(len(edges)) if len(edges) <= 6 else (0, len(edges) - 1)
    for index in shown:
        at = round(LEFT + index * step, 1) if bins else LEFT
        anchor = "start" if index == 0 else "end" if index == len(edges) - 1 else "middle"
        parts.append(
            f'<text x="{at}" y="{SMALL_H - BOTTOM + 14}" text-anchor="{anchor}">'
            f"{escape(edge(ends[index]))}</text>"
        )
    unit = str(result.get("unit") or "")
    parts.append(
        f'<text x="{SMALL_W - PAD}" y="{SMALL_H - 4}" text-anchor="end" fill="#555">'
        f"{escape(unit)}</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts)
