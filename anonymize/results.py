"""A release's result from its noisy vectors: values with intervals, means, histograms and
quantiles, and the CSV of a stored result.

Everything here is post-processing of noisy vectors and public parameters (the grid, the
noise scales, the charter's threshold): it never reads the exact aggregate, so it spends
nothing (anchors-dp.md §5.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from anonymize import noise, pushdown
from anonymize.models import DpDataset

LOW_ACCURACY = 0.5  # the charter's default `max_relative_error`: flag a value whose 95 %
# half-width exceeds half of its magnitude


def bucket_label(grid: pushdown.Grid, bucket: int, kind: str) -> str:
    first = grid.start_month + bucket * grid.width
    year, month = divmod(first, 12)
    if kind == "year":
        return f"{year}"
    if kind == "quarter":
        return f"{year}-Q{month // 3 + 1}"
    if kind == "month":
        return f"{year}-{month + 1:02d}"
    last_year, last_month = divmod(first + grid.width - 1, 12)
    return f"{year}-{month + 1:02d}/{last_year}-{last_month + 1:02d}"


def value(noisy: int, half: float, scale: int, flag_above: float = LOW_ACCURACY) -> dict[str, Any]:
    """A noisy value with its 95 % interval, flagged when the half-width exceeds
    `flag_above` times its magnitude (the charter's threshold of relative error)."""
    found = noisy / scale
    width = half / scale
    return {
        "value": found,
        "ci95": [found - width, found + width],
        "low_accuracy": width > flag_above * abs(found),
    }


def mean(
    count: int,
    total: int,
    half_n: float,
    half_s: float,
    scale: int,
    flag_above: float = LOW_ACCURACY,
) -> dict[str, Any]:
    """Noisy sum / noisy count, with an interval from the two 97.5 % intervals (together at
    least 95 %, Bonferroni) by interval arithmetic; open when the count's may reach zero."""
    found = total / scale / count if count > 0 else None
    low_n, high_n = count - half_n, count + half_n
    if low_n <= 0 or found is None:
        return {"value": found, "ci95": None, "low_accuracy": True}
    lo_s, hi_s = (total - half_s) / scale, (total + half_s) / scale
    candidates = [lo_s / low_n, lo_s / high_n, hi_s / low_n, hi_s / high_n]
    lo, hi = min(candidates), max(candidates)
    return {
        "value": found,
        "ci95": [lo, hi],
        "low_accuracy": (hi - lo) / 2 > flag_above * abs(found),
    }


def quantiles(
    counts: Sequence[int],
    edges: Sequence[float],
    qs: Sequence[float],
    total_half: float,
    flag_above: float = LOW_ACCURACY,
) -> list[dict[str, Any]]:
    """Quantiles read off one cell's noisy histogram (post-processing): noisy counts clamped
    at zero, cumulated; q falls in the first bin whose cumulative count reaches q * total,
    interpolated linearly inside it. The bin's interval is reported as the value's
    uncertainty: it bounds where the noisy histogram puts the quantile, it is not a
    confidence interval for the true one. No value when the clamped total is zero."""
    clamped = [max(int(n), 0) for n in counts]
    total = sum(clamped)
    out: list[dict[str, Any]] = []
    for q in qs:
        if total <= 0:
            out.append({"q": q, "value": None, "interval": None, "low_accuracy": True})
            continue
        target, below = q * total, 0
        for index, n in enumerate(clamped):
            if n > 0 and below + n >= target:
                lo, hi = edges[index], edges[index + 1]
                found = lo + (target - below) / n * (hi - lo)
                out.append(
                    {
                        "q": q,
                        "value": found,
                        "interval": [lo, hi],
                        "low_accuracy": total_half > flag_above * total,
                    }
                )
                break
            below += n
    return out


def _histogram_cell(
    cell: dict[str, Any],
    counts: Sequence[int],
    edges: Sequence[float],
    half: float,
    qs: Sequence[float] | None,
    flag_above: float,
) -> None:
    cell["histogram"] = [
        {"bin": [edges[i], edges[i + 1]], **value(n, half, 1, flag_above)}
        for i, n in enumerate(counts)
    ]
    # The cell's count is the sum of its bins (post-processing); its half-width a bound:
    # the bins' noises are independent, so the sum's standard deviation is sqrt(bins) times
    # one bin's, and a Gaussian's or Laplace's interval scales with it (Laplace: slightly
    # conservative, a sum of Laplaces having lighter tails).
    total_half = half * len(counts) ** 0.5
    cell["count"] = value(sum(counts), total_half, 1, flag_above)
    if qs is not None:
        cell["quantiles"] = quantiles(counts, edges, qs, total_half, flag_above)


def build(
    spec: Any,
    grid: pushdown.Grid,
    profile: DpDataset,
    measured: dict[str, noise.Calibrated],
    noisy: dict[str, list[int]],
    min_cohort: int,
    flag_above: float = LOW_ACCURACY,
) -> dict[str, Any]:
    """The stored result: every key of the grid, in its order, with its values; a value is
    flagged `low_accuracy` when its 95 % half-width exceeds `flag_above` times its magnitude
    (the charter's `max_relative_error`)."""
    half = {name: m.half_width(0.05) for name, m in measured.items()}
    half_bonf = {name: m.half_width(0.025) for name, m in measured.items()}
    bins = grid.bins
    edges = [e / profile.scale for e in grid.edges] if grid.edges is not None else []
    qs = [float(q) for q in spec.quantiles] if spec.quantiles else None
    out_cells = []
    for index, (bucket, area, category) in enumerate(grid.keys()):
        cell: dict[str, Any] = {
            "time": bucket_label(grid, bucket, spec.bucket),
            "area": area or None,
            "category": category or None,
        }
        if bins:
            counts = noisy["histogram"][index * bins : (index + 1) * bins]
            # Suppression reads the *noisy* total (post-processing): never the true one.
            cell["suppressed"] = sum(counts) < min_cohort
            if not cell["suppressed"]:
                _histogram_cell(cell, counts, edges, half["histogram"], qs, flag_above)
            out_cells.append(cell)
            continue
        n = noisy["count"][index]
        cell["suppressed"] = n < min_cohort  # the noisy count, never the true one
        if not cell["suppressed"]:
            cell["count"] = value(n, half["count"], 1, flag_above)
            if "sum" in noisy:
                s = noisy["sum"][index]
                if spec.measure == "sum":
                    cell["sum"] = value(s, half["sum"], profile.scale, flag_above)
                else:
                    cell["mean"] = mean(
                        n, s, half_bonf["count"], half_bonf["sum"], profile.scale, flag_above
                    )
        out_cells.append(cell)
    result: dict[str, Any] = {
        "unit": profile.unit,
        "measure": spec.measure,
        "keys": {
            "time": [bucket_label(grid, b, spec.bucket) for b in range(grid.buckets)],
            "area": list(grid.areas) if grid.areas is not None else None,
            "category": list(grid.categories) if grid.categories is not None else None,
        },
        "bounds": {"lower": profile.lower / profile.scale, "upper": profile.upper / profile.scale},
        "max_cells_per_citizen": grid.max_cells,
        "min_cohort": min_cohort,
        "max_relative_error": flag_above,
        "noise": {
            name: {
                "mechanism": m.mechanism,
                "scale": m.scale / (profile.scale if name == "sum" else 1),
                "ci95_half_width": half[name] / (profile.scale if name == "sum" else 1),
                "rho": str(m.rho),
            }
            for name, m in measured.items()
        },
        "cells": out_cells,
    }
    if bins:
        result["bins"] = edges
    if qs is not None:
        result["quantiles"] = qs
    return result


def _csv(found: float | None) -> str:
    return "" if found is None else repr(found)


def _keys(cell: dict[str, Any]) -> list[str]:
    return [cell["time"], cell["area"] or "", cell["category"] or "", str(cell["suppressed"])]


def _csv_histogram(result: dict[str, Any]) -> list[list[str]]:
    """One line per cell and bin (histogram), or per cell and q (quantile)."""
    base = ["time", "area", "category", "suppressed"]
    edges = result["bins"]
    if result["measure"] == "quantile":
        lines = [[*base, "q", "quantile", "bin_low", "bin_high", "low_accuracy"]]
        for cell in result["cells"]:
            for i, q in enumerate(result["quantiles"]):
                found = cell["quantiles"][i] if "quantiles" in cell else None
                if found is None:
                    lines.append([*_keys(cell), repr(q), "", "", "", ""])
                    continue
                lo, hi = found["interval"] or (None, None)
                lines.append(
                    [
                        *_keys(cell),
                        repr(q),
                        _csv(found["value"]),
                        _csv(lo),
                        _csv(hi),
                        str(found["low_accuracy"]),
                    ]
                )
        return lines
    lines = [[*base, "bin_low", "bin_high", "count", "ci95_low", "ci95_high", "low_accuracy"]]
    for cell in result["cells"]:
        for i in range(len(edges) - 1):
            bin_ = [repr(edges[i]), repr(edges[i + 1])]
            found = cell["histogram"][i] if "histogram" in cell else None
            if found is None:
                lines.append([*_keys(cell), *bin_, "", "", "", ""])
                continue
            low, high = found["ci95"]
            lines.append(
                [
                    *_keys(cell),
                    *bin_,
                    _csv(found["value"]),
                    _csv(low),
                    _csv(high),
                    str(found["low_accuracy"]),
                ]
            )
    return lines


def csv_rows(result: dict[str, Any]) -> list[list[str]]:
    """A stored result as CSV rows (header first): one line per cell (per cell and bin for a
    histogram, per cell and q for quantiles), every key, value and interval; suppressed
    cells keep their lines with empty values."""
    if result["measure"] in ("histogram", "quantile"):
        return _csv_histogram(result)
    names = [n for n in ("count", "sum", "mean") if n == "count" or n == result["measure"]]
    header = ["time", "area", "category", "suppressed"]
    for name in names:
        header += [name, f"{name}_ci95_low", f"{name}_ci95_high", f"{name}_low_accuracy"]
    lines = [header]
    for cell in result["cells"]:
        line = _keys(cell)
        for name in names:
            found = cell.get(name)
            if found is None:
                line += ["", "", "", ""]
                continue
            low, high = found["ci95"] or (None, None)
            line += [_csv(found["value"]), _csv(low), _csv(high), str(found["low_accuracy"])]
        lines.append(line)
    return lines
