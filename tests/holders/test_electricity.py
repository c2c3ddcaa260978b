"""The electricity holder's data: deterministic from the seed, shaped like households' loads,
daily values that add up, and a year of half-hours walked page by page in flat memory."""

from __future__ import annotations

import gc
import statistics
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from examples.holders import synth
from examples.holders.electricity import MAX_DAILY_WH, MAX_POWER_W, METERS, Fleet
from tests.holders.conftest import SEED, HolderFactory, walk

LOAD_CURVE = "/datasets/load_curve/records"
DAILY = "/datasets/daily/records"


def _meters(fleet: Fleet, *, heating: bool, count: int) -> list[str]:
    found = []
    for index in range(METERS):
        meter = fleet.meter(index)
        if meter.heating is heating:
            found.append(meter.prm)
            if len(found) == count:
                return found
    raise AssertionError("not enough meters of that kind")


def test_the_same_request_gives_the_same_bytes(
    make_holder: HolderFactory, bearer: Callable[[str], dict[str, str]]
) -> None:
    fleet = Fleet(SEED)
    prm = fleet.meter(7).prm
    query = {"subject": prm, "since": "2025-02-01", "until": "2025-02-03", "limit": 60}
    first = (
        make_holder()
        .test_client()
        .get(LOAD_CURVE, query_string=query, headers=bearer("electricity"))
    )
    second_app = make_holder().test_client()  # another process would build it the same way
    again = second_app.get(LOAD_CURVE, query_string=query, headers=bearer("electricity"))
    assert first.status_code == again.status_code == 200
    assert first.data == again.data
    cursor = first.get_json()["next_cursor"]
    page_two = second_app.get(
        LOAD_CURVE, query_string={**query, "cursor": cursor}, headers=bearer("electricity")
    )
    assert page_two.get_json()["records"][0]["start"] == "2025-02-02T06:00:00Z"


def test_another_seed_gives_other_meters_and_other_data() -> None:
    ours, theirs = Fleet(SEED), Fleet("another seed")
    assert ours.meter(0).prm != theirs.meter(0).prm
    assert ours.ids.decode(theirs.meter(0).prm) is None  # their meters are not ours
    meter_a, meter_b = ours.meter(0), theirs.meter(0)
    assert [ours.power(meter_a, s) for s in range(48)] != [
        theirs.power(meter_b, s) for s in range(48)
    ]


def test_meter_ids_are_2000_distinct_14_digit_prms_that_map_back() -> None:
    fleet = Fleet(SEED)
    ids = [fleet.ids.encode(index) for index in range(METERS)]
    assert len(set(ids)) == METERS
    assert all(len(prm) == 14 and prm.isdigit() for prm in ids)
    assert [fleet.ids.decode(prm) for prm in ids] == list(range(METERS))
    assert fleet.ids.decode("00000000000000") is None
    assert fleet.ids.decode("1234") is None
    heating = sum(fleet.meter(index).heating for index in range(METERS))
    assert 0.2 < heating / METERS < 0.3  # about a quarter heat with electricity
    assert {fleet.meter(index).district for index in range(METERS)} == set(synth.DISTRICTS)


def test_electric_heating_homes_draw_far_more_in_winter_than_in_summer() -> None:
    fleet = Fleet(SEED)
    january = range(0, 31 * 48, 3)
    july = range(181 * 48, 212 * 48, 3)

    def ratio(prm: str) -> float:
        meter = fleet.lookup(prm)
        assert meter is not None
        winter = statistics.mean(fleet.power(meter, slot) for slot in january)
        summer = statistics.mean(fleet.power(meter, slot) for slot in july)
        return winter / summer

    heated = [ratio(prm) for prm in _meters(fleet, heating=True, count=6)]
    others = [ratio(prm) for prm in _meters(fleet, heating=False, count=6)]
    assert min(heated) > 2.0
    assert max(others) < 1.8
    assert min(heated) > max(others)


def test_winter_evenings_peak_in_heating_homes() -> None:
    fleet = Fleet(SEED)
    meter = fleet.lookup(_meters(fleet, heating=True, count=1)[0])
    assert meter is not None
    days = range(5, 40)
    # 18:30 and 03:30 local in January are 17:30 and 02:30 UTC: slots 35 and 5 of the day
    evening = statistics.mean(fleet.power(meter, day * 48 + 35) for day in days)
    afternoon = statistics.mean(fleet.power(meter, day * 48 + 27) for day in days)
    assert evening > 1.3 * afternoon


def test_a_day_is_the_sum_of_its_half_hours(
    make_holder: HolderFactory, bearer: Callable[[str], dict[str, str]]
) -> None:
    fleet = Fleet(SEED)
    prms = _meters(fleet, heating=True, count=1) + _meters(fleet, heating=False, count=1)
    client = make_holder().test_client()
    window = {"since": "2025-01-10", "until": "2025-01-14", "limit": 1000}
    curve = client.get(
        LOAD_CURVE, query_string={**window, "subject": prms}, headers=bearer("electricity")
    ).get_json()["records"]
    daily = client.get(
        DAILY, query_string={**window, "subject": prms}, headers=bearer("electricity")
    ).get_json()["records"]
    assert len(curve) == 2 * 4 * 48
    assert len(daily) == 2 * 4
    for day in daily:
        halves = [
            r["power_w"]
            for r in curve
            if r["prm"] == day["prm"] and r["start"].startswith(day["date"])
        ]
        assert len(halves) == 48
        assert abs(day["energy_wh"] - sum(halves) / 2) <= 0.5
        assert day["district"] == next(r["district"] for r in curve if r["prm"] == day["prm"])


def test_walking_a_year_of_pages_gives_17520_half_hours_without_gaps_or_duplicates(
    make_holder: HolderFactory, bearer: Callable[[str], dict[str, str]]
) -> None:
    prm = Fleet(SEED).meter(3).prm
    records, pages = walk(
        make_holder().test_client(),
        LOAD_CURVE,
        {"subject": prm, "limit": 1000},
        bearer("electricity"),
    )
    assert pages == 18
    assert len(records) == synth.SLOTS == 17_520
    starts = [datetime.fromisoformat(r["start"]) for r in records]
    assert starts[0] == datetime(2025, 1, 1, tzinfo=UTC)
    assert starts[-1] == datetime(2025, 12, 31, 23, 30, tzinfo=UTC)
    assert all(b - a == timedelta(minutes=30) for a, b in pairwise(starts))
    assert all(0 <= r["power_w"] <= MAX_POWER_W for r in records)
    assert {r["prm"] for r in records} == {prm}


def test_pages_of_several_meters_come_in_one_stable_order(
    make_holder: HolderFactory, bearer: Callable[[str], dict[str, str]]
) -> None:
    fleet = Fleet(SEED)
    prms = [fleet.meter(index).prm for index in (11, 4, 25)]
    client = make_holder().test_client()
    window = {"since": "2025-06-01T00:00:00+02:00", "until": "2025-06-03T00:00:00+02:00"}
    small, small_pages = walk(
        client, LOAD_CURVE, {**window, "subject": prms, "limit": 7}, bearer("electricity")
    )
    # the same subjects, shuffled and repeated: the same records in the same order
    large, _ = walk(
        client,
        LOAD_CURVE,
        {**window, "subject": [*reversed(prms), prms[0]], "limit": 1000},
        bearer("electricity"),
    )
    assert small == large
    assert small_pages == -(-len(small) // 7)
    assert len(small) == 3 * 96
    assert [r["prm"] for r in small] == sorted(r["prm"] for r in small)
    keys = [(r["prm"], r["start"]) for r in small]
    assert len(set(keys)) == len(keys)
    assert small[0]["start"] == "2025-05-31T22:00:00Z"


def test_a_window_selects_half_open_whole_slots(
    make_holder: HolderFactory, bearer: Callable[[str], dict[str, str]]
) -> None:
    prm = Fleet(SEED).meter(0).prm
    client = make_holder().test_client()
    body = client.get(
        LOAD_CURVE,
        query_string={
            "subject": prm,
            "since": "2025-03-30T00:10:00Z",
            "until": "2025-03-30T02:00:00Z",
        },
        headers=bearer("electricity"),
    ).get_json()
    assert [r["start"] for r in body["records"]] == [
        "2025-03-30T00:30:00Z",
        "2025-03-30T01:00:00Z",
        "2025-03-30T01:30:00Z",
    ]
    assert body["next_cursor"] is None
    outside = client.get(
        DAILY, query_string={"subject": prm, "since": "2026-01-01"}, headers=bearer("electricity")
    ).get_json()
    assert outside == {"records": [], "next_cursor": None}


def test_a_well_formed_meter_that_is_not_ours_gives_no_records(
    make_holder: HolderFactory, bearer: Callable[[str], dict[str, str]]
) -> None:
    fleet = Fleet(SEED)
    ours = fleet.meter(1).prm
    client = make_holder().test_client()
    body = client.get(
        DAILY,
        query_string={"subject": ["00000000000000", ours], "until": "2025-01-03"},
        headers=bearer("electricity"),
    ).get_json()
    assert [r["prm"] for r in body["records"]] == [ours, ours]


def test_values_stay_within_the_declared_bounds(make_holder: HolderFactory) -> None:
    fleet = Fleet(SEED)
    fields = {
        dataset["id"]: {f["name"]: f for f in dataset["fields"]}
        for dataset in make_holder().test_client().get("/datasets").get_json()["datasets"]
    }
    assert fields["load_curve"]["power_w"]["maximum"] == MAX_POWER_W
    assert fields["daily"]["energy_wh"]["maximum"] == MAX_DAILY_WH
    for index in range(0, METERS, 97):
        meter = fleet.meter(index)
        for day in range(0, 365, 29):
            energy = fleet.day_energy(meter, day)
            assert 0 < energy <= MAX_DAILY_WH
            assert all(
                0 < fleet.power(meter, slot) <= meter.kva * 1000 <= MAX_POWER_W
                for slot in range(day * 48, day * 48 + 48)
            )


def test_memory_stays_flat_however_many_pages_are_walked(
    make_holder: HolderFactory, bearer: Callable[[str], dict[str, str]]
) -> None:
    client = make_holder().test_client()
    prm = Fleet(SEED).meter(42).prm
    headers = bearer("electricity")

    def walk_pages(count: int) -> int:
        cursor, served = None, 0
        for _ in range(count):
            query = {"subject": prm, "limit": 200, **({"cursor": cursor} if cursor else {})}
            body = client.get(LOAD_CURVE, query_string=query, headers=headers).get_json()
            served += len(body["records"])
            cursor = body["next_cursor"]
        return served

    walk_pages(2)  # warm-up: imports, caches, the JWKS
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        assert walk_pages(2) == 400
        few = tracemalloc.get_traced_memory()[1] - base
        gc.collect()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        assert walk_pages(40) == 8000
        many = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # Holding the records walked would grow by 38 pages x 200 records (well over 1 MB); the
    # peak of a streaming walk moves by a few kB, and by up to about 80 kB when something else
    # of the process allocates meanwhile (tracemalloc sees every thread): a CI run saw 76 kB.
    assert many - few < 256 * 1024, (few, many)
