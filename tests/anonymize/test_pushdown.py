"""The exact part of a release: sound contribution bounds (property-tested), every key in the
output whatever the data, the SQL template and pandas chunks agreeing, and staged rows that
follow consents, withdrawals and retention."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from anonymize import pushdown
from anonymize.models import StagedRecord
from anonymize.service import Record, drop_subject, purge_expired, stage_records
from anonymize.staging import month_index
from common.clock import frozen, utcnow
from common.errors import InvalidInputError
from tests.anonymize.conftest import (
    DISTRICTS,
    PURPOSE,
    RECIPIENT,
    make_grid,
    make_profile,
    synthetic,
)

AREAS = ("A", "B", "C")


def grid(**overrides) -> pushdown.Grid:
    return make_grid(**overrides)


def vectors(frame: pd.DataFrame, g: pushdown.Grid) -> tuple[list[int], list[int]]:
    exact = pushdown.aggregate_frame(frame, g)
    return exact.counts, exact.sums


rows = st.lists(
    st.tuples(
        st.integers(0, 6),  # citizen
        st.integers(2026 * 12, 2026 * 12 + 2),  # month
        st.sampled_from(AREAS),
        st.integers(-50, 400),  # value, beyond the bounds on both sides
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=rows, who=st.integers(0, 6), max_cells=st.integers(1, 4), lower=st.integers(-20, 10))
def test_removing_one_citizen_moves_the_aggregates_by_at_most_the_declared_sensitivity(
    data, who, max_cells, lower
):
    g = grid(max_cells=max_cells, lower=lower, upper=100)
    frame = pd.DataFrame(data, columns=["subject_id", "month_index", "area", "value"])
    frame["subject_id"] = frame["subject_id"].astype(str)
    frame["category"] = ""
    without = frame[frame["subject_id"] != str(who)]
    counts, sums = vectors(frame, g)
    counts_2, sums_2 = vectors(without, g)
    bound = max(abs(g.lower), abs(g.upper))
    dc = [a - b for a, b in zip(counts, counts_2, strict=True)]
    ds = [a - b for a, b in zip(sums, sums_2, strict=True)]
    # the sensitivities service._calibrate declares: L1 = m * M, L2 = sqrt(m) * M
    assert sum(abs(x) for x in dc) <= max_cells
    assert math.sqrt(sum(x * x for x in dc)) <= math.sqrt(max_cells) + 1e-9
    assert sum(abs(x) for x in ds) <= max_cells * bound
    assert math.sqrt(sum(x * x for x in ds)) <= math.sqrt(max_cells) * bound + 1e-9


def test_every_key_is_in_the_output_whatever_the_data(session):
    g = grid()
    empty = pushdown.aggregate(session, g)
    assert empty.counts == [0] * 9
    assert empty.sums == [0] * 9
    assert g.keys() == [(b, a, "") for b in range(3) for a in AREAS]


def test_a_citizen_counts_once_per_cell_clamped_and_in_at_most_max_cells(session, charter):
    profile = make_profile(lower=Decimal(0), upper=Decimal("0.1"), categories=())  # 100 Wh
    who = uuid.uuid4()
    t = datetime(2026, 1, 5, tzinfo=UTC)
    records = [
        Record(who, t, "0.03", "A"),
        Record(who, t, "0.03", "A"),  # one cell: 60 Wh, counted once
        Record(who, t + timedelta(days=40), "5", "A"),  # February: 5000 Wh clamped to 100
        Record(who, t + timedelta(days=70), "0.05", "A"),  # March: a third cell, beyond m=2
        Record(uuid.uuid4(), t, "0.0004", "Z"),  # an area outside the public keys
    ]
    stage_records(session, profile, PURPOSE, records, retention_days=30, recipient=RECIPIENT)
    g = grid(dataset_id=profile.dataset_id, upper=100, max_cells=2)
    for exact in (pushdown.aggregate_sql(session, g), pushdown.aggregate_pandas(session, g)):
        assert exact.counts == [1, 0, 0, 1, 0, 0, 0, 0, 0]
        assert exact.sums == [60, 0, 0, 100, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("edges", [None, (0, 50_000, 100_000, 200_000, 400_000)])
def test_the_sql_template_and_pandas_chunks_agree(session, charter, edges):
    """Sums and counts, and histograms when the grid has bins."""
    profile = make_profile()
    records = synthetic(300, districts=DISTRICTS[:5])
    stage_records(session, profile, PURPOSE, records, retention_days=30, recipient=RECIPIENT)
    g = grid(
        dataset_id=profile.dataset_id,
        areas=DISTRICTS[:5],
        categories=("electric", "gas", "other"),
        upper=400_000,
        max_cells=2,
        edges=edges,
    )
    by_sql = pushdown.aggregate_sql(session, g)
    by_pandas = pushdown.aggregate_pandas(session, g, chunk_rows=97)  # citizens cross chunks
    assert by_sql == by_pandas
    assert by_pandas == pushdown.aggregate(session, g)
    if edges is None:
        assert sum(by_sql.counts) == 300 * 2  # everyone touches 3 months, kept to 2 cells
    else:
        assert by_sql.histogram is not None
        assert sum(by_sql.histogram) == 300 * 2


def test_values_are_staged_as_integer_fixed_point(session, charter):
    profile = make_profile()
    assert profile.to_fixed(1.2345) == 1234  # half to even at the Wh
    assert profile.to_fixed("1.2355") == 1236
    assert profile.to_fixed(Decimal("-0.0005")) == 0
    with pytest.raises(InvalidInputError):
        profile.to_fixed("abc")
    with pytest.raises(InvalidInputError):
        profile.to_fixed(float("inf"))
    who = uuid.uuid4()
    stage_records(
        session,
        profile,
        PURPOSE,
        [(who, date(2026, 3, 1), 0.1, "D01")],
        retention_days=1,
        recipient=RECIPIENT,
    )
    assert session.scalar(select(StagedRecord.value).where(StagedRecord.subject_id == who)) == 100


def test_staging_refuses_naive_times_holder_ids_and_undeclared_categories(session, charter):
    profile = make_profile()
    bad = [
        (uuid.uuid4(), datetime(2026, 1, 1), 1, "D01"),  # noqa: DTZ001 (the point)
        ("PDL-12345678901234", datetime(2026, 1, 1, tzinfo=UTC), 1, "D01"),
        (uuid.uuid4(), datetime(2026, 1, 1, tzinfo=UTC), 1, "D01", "coal"),
    ]
    for record in bad:
        with pytest.raises(InvalidInputError):
            stage_records(
                session, profile, PURPOSE, [record], retention_days=1, recipient=RECIPIENT
            )


def test_records_are_kept_for_the_purposes_retention_in_the_charter(session, charter):
    who = uuid.uuid4()
    stage_records(
        session, make_profile(), PURPOSE, [(who, date(2026, 1, 1), 1, "D01")], recipient=RECIPIENT
    )
    expires = session.scalar(select(StagedRecord.expires_at).where(StagedRecord.subject_id == who))
    assert expires - utcnow() == pytest.approx(timedelta(days=730), abs=timedelta(minutes=1))
    with pytest.raises(InvalidInputError):  # individual mode only: nothing to stage for it
        stage_records(session, make_profile(), "energy-coaching", [])


def test_months_follow_the_territorys_calendar():
    assert month_index(datetime(2026, 1, 31, 23, 30, tzinfo=UTC)) == 2026 * 12 + 1  # 1 Feb
    assert month_index(date(2026, 1, 31)) == 2026 * 12


def test_a_withdrawn_citizen_is_gone_before_the_next_release(session, charter):
    profile = make_profile()
    leaving, staying = uuid.uuid4(), uuid.uuid4()
    t = datetime(2026, 1, 10, tzinfo=UTC)
    records = [Record(leaving, t, 1, "A"), Record(staying, t, 1, "A")]
    stage_records(session, profile, PURPOSE, records, retention_days=30, recipient=RECIPIENT)
    stage_records(
        session,
        profile,
        "research",
        [Record(leaving, t, 1, "A")],
        retention_days=30,
        recipient=RECIPIENT,
    )
    g = grid(dataset_id=profile.dataset_id, upper=10_000)
    assert pushdown.aggregate(session, g).counts[0] == 2
    assert drop_subject(session, leaving, PURPOSE) == 1
    assert pushdown.aggregate(session, g).counts[0] == 1
    remaining = session.scalars(
        select(StagedRecord.purpose).where(StagedRecord.subject_id == leaving)
    ).all()
    assert remaining == ["research"]  # other purposes keep their own consent
    assert drop_subject(session, leaving, PURPOSE) == 0  # idempotent
    assert drop_subject(session, leaving) == 1


def test_records_past_the_consent_or_the_retention_are_never_used(session, charter):
    profile = make_profile()
    t = datetime(2026, 1, 10, tzinfo=UTC)
    now = utcnow()
    stage_records(
        session,
        profile,
        PURPOSE,
        [Record(uuid.uuid4(), t, 1, "A")],
        retention_days=30,
        valid_until=now + timedelta(days=1),
        recipient=RECIPIENT,
    )
    stage_records(
        session,
        profile,
        PURPOSE,
        [Record(uuid.uuid4(), t, 1, "A")],
        retention_days=2,
        recipient=RECIPIENT,
    )
    g = grid(dataset_id=profile.dataset_id, upper=10_000)
    assert pushdown.aggregate(session, g).counts[0] == 2
    later = grid(dataset_id=profile.dataset_id, upper=10_000, at=now + timedelta(days=1, hours=1))
    assert pushdown.aggregate(session, later).counts[0] == 1  # the consent ended
    at_end = grid(dataset_id=profile.dataset_id, upper=10_000, at=now + timedelta(days=3))
    assert pushdown.aggregate(session, at_end).counts[0] == 0  # retention is over
    with frozen(now + timedelta(days=3)):
        assert purge_expired(session) == 1
    count = session.scalar(
        select(func.count()).where(StagedRecord.dataset_id == profile.dataset_id)
    )
    assert count == 1
