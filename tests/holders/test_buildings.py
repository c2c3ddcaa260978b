"""The city's building sensors: open data under the Licence Ouverte 2.0, served to anyone,
licence in a Link header, readings shaped by opening days, heating and the length of nights."""

from __future__ import annotations

import statistics

from examples.holders.buildings import KINDS, SITES, Estate
from examples.holders.protocol import LICENCE_OUVERTE
from tests.holders.conftest import SEED, HolderFactory, walk

DAILY = "/datasets/daily/records"
SITES_PATH = "/datasets/sites/records"
LINK = f'<{LICENCE_OUVERTE}>; rel="license"'


def test_open_data_is_served_without_a_token_with_its_licence(make_holder: HolderFactory) -> None:
    client = make_holder("buildings").test_client()
    response = client.get(DAILY, query_string={"limit": 3})
    assert response.status_code == 200
    assert response.headers["Link"] == LINK
    assert "WWW-Authenticate" not in response.headers
    assert len(response.get_json()["records"]) == 3
    # a token, even a bad one, changes nothing: there is nothing to protect
    with_junk = client.get(
        DAILY, query_string={"limit": 3}, headers={"Authorization": "Bearer junk"}
    )
    assert with_junk.status_code == 200
    assert with_junk.data == response.data
    described = client.get("/datasets").get_json()
    for dataset in described["datasets"]:
        assert dataset["personal"] is False
        assert dataset["licence"] == LICENCE_OUVERTE
        assert dataset["authentication"] == {"type": "none"}
        assert not any(f["personal"] for f in dataset["fields"])


def test_the_subject_filter_is_ignored_for_open_data(make_holder: HolderFactory) -> None:
    client = make_holder("buildings").test_client()
    plain = client.get(SITES_PATH, query_string={"limit": 100})
    filtered = client.get(SITES_PATH, query_string={"limit": 100, "subject": ["BRV-BAT-002", "x"]})
    assert plain.data == filtered.data
    sites = plain.get_json()["records"]
    assert len(sites) == len(SITES) == 30
    assert {s["kind"] for s in sites} <= set(KINDS)
    assert [s["building_id"] for s in sites] == [f"BRV-BAT-{n:03d}" for n in range(1, 31)]


def test_a_year_of_readings_for_every_building_walks_without_gaps(
    make_holder: HolderFactory,
) -> None:
    records, pages = walk(make_holder("buildings").test_client(), DAILY, {"limit": 1000}, None)
    assert len(records) == 30 * 365
    assert pages == 11
    keys = {(r["building_id"], r["date"]) for r in records}
    assert len(keys) == len(records)
    for field in ("water_l", "gas_wh", "electricity_wh", "lighting_wh"):
        assert all(isinstance(r[field], int) and r[field] >= 0 for r in records)


def test_readings_follow_opening_days_heating_and_nights() -> None:
    estate = Estate(SEED)
    school = estate.building(5)  # École élémentaire Jules-Ferry
    assert school.kind == "school"
    march = [estate.readings(school, day) for day in range(59, 90)]
    august = [estate.readings(school, day) for day in range(212, 243)]
    assert statistics.mean(int(r["water_l"]) for r in march) > 5 * statistics.mean(
        int(r["water_l"]) for r in august
    )
    december = [estate.readings(school, day) for day in range(334, 365)]
    june = [estate.readings(school, day) for day in range(151, 181)]
    assert statistics.mean(int(r["lighting_wh"]) for r in december) > 2 * statistics.mean(
        int(r["lighting_wh"]) for r in june
    )
    heated = "gas_wh" if school.heating == "gas" else "electricity_wh"
    assert statistics.mean(int(r[heated]) for r in december) > statistics.mean(
        int(r[heated]) for r in june
    )


def test_a_dataset_without_a_time_field_refuses_a_window(make_holder: HolderFactory) -> None:
    response = (
        make_holder("buildings").test_client().get(SITES_PATH, query_string={"since": "2025-01-01"})
    )
    assert response.status_code == 400
    assert set(response.get_json()["errors"]) == {"since"}
