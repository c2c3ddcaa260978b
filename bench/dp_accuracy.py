#!/usr/bin/env python
"""Accuracy of DP releases (issue #6): relative error against the privacy loss and the cell size.

Demo-like data (household electricity as the demo holder serves it, clamped with the bound
the ingestion derives from the demo schema: 288,000 Wh a day x 31 = 8,928,000 Wh per
citizen-month) goes through the engine's own steps: anonymize.pushdown.aggregate_frame (the
exact, contribution-bounded part), anonymize.service._calibrate (the sensitivities and the
budget split a release uses), OpenDP's noise on the vectors, and anonymize.results.build
(intervals, low-accuracy flags, suppression). Only the ledger and the audit are left out:
they do not touch the numbers. Prints a Markdown table for docs/privacy.md.

    .venv/bin/python bench/dp_accuracy.py [--repetitions 200] [--quick]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Cells of these sizes (citizens per district and month): one "district" per size.
SIZES = (10, 30, 100, 300, 1_000, 3_000, 10_000, 30_000)
MONTHS = 12
START_MONTH = 2025 * 12
UPPER_WH = 288_000 * 31  # the demo's bound per citizen-month (broker/service/ingestion.py)
MIN_COHORT = 10  # examples/charter.yaml
SETTINGS = (  # (label, rho, epsilon): the charter caps one release at rho 0.25
    ("rho 0.01", Decimal("0.01"), None),
    ("rho 0.05", Decimal("0.05"), None),
    ("rho 0.25", Decimal("0.25"), None),
    ("eps 0.1", None, Decimal("0.1")),
    ("eps 0.5", None, Decimal("0.5")),
    ("eps 1", None, Decimal("1")),
)
DATASET_ID = uuid.UUID("00000000-0000-4000-8000-0000000acc00")


def demo_frame(seed: int = 6) -> Any:
    """One row per citizen-month (the sum of their daily readings): households drawing about
    10 kWh a day, lognormal between households and between months."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)  # synthetic data only: noise never comes from numpy
    parts = []
    first = 0
    for index, size in enumerate(SIZES):
        subjects = np.arange(first, first + size)
        first += size
        level = rng.lognormal(math.log(300_000), 0.5, size)  # Wh per month, per household
        for month in range(MONTHS):
            season = 1.0 + 0.35 * math.cos(2 * math.pi * month / MONTHS)  # winter peak
            parts.append(
                pd.DataFrame(
                    {
                        "subject_id": subjects,
                        "month_index": START_MONTH + month,
                        "area": f"S{index}",
                        "category": "",
                        "value": (level * season * rng.lognormal(0, 0.15, size)).astype(np.int64),
                    }
                )
            )
    frame = pd.concat(parts, ignore_index=True)
    return frame.sort_values(["subject_id", "month_index"], kind="stable")


def _fast_half_widths() -> None:
    """Cache the intervals' half-widths, and read a wide discrete Gaussian's off the normal
    quantile: OpenDP's discrete_gaussian_scale_to_accuracy sums the distribution term by term,
    about 1.6 s per million of scale, so 100 s for one sum vector at the demo's bound (a defect
    of anonymize.noise.half_width reported with this bench). Above a scale of 1e4 the two agree
    to within one unit of the value."""
    from anonymize import noise

    exact = noise.Calibrated.half_width
    known: dict[tuple[str, float, float], float] = {}

    def half_width(self: Any, alpha: float = 0.05) -> float:
        key = (self.mechanism, self.scale, alpha)
        if key not in known:
            if self.mechanism == noise.GAUSSIAN and self.scale > 1e4:
                z = statistics.NormalDist().inv_cdf(1 - alpha / 2)
                known[key] = float(math.ceil(z * self.scale))
            else:
                known[key] = float(exact(self, alpha))
        return known[key]

    noise.Calibrated.half_width = half_width  # type: ignore[method-assign]


def _spec(measure: str, rho: Decimal | None, epsilon: Decimal | None) -> Any:
    from anonymize.service import ReleaseSpec

    return ReleaseSpec(
        dataset_id=DATASET_ID,
        purpose="bench",
        measure=measure,
        start=date(2025, 1, 1),
        end=date(2026, 1, 1),
        partition="bench",
        rho=rho,
        epsilon=epsilon,
    )


def measure(repetitions: int) -> list[dict[str, Any]]:
    from anonymize import pushdown, results, service
    from anonymize.models import DpDataset

    grid = pushdown.Grid(
        dataset_id=DATASET_ID,
        purpose="bench",
        recipient="bench",
        start_month=START_MONTH,
        width=1,
        buckets=MONTHS,
        areas=tuple(f"S{i}" for i in range(len(SIZES))),
        categories=None,
        lower=0,
        upper=UPPER_WH,
        max_cells=MONTHS,  # the service's default: one cell per time bucket
        at=datetime.now(UTC),
    )
    profile = DpDataset(
        dataset_id=DATASET_ID,
        data_category="energy.electricity.load_curve",
        measure="energy_wh",
        unit="Wh",
        scale=1,
        lower=0,
        upper=UPPER_WH,
        categories=[],
    )
    exact = pushdown.aggregate_frame(demo_frame(), grid)
    keys = grid.keys()
    rows = []
    for label, rho, epsilon in SETTINGS:
        # a "mean" release draws the count and the sum vectors: every measure is read off it
        spec = _spec("mean", rho, epsilon)
        measured = service._calibrate(spec, grid)
        errors: dict[tuple[int, str], list[float]] = {}
        covered: dict[tuple[int, str], list[bool]] = {}
        flagged: dict[tuple[int, str], list[bool]] = {}
        suppressed: dict[int, list[bool]] = {}
        for _ in range(repetitions):
            noisy = {name: m(getattr(exact, name + "s")) for name, m in measured.items()}
            sums = results.build(
                _spec("sum", rho, epsilon), grid, profile, measured, noisy, MIN_COHORT
            )["cells"]
            means = results.build(spec, grid, profile, measured, noisy, MIN_COHORT)["cells"]
            for i, (_, area, _) in enumerate(keys):
                size = SIZES[int(area[1:])]
                n, s = exact.counts[i], exact.sums[i]
                truth = {"count": n, "sum": s, "mean": s / n}
                suppressed.setdefault(size, []).append(sums[i]["suppressed"])
                if sums[i]["suppressed"]:
                    continue
                found = {"count": sums[i]["count"], "sum": sums[i]["sum"], "mean": means[i]["mean"]}
                for name, cell in found.items():
                    key = (size, name)
                    value, ci = cell["value"], cell["ci95"]
                    errors.setdefault(key, []).append(
                        abs(value - truth[name]) / truth[name] if value is not None else math.inf
                    )
                    if ci is not None:  # a mean's interval is open when its count may be 0
                        covered.setdefault(key, []).append(ci[0] <= truth[name] <= ci[1])
                    flagged.setdefault(key, []).append(bool(cell["low_accuracy"]))
        for size in SIZES:
            row: dict[str, Any] = {
                "setting": label,
                "rho": sum((m.rho for m in measured.values()), Decimal(0)),
                "size": size,
                "suppressed": statistics.fmean(suppressed[size]),
                "count_sigma": measured["count"].scale,
                "sum_scale_kwh": measured["sum"].scale / 1000,
            }
            for name in ("count", "sum", "mean"):
                key = (size, name)
                row[name] = statistics.median(errors[key]) if errors.get(key) else None
                row[name + "_p95"] = _quantile(errors.get(key, []), 0.95)
                row[name + "_cover"] = statistics.fmean(covered[key]) if key in covered else None
                row[name + "_flag"] = statistics.fmean(flagged[key]) if key in flagged else None
            rows.append(row)
    return rows


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def pct(value: float | None) -> str:
    if value is None:
        return "—"
    if math.isinf(value) or value >= 10:
        return "> 1000 %"
    if value >= 0.995:
        return f"{value * 100:.0f} %"
    return f"{value * 100:.2g} %"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="20 repetitions")
    args = parser.parse_args()
    repetitions = 20 if args.quick else args.repetitions
    t0 = time.perf_counter()
    _fast_half_widths()
    rows = measure(repetitions)
    print(
        f"Median relative error (95th percentile in brackets) over {repetitions} releases x "
        f"{MONTHS} months per cell size; cells of n citizens, each clamped to "
        f"[0, {UPPER_WH:,}] Wh a month, <= {MONTHS} cells per citizen; the budget split evenly "
        "between the count and the sum vectors. 'cover' is how often the published 95 % "
        "interval held the true value (a mean's interval is left open, and not counted, when "
        "its count's interval reaches 0); 'flag' how often the cell was marked low_accuracy; "
        f"cells whose noisy count is below {MIN_COHORT} are suppressed.\n"
    )
    print(
        "| release | n citizens | count | sum | mean | cover count/sum/mean "
        "| flagged sum | suppressed |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        cover = "/".join(
            "—" if row[f"{m}_cover"] is None else f"{row[f'{m}_cover'] * 100:.0f}"
            for m in ("count", "sum", "mean")
        )
        setting = f"{row['setting']} (charged rho {row['rho'].normalize()})"
        cells = [
            setting,
            f"{row['size']:,}",
            *(f"{pct(row[m])} ({pct(row[m + '_p95'])})" for m in ("count", "sum", "mean")),
            cover,
            pct(row["sum_flag"]),
            pct(row["suppressed"]),
        ]
        print("| " + " | ".join(cells) + " |")
    print()
    print("Noise scales per setting (the same for every cell of a release):")
    seen = set()
    for row in rows:
        if row["setting"] in seen:
            continue
        seen.add(row["setting"])
        print(
            f"- {row['setting']}: count {row['count_sigma']:.2f} citizens, "
            f"sum {row['sum_scale_kwh']:,.0f} kWh"
        )
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
