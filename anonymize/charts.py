"""Server-side SVG of a release: one line per cell, the value as a dot and its 95 % interval
as a bar; suppressed cells keep their line, marked. Pure: no Flask, no database, no script.

A measure whose cells carry more than one value (a histogram, quantiles) is charted through
its count; the page's table shows every entry of every cell."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape, quoteattr

from anonymize.maps import measure_of, scalar

ROW = 16
LABEL = 170
PLOT = 420
PAD = 12


def _label(cell: dict[str, Any]) -> str:
    return " · ".join(str(cell[k]) for k in ("time", "area", "category") if cell.get(k))


def error_bars(result: dict[str, Any], *, title: str, desc: str | None = None) -> str:
    """The release's main measure (mean, sum or count) with its intervals, as an SVG."""
    name = measure_of(result) or str(result.get("measure", "count"))
    shown = [(cell, scalar(cell.get(name))) for cell in result["cells"]]
    ends = [
        v
        for _, found in shown
        if found is not None
        for v in [found["value"], *(found.get("ci95") or [])]
        if isinstance(v, int | float)
    ]
    low, high = min([0.0, *ends]), max([0.0, *ends])
    span = (high - low) or 1.0

    def x(value: float) -> float:
        return round(float(LABEL + PAD + (value - low) / span * PLOT), 1)

    height = PAD * 3 + ROW * (len(shown) + 1)
    width = LABEL + PLOT + PAD * 2
    unit = "" if name == "count" else f" ({result.get('unit', '')})"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label={quoteattr(title)} '
        'font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        *([f"<desc>{escape(desc)}</desc>"] if desc else []),
        f'<text x="{PAD}" y="{PAD + 4}" font-weight="bold">{escape(name + unit)}</text>',
        f'<line x1="{x(0)}" y1="{PAD * 2}" x2="{x(0)}" y2="{height - PAD}" stroke="#bbb"/>',
    ]
    for index, (cell, found) in enumerate(shown):
        y = PAD * 2 + ROW * (index + 1)
        parts.append(f'<text x="{PAD}" y="{y + 4}">{escape(_label(cell))}</text>')
        if found is None:
            parts.append(f'<text x="{LABEL + PAD}" y="{y + 4}" fill="#777">—</text>')
            continue
        if found.get("ci95"):
            lo, hi = found["ci95"]
            colour = "#c77" if found.get("low_accuracy") else "#57a"
            parts.append(
                f'<line x1="{x(lo)}" y1="{y}" x2="{x(hi)}" y2="{y}" stroke="{colour}" '
                'stroke-width="2"/>'
            )
        parts.append(
            f'<circle cx="{x(found["value"])}" cy="{y}" r="3" fill="#124">'
            f"<title>{escape(_label(cell))}: {found['value']:.6g}</title></circle>"
        )
    parts.append("</svg>")
    return "\n".join(parts)
