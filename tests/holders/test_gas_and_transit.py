"""The gas and transit holders' data: deterministic, winter-heavy gas, and trips whose CO2 is
their distance times the public factor of their mode."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime

from examples.holders import synth
from examples.holders.gas import MAX_DAILY_WH, Network
from examples.holders.gas import METERS as GAS_METERS
from examples.holders.transit import (
    CO2_G_PER_KM,
    HARBOUR,
    MAX_DISTANCE_M,
    MAX_TRIP_CO2_G,
    MAX_TRIPS_PER_DAY,
    MIN_CHANGE_S,
    MODES,
    Operator,
)
from tests.holders.conftest import SEED, HolderFactory, walk

GAS = "/datasets/daily/records"
TRIPS = "/datasets/trips/records"


# --- gas --------------------------------------------------------------------------------


def test_gas_is_the_same_for_the_same_seed_and_differs_for_another(
    make_holder: HolderFactory, bearer: Callable[[str], dict[str, str]]
) -> None:
    pce = Network(SEED).meter(5).pce
    query = {"subject": pce, "limit": 40}
    first = make_holder("gas").test_client().get(GAS, query_string=query, headers=bearer("gas"))
    again = make_holder("gas").test_client().get(GAS, query_string=query, headers=bearer("gas"))
    assert first.status_code == 200
    assert first.data == again.data
    other = Network("another seed")
    assert other.meter(5).pce != pce
    ours = [Network(SEED).energy(Network(SEED).meter(5), day) for day in range(30)]
    theirs = [other.energy(other.meter(5), day) for day in range(30)]
    assert ours != theirs


def test_gas_is_winter_heavy_for_every_meter() -> None:
    network = Network(SEED)
    winter_days = [*range(0, 59), *range(334, 365)]  # December to February
    summer_days = range(151, 243)  # June to August
    for index in range(0, GAS_METERS, 53):
        meter = network.meter(index)
        winter = sum(network.energy(meter, day) for day in winter_days)
        summer = sum(network.energy(meter, day) for day in summer_days)
        assert winter > 3 * summer, (meter, winter, summer)


def test_gas_meters_are_800_distinct_pces_within_bounds(make_holder: HolderFactory) -> None:
    network = Network(SEED)
    ids = {network.ids.encode(index) for index in range(GAS_METERS)}
    assert len(ids) == GAS_METERS
    assert all(len(pce) == 14 and pce.isdigit() for pce in ids)
    for index in range(0, GAS_METERS, 41):
        meter = network.meter(index)
        assert all(0 < network.energy(meter, day) <= MAX_DAILY_WH for day in range(0, 365, 5))
    described = make_holder("gas").test_client().get("/datasets/daily").get_json()
    energy = next(f for f in described["fields"] if f["name"] == "energy_wh")
    assert (energy["unit"], energy["minimum"], energy["maximum"]) == ("W.h", 0, MAX_DAILY_WH)
    assert described["subject_field"] == "pce"


# --- transit ----------------------------------------------------------------------------


def _year_of_trips(
    client_factory: HolderFactory, headers: dict[str, str], cards: list[str]
) -> list[dict[str, object]]:
    records, _ = walk(
        client_factory("transit").test_client(), TRIPS, {"subject": cards, "limit": 1000}, headers
    )
    return records


def test_co2_is_distance_times_the_modes_factor(
    make_holder: HolderFactory, bearer: Callable[[str], dict[str, str]]
) -> None:
    operator = Operator(SEED)
    cards = [operator.card(index) for index in range(200)]
    chosen = [
        *cards[:6],
        next(card for card in cards if card.car_share_per_day),
        next(card for card in cards if card.ferry_per_day),
    ]
    trips = _year_of_trips(make_holder, bearer("transit"), [card.card_id for card in chosen])
    assert len(trips) > 1000
    assert {t["mode"] for t in trips} == set(MODES)
    for trip in trips:
        exact = int(trip["distance_m"]) * CO2_G_PER_KM[str(trip["mode"])] / 1000
        assert abs(int(trip["co2_g"]) - exact) <= 0.5
        assert 0 < int(trip["distance_m"]) <= MAX_DISTANCE_M[str(trip["mode"])]
        assert 0 <= int(trip["co2_g"]) <= MAX_TRIP_CO2_G
        assert trip["origin_district"] in synth.DISTRICTS
        if trip["mode"] == "ferry":
            assert trip["origin_district"] in HARBOUR


def test_a_cards_trips_follow_one_another_and_are_at_most_eight_a_day(
    make_holder: HolderFactory, bearer: Callable[[str], dict[str, str]]
) -> None:
    operator = Operator(SEED)
    commuter = next(operator.card(i) for i in range(100) if operator.card(i).commuter)
    trips = _year_of_trips(make_holder, bearer("transit"), [commuter.card_id])
    starts = [datetime.fromisoformat(str(t["start"])) for t in trips]
    ends = [datetime.fromisoformat(str(t["end"])) for t in trips]
    assert all(start < end for start, end in zip(starts, ends, strict=True))
    assert all(
        (next_start - end).total_seconds() >= MIN_CHANGE_S
        for end, next_start in zip(ends, starts[1:], strict=False)
    )
    per_day = Counter(start.date() for start in starts)
    assert max(per_day.values()) <= MAX_TRIPS_PER_DAY
    assert all(start.year == 2025 for start in starts)
    # a commuter rides the bus on most work days, and both ways
    work_days = [d for d in per_day if not synth.is_day_off(d)]
    assert len(work_days) > 150
    assert len({t["trip_id"] for t in trips}) == len(trips)
    assert all(commuter.card_id not in str(t["trip_id"]) for t in trips)


def test_trips_resume_exactly_across_pages_and_windows(
    make_holder: HolderFactory, bearer: Callable[[str], dict[str, str]]
) -> None:
    operator = Operator(SEED)
    cards = [operator.card(index).card_id for index in (3, 1, 2)]
    client = make_holder("transit").test_client()
    window = {"since": "2025-05-06T12:00:00Z", "until": "2025-05-20T08:00:00+02:00"}
    small, _ = walk(client, TRIPS, {**window, "subject": cards, "limit": 3}, bearer("transit"))
    large, pages = walk(
        client, TRIPS, {**window, "subject": cards, "limit": 1000}, bearer("transit")
    )
    assert pages == 1
    assert small == large
    assert small
    since = datetime.fromisoformat("2025-05-06T12:00:00+00:00")
    until = datetime.fromisoformat("2025-05-20T06:00:00+00:00")
    assert all(since <= datetime.fromisoformat(t["start"]) < until for t in small)
    whole, _ = walk(client, TRIPS, {"subject": cards, "limit": 1000}, bearer("transit"))
    expected = [t for t in whole if since <= datetime.fromisoformat(t["start"]) < until]
    assert small == expected


def test_the_descriptor_states_the_co2_factors_and_their_sources(
    make_holder: HolderFactory,
) -> None:
    described = make_holder("transit").test_client().get("/datasets/trips").get_json()
    assert described["co2_factors"]["values"] == CO2_G_PER_KM
    assert set(described["co2_factors"]["sources"]) == set(MODES)
    fields = {f["name"]: f for f in described["fields"]}
    assert fields["co2_g"]["maximum"] == MAX_TRIP_CO2_G
    assert fields["mode"]["enum"] == list(MODES)
    assert described["max_records_per_subject_per_day"] == MAX_TRIPS_PER_DAY
