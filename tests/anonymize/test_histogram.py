"""Histograms over a public grid of bins and quantiles read off them: each citizen's clamped
cell value in exactly one bin (property-tested sensitivity), the SQL template and pandas
agreeing bin for bin, quantiles as post-processing of the noisy histogram, and specs
refused with field messages."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anonymize import pushdown, results
from anonymize.service import Record, stage_records
from tests.anonymize.conftest import (
    PURPOSE,
    RECIPIENT,
    make_grid,
    make_profile,
)

AREAS = ("A", "B", "C")
EDGES = (0, 25, 50, 100)


def grid(**overrides) -> pushdown.Grid:
    return make_grid(**{"edges": EDGES, **overrides})


rows = st.lists(
    st.tuples(
        st.integers(0, 6),  # citizen
        st.integers(2026 * 12, 2026 * 12 + 2),  # month
        st.sampled_from(AREAS),
        st.integers(-50, 400),  # value, beyond the bounds on both sides
    ),
    max_size=60,
)


def frame_of(data) -> pd.DataFrame:
    frame = pd.DataFrame(data, columns=["subject_id", "month_index", "area", "value"])
    frame["subject_id"] = frame["subject_id"].astype(str)
    frame["category"] = ""
    return frame


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=rows,
    who=st.integers(0, 6),
    max_cells=st.integers(1, 4),
    edges=st.lists(st.integers(-20, 120), min_size=2, max_size=6, unique=True).map(sorted),
)
def test_removing_one_citizen_moves_a_histogram_by_at_most_the_declared_sensitivity(
    data, who, max_cells, edges
):
    g = grid(max_cells=max_cells, lower=-20, upper=120, edges=tuple(edges))
    frame = frame_of(data)
    full = pushdown.aggregate_frame(frame, g)
    without = pushdown.aggregate_frame(frame[frame["subject_id"] != str(who)], g)
    assert full.histogram is not None
    assert without.histogram is not None
    diff = [a - b for a, b in zip(full.histogram, without.histogram, strict=True)]
    # the sensitivities service._calibrate declares for a histogram: L1 = m, L2 = sqrt(m)
    assert sum(abs(x) for x in diff) <= max_cells
    assert math.sqrt(sum(x * x for x in diff)) <= math.sqrt(max_cells) + 1e-9
    # each citizen's clamped cell value falls in exactly one bin
    bins = g.bins
    per_cell = [sum(full.histogram[i * bins : (i + 1) * bins]) for i in range(g.cells)]
    assert per_cell == full.counts


def test_values_fall_in_their_bin_and_beyond_the_edges_in_the_outer_ones(session, charter):
    profile = make_profile(lower=Decimal(0), upper=Decimal("0.1"), categories=())  # 100 Wh
    t = datetime(2026, 1, 5, tzinfo=UTC)
    values = {"0.01": 0, "0.025": 1, "0.049": 1, "0.05": 2, "0.1": 2, "7": 2}
    subjects = {uuid.uuid4(): value for value in values}
    records = [Record(s, t, v, "A") for s, v in subjects.items()]
    stage_records(session, profile, PURPOSE, records, retention_days=30, recipient=RECIPIENT)
    g = grid(dataset_id=profile.dataset_id, edges=(10, 25, 50, 100), buckets=1, max_cells=1)
    expected = [0] * (len(AREAS) * 3)
    for slot in values.values():
        expected[slot] += 1  # area A is the first cell: bins 0..2
    for exact in (pushdown.aggregate_sql(session, g), pushdown.aggregate_pandas(session, g)):
        assert exact.histogram == expected
        assert exact.counts == [6, 0, 0]


def test_truncation_keeps_cells_in_the_grids_key_order_on_both_paths(session, charter):
    """Areas listed in an order that neither Python's sort nor a database collation gives:
    a citizen in two areas of one month keeps the first in the grid's order on both paths."""
    areas = ("b", "B", "a", "_x")  # Python sorts "B" < "_x" < "a" < "b"; collations differ
    profile = make_profile(categories=())
    t = datetime(2026, 1, 5, tzinfo=UTC)
    records = []
    for pair in (("a", "b"), ("B", "a"), ("_x", "B"), ("_x", "a")):
        who = uuid.uuid4()
        records += [Record(who, t, 1, pair[0]), Record(who, t, 1, pair[1])]
    stage_records(session, profile, PURPOSE, records, retention_days=30, recipient=RECIPIENT)
    g = grid(
        dataset_id=profile.dataset_id, areas=areas, buckets=1, max_cells=1, edges=None, upper=10**6
    )
    expected = [1, 2, 1, 0]  # b, B (twice: over a and over _x), a (over _x), _x never first
    assert pushdown.aggregate_sql(session, g).counts == expected
    assert pushdown.aggregate_pandas(session, g).counts == expected


def test_quantiles_are_read_off_the_cumulated_clamped_noisy_counts():
    edges = [0.0, 10.0, 20.0, 40.0]
    found = results.quantiles([-5, 10, 30], edges, [0.25, 0.5, 0.9], total_half=4.0)
    # clamped counts 0, 10, 30 (total 40): q=0.25 -> 10th -> end of bin 1
    assert [f["interval"] for f in found] == [[10.0, 20.0], [20.0, 40.0], [20.0, 40.0]]
    assert found[0]["value"] == 20.0
    assert found[1]["value"] == 20.0 + (20 - 10) / 30 * 20
    assert not any(f["low_accuracy"] for f in found)
    empty = results.quantiles([-3, 0, -1], edges, [0.5], total_half=4.0)
    assert empty == [{"q": 0.5, "value": None, "interval": None, "low_accuracy": True}]


def test_records_far_in_the_past_are_outside_the_window(session, charter):
    profile = make_profile(categories=())
    old = datetime(2025, 6, 1, tzinfo=UTC)
    stage_records(
        session,
        profile,
        PURPOSE,
        [
            Record(uuid.uuid4(), old, 1, "A"),
            Record(uuid.uuid4(), old + timedelta(days=214), 1, "A"),
        ],
        retention_days=30,
        recipient=RECIPIENT,
    )
    g = grid(dataset_id=profile.dataset_id)
    assert sum(pushdown.aggregate_sql(session, g).counts) == 1  # January 2026 only
    assert sum(pushdown.aggregate_pandas(session, g).counts) == 1


def test_grouped_sums_stay_exact_integers_beyond_floats_precision():
    import numpy as np

    big = 2**53 - 1  # a float64 holds it, but not big + 1 + big
    groups = np.array([0, 0, 1, 0], np.int64)
    values = np.array([big, 1, 3, big], np.int64)
    assert pushdown._group_sums(groups, values, 2).tolist() == [2 * big + 1, 3]
    small = np.array([5, -2, 7, 1], np.int64)
    assert pushdown._group_sums(groups, small, 3).tolist() == [4, 7, 0]
