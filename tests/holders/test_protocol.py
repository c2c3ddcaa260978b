"""The records endpoint as docs/holder-protocol.md states it: health, the registration
description, RFC 9457 problems that name every bad parameter, and cursors tied to their query."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from examples.holders import NAMES
from examples.holders.electricity import Fleet
from tests.holders.conftest import SEED, HolderFactory, resource_uri

RECORDS = "/datasets/daily/records"


@pytest.mark.parametrize("name", NAMES)
def test_every_holder_answers_health_and_describes_its_datasets(
    make_holder: HolderFactory, name: str
) -> None:
    client = make_holder(name).test_client()
    assert client.get("/health").get_json() == {"status": "ok"}
    described = client.get("/datasets").get_json()
    assert described["holder"] == name
    assert described["resource_uri"] == resource_uri(name)
    assert described["webhook_url"] == "http://localhost/webhooks/tiers"
    for dataset in described["datasets"]:
        fields = {f["name"]: f for f in dataset["fields"]}
        assert dataset["subject_field"] in fields
        assert fields[dataset["subject_field"]]["identifier"] is True
        assert dataset["time_field"] is None or dataset["time_field"] in fields
        assert dataset["endpoint"] == f"http://localhost/datasets/{dataset['id']}/records"
        assert dataset["data_category"]
        for field in fields.values():
            if field["type"] == "integer":
                assert field["minimum"] <= field["maximum"], field
                assert field.get("unit"), field
        if dataset["personal"]:
            assert dataset["authentication"]["resource"] == resource_uri(name)
            assert fields[dataset["subject_field"]]["personal"] is True
    subjects = client.get("/demo/subjects").get_json()["subjects"]
    assert subjects


def test_demo_subjects_can_be_read(
    make_holder: HolderFactory, bearer: Callable[[str], dict[str, str]]
) -> None:
    client = make_holder().test_client()
    subjects = client.get("/demo/subjects").get_json()["subjects"]
    assert {s["electric_heating"] for s in subjects} == {True, False}
    response = client.get(
        RECORDS,
        query_string={"subject": subjects[0]["prm"], "limit": 1},
        headers=bearer("electricity"),
    )
    assert response.get_json()["records"][0]["prm"] == subjects[0]["prm"]


def test_the_demo_asks_for_more_subjects_and_bad_counts_are_refused(
    make_holder: HolderFactory,
) -> None:
    client = make_holder().test_client()
    many = client.get("/demo/subjects", query_string={"count": 100}).get_json()["subjects"]
    assert len({s["prm"] for s in many}) == 100  # all different
    assert sum(s["electric_heating"] for s in many) == 50  # half of them of each kind
    bad_counts = ({"count": 0}, {"count": 501}, {"count": "ten"}, {"count": "²"})
    for bad in (*bad_counts, {"count": 5, "district": "D01"}):
        refused = client.get("/demo/subjects", query_string=bad)
        assert refused.status_code == 400, bad
        assert refused.mimetype == "application/problem+json"
        assert "count" in refused.get_json()["errors"]


PRM = Fleet(SEED).meter(0).prm


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({}, {"subject"}),
        ({"subject": "12-34"}, {"subject"}),
        ({"subject": [f"{n:014d}" for n in range(501)]}, {"subject"}),
        ({"subject": PRM, "since": "yesterday"}, {"since"}),
        ({"subject": PRM, "since": "2025-01-01T00:00:00"}, {"since"}),
        ({"subject": PRM, "until": "0001-01-01T00:00:00+01:00"}, {"until"}),
        ({"subject": PRM, "since": ["2025-01-01", "2025-01-02"]}, {"since"}),
        ({"subject": PRM, "since": "2025-02-01", "until": "2025-02-01"}, {"until"}),
        ({"subject": PRM, "limit": "0"}, {"limit"}),
        ({"subject": PRM, "limit": "1001"}, {"limit"}),
        ({"subject": PRM, "limit": "-1"}, {"limit"}),
        ({"subject": PRM, "limit": "ten"}, {"limit"}),
        ({"subject": PRM, "cursor": "not-a-cursor"}, {"cursor"}),
        ({"subject": PRM, "fields": "energy_wh"}, {"fields"}),
        (
            {"subject": "x", "since": "x", "until": "y", "limit": "0", "page": "2"},
            {"subject", "since", "until", "limit", "page"},
        ),
    ],
)
def test_bad_parameters_are_each_named_in_a_problem(
    make_holder: HolderFactory,
    bearer: Callable[[str], dict[str, str]],
    query: dict[str, object],
    named: set[str],
) -> None:
    response = (
        make_holder().test_client().get(RECORDS, query_string=query, headers=bearer("electricity"))
    )
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["type"] == "/problems/invalid-input"
    assert problem["status"] == 400
    assert set(problem["errors"]) == named
    assert all(isinstance(m, str) and m for msgs in problem["errors"].values() for m in msgs)


def test_a_cursor_only_resumes_its_own_query(
    make_holder: HolderFactory, bearer: Callable[[str], dict[str, str]]
) -> None:
    client = make_holder().test_client()
    other = Fleet(SEED).meter(1).prm
    first = client.get(
        RECORDS, query_string={"subject": PRM, "limit": 10}, headers=bearer("electricity")
    ).get_json()
    cursor = first["next_cursor"]
    for changed in ({"subject": other}, {"subject": PRM, "since": "2025-01-02"}):
        refused = client.get(
            RECORDS, query_string={**changed, "cursor": cursor}, headers=bearer("electricity")
        )
        assert refused.status_code == 400
        assert set(refused.get_json()["errors"]) == {"cursor"}
    # the page size may change between pages
    resumed = client.get(
        RECORDS,
        query_string={"subject": PRM, "cursor": cursor, "limit": 5},
        headers=bearer("electricity"),
    ).get_json()
    assert resumed["records"][0]["date"] == "2025-01-11"
    # a damaged cursor is a 400, never a 500
    damaged = client.get(
        RECORDS,
        query_string={"subject": PRM, "cursor": cursor[:-3] + "AAA"},
        headers=bearer("electricity"),
    )
    assert damaged.status_code == 400


def test_unknown_datasets_and_methods_are_problems_too(
    make_holder: HolderFactory, bearer: Callable[[str], dict[str, str]]
) -> None:
    client = make_holder().test_client()
    missing = client.get("/datasets/trips/records", headers=bearer("electricity"))
    assert missing.status_code == 404
    assert missing.mimetype == "application/problem+json"
    assert "load_curve" in missing.get_json()["detail"]
    assert client.get("/datasets/nope").status_code == 404
    wrong_method = client.post(RECORDS, headers=bearer("electricity"))
    assert wrong_method.status_code == 405
    assert wrong_method.mimetype == "application/problem+json"
