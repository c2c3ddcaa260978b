"""A release spec, and its validation into a public grid of cells (and bins).

Everything checked here is public: the charter's partitions, the dataset's public categories
and bounds, the request. A refusal names its fields (InvalidInputError, 422) and happens
before anything is charged or read.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import uuid
from dataclasses import asdict, dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from anonymize import pushdown
from anonymize.models import DpDataset
from charter.service import Charter
from common.clock import utcnow
from common.errors import InvalidInputError

MEASURES = ("count", "sum", "mean", "histogram", "quantile")
HISTOGRAMS = ("histogram", "quantile")
BUCKETS = {"month": 1, "quarter": 3, "year": 12}
MAX_CELLS = 5000  # cells (x bins) in one release: bounds the output and the work
MAX_BINS = 100  # bins of a histogram
MAX_QUANTILES = 10


@dataclass(frozen=True, slots=True)
class ReleaseSpec:
    """What an observatory asks: a measure over public keys, and the privacy loss it spends.

    Exactly one of `rho` (zCDP, discrete Gaussian) or `epsilon` (pure DP, discrete Laplace).
    Time runs from `start` (inclusive) to `end` (exclusive), both first days of a month, in
    buckets of `bucket` ("month", "quarter", "year" or "all"). `partition` names one of the
    charter territory's partitions (public keys), `by_category` the dataset's public list;
    `areas` and `categories` keep a subset of those keys (filters on public values only).
    A histogram's bins are `bins` (edges in the dataset's unit) or `bin_count` equal bins
    between the dataset's public bounds; `quantiles` are read off that histogram.
    """

    dataset_id: uuid.UUID
    purpose: str
    measure: str
    start: date
    end: date
    bucket: str = "month"
    partition: str | None = None
    by_category: bool = False
    rho: Decimal | None = None
    epsilon: Decimal | None = None
    max_cells: int | None = None
    areas: tuple[str, ...] | None = None
    categories: tuple[str, ...] | None = None
    bins: tuple[Decimal, ...] | None = None
    bin_count: int | None = None
    quantiles: tuple[Decimal, ...] | None = None

    def canonical(self) -> dict[str, Any]:
        """The spec as JSON, one form per meaning (its hash makes releases idempotent).
        Options left unset are left out, so specs made before they existed keep their hash."""
        out = asdict(self)
        for name in ("dataset_id", "start", "end"):
            out[name] = str(out[name])
        for name in ("rho", "epsilon"):
            if out[name] is not None:
                out[name] = str(Decimal(out[name]).normalize())
        for name in _OPTIONS:
            if out[name] is None:
                del out[name]
            else:
                out[name] = [_plain(v) for v in out[name]] if name != "bin_count" else out[name]
        return out

    def request_hash(self) -> str:
        body = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()


_OPTIONS = ("areas", "categories", "bins", "bin_count", "quantiles")


def _plain(item: Any) -> Any:
    if isinstance(item, Decimal | float | int):
        return format(Decimal(str(item)).normalize(), "f")  # 50, never 5E+1
    return item


def _months(value: date) -> int:
    return value.year * 12 + value.month - 1


def _window(spec: ReleaseSpec, problems: dict[str, list[str]]) -> tuple[int, int, int]:
    """(first month, months per bucket, buckets) of the request's time window."""
    start, end = _months(spec.start), _months(spec.end)
    if spec.start.day != 1 or spec.end.day != 1:
        problems["start"] = ["start and end are first days of a month"]
    elif end <= start:
        problems["end"] = ["end comes after start"]
    width = max(end - start, 1) if spec.bucket == "all" else BUCKETS.get(spec.bucket, 1)
    if spec.bucket not in (*BUCKETS, "all"):
        problems["bucket"] = ["one of month, quarter, year, all"]
    elif end > start and (end - start) % width:
        problems["end"] = [f"the period is a whole number of {spec.bucket}s"]
    elif spec.bucket in ("quarter", "year") and start % width:
        problems["start"] = [
            f"a {spec.bucket} starts in month {1 if width == 12 else '1, 4, 7 or 10'}"
        ]
    return start, width, max(end - start, 0) // width


def _subset(
    asked: tuple[str, ...] | None, known: tuple[str, ...], field: str, of: str
) -> tuple[tuple[str, ...], list[str]]:
    """The asked keys in the public list's order (all of it if none asked), and problems."""
    if asked is None:
        return known, []
    unknown = [key for key in asked if key not in known]
    if unknown:
        return known, [f"not {of}: {', '.join(sorted(set(unknown)))}"]
    if len(set(asked)) != len(asked):
        return known, [f"each of the {field} once"]
    return tuple(key for key in known if key in asked), []


def _keys(
    spec: ReleaseSpec, charter: Charter, profile: DpDataset, problems: dict[str, list[str]]
) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """The areas and categories of the grid: public lists, filtered by public values only."""
    areas = None
    if spec.partition is not None:
        partition = charter.doc.territory.partitions.get(spec.partition)
        if not partition:
            known = ", ".join(sorted(charter.doc.territory.partitions)) or "none"
            problems["partition"] = [f"not a partition of the territory (known: {known})"]
        else:
            of = f"areas of the partition {spec.partition}"
            areas, errors = _subset(spec.areas, tuple(p.id for p in partition), "areas", of)
            if errors:
                problems["areas"] = errors
    elif spec.areas is not None:
        problems["areas"] = ["give the partition these areas are of"]
    categories = None
    if spec.by_category:
        if not profile.categories:
            problems["by_category"] = ["this dataset declares no public categories"]
        else:
            of = "categories of this dataset"
            categories, errors = _subset(
                spec.categories, tuple(profile.categories), "categories", of
            )
            if errors:
                problems["categories"] = errors
    elif spec.categories is not None:
        problems["categories"] = ["filtering categories needs by_category"]
    return areas, categories


def _fixed(profile: DpDataset, value: Decimal) -> int:
    return int((Decimal(value) * profile.scale).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _edges(
    spec: ReleaseSpec, profile: DpDataset, problems: dict[str, list[str]]
) -> tuple[int, ...] | None:
    """A histogram's bin edges in fixed point: asked (increasing, within the dataset's public
    bounds) or `bin_count` equal bins between those bounds; None for other measures."""
    histogram = spec.measure in HISTOGRAMS
    if not histogram:
        for name in ("bins", "bin_count", "quantiles"):
            if getattr(spec, name) is not None:
                problems[name] = ["only for a histogram or quantiles"]
        return None
    if spec.measure == "quantile":
        qs = spec.quantiles or ()
        if not qs or len(qs) > MAX_QUANTILES or not all(0 < q < 1 for q in qs):
            problems["quantiles"] = [f"1 to {MAX_QUANTILES} values between 0 and 1 (excluded)"]
    elif spec.quantiles is not None:
        problems["quantiles"] = ["only for the measure quantile"]
    if (spec.bins is None) == (spec.bin_count is None):
        problems["bins"] = ["give bins (edges) or bin_count, not both"]
        return None
    if spec.bin_count is not None:
        if not 1 <= spec.bin_count <= MAX_BINS:
            problems["bin_count"] = [f"between 1 and {MAX_BINS}"]
            return None
        if profile.upper - profile.lower < spec.bin_count:
            problems["bin_count"] = ["more bins than the bounds have units"]
            return None
        span, n = profile.upper - profile.lower, spec.bin_count
        return tuple(profile.lower + span * i // n for i in range(n + 1))
    edges = tuple(_fixed(profile, e) for e in spec.bins or ())
    if not 2 <= len(edges) <= MAX_BINS + 1:
        problems["bins"] = [f"2 to {MAX_BINS + 1} edges"]
    elif any(b <= a for a, b in itertools.pairwise(edges)):
        problems["bins"] = ["edges increase (in the dataset's fixed point)"]
    elif edges[0] < profile.lower or edges[-1] > profile.upper:
        lo, hi = profile.lower / profile.scale, profile.upper / profile.scale
        problems["bins"] = [f"within the dataset's bounds [{lo}, {hi}]"]
    else:
        return edges
    return None


def grid(spec: ReleaseSpec, charter: Charter, profile: DpDataset, recipient: str) -> pushdown.Grid:
    """The public key set and the contribution bounds; InvalidInputError names the field."""
    problems: dict[str, list[str]] = {}
    if spec.measure not in MEASURES:
        problems["measure"] = [f"one of {', '.join(MEASURES)}"]
    start, width, buckets = _window(spec, problems)
    areas, categories = _keys(spec, charter, profile, problems)
    edges = _edges(spec, profile, problems)
    if problems:
        raise InvalidInputError("The release spec is not valid.", fields=problems)
    cells = buckets * len(areas or ("",)) * len(categories or ("",))
    values = cells * (len(edges) - 1 if edges else 1)
    if values > MAX_CELLS:
        raise InvalidInputError(
            f"A release has at most {MAX_CELLS} cells (times bins); this one would have {values}.",
            fields={"bucket": ["coarser buckets, a shorter period, fewer keys or bins"]},
        )
    # A citizen may touch every category of every bucket (trips by mode): by default they
    # count in all of them; areas are where they live, one at a time.
    default = buckets * (len(categories) if categories else 1)
    max_cells = spec.max_cells if spec.max_cells is not None else default
    if not 1 <= max_cells <= cells:
        raise InvalidInputError(
            "max_cells is between 1 and the number of cells.",
            fields={"max_cells": [f"between 1 and {cells}"]},
        )
    return pushdown.Grid(
        dataset_id=profile.dataset_id,
        purpose=spec.purpose,
        recipient=recipient,
        start_month=start,
        width=width,
        buckets=buckets,
        areas=areas,
        categories=categories,
        lower=profile.lower,
        upper=profile.upper,
        max_cells=max_cells,
        at=utcnow(),
        edges=edges,
    )
