"""Holders register datasets: every bad setting is refused with its field named by path and
nothing stored; a holder sees only its own datasets' settings; only holders may register."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from audit.models import AuditEntry
from broker.models import Dataset, Health
from tests.datasets.helpers import count, make_holder, open_body, personal_body


def problem_fields(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["type"] == "/problems/invalid-input"
    return body["errors"]


def register(client, holder, body):
    return client.post("/api/v1/datasets", json=body, headers=holder.headers)


def test_a_holder_registers_a_personal_dataset_and_reads_its_settings(client, session, holder):
    response = register(client, holder, personal_body(holder.resource_uri))
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert created["holder"] == holder.slug
    assert created["personal"] is True
    assert created["open_data"] is False
    assert created["auth"] == "tiers_token"
    assert created["schema"]["subject_field"] == "prm"
    assert created["schema"]["fields"][2] == {
        "name": "power_w",
        "type": "number",
        "unit": "W",
        "personal": True,
        "sensitive": False,
        "min": 0,
        "max": 36000,
    }
    assert created["health"] == {"status": "unknown", "checked_at": None, "detail": None}
    assert created["links"]["health"] == f"{holder.resource_uri}/health"

    read = client.get(f"/api/v1/datasets/{created['id']}", headers=holder.headers)
    assert read.status_code == 200
    assert read.get_json() == created
    listed = client.get("/api/v1/datasets", headers=holder.headers).get_json()
    assert [d["id"] for d in listed] == [created["id"]]
    (entry,) = session.scalars(
        select(AuditEntry).where(AuditEntry.event == "broker:dataset:register")
    )
    assert entry.actor.startswith("client:")


def test_fields_default_to_personal_and_not_sensitive(client, holder):
    body = personal_body(holder.resource_uri)
    for field in body["schema"]["fields"]:
        field.pop("personal")
        field.pop("sensitive", None)
    created = register(client, holder, body).get_json()
    assert {f["personal"] for f in created["schema"]["fields"]} == {True}
    assert {f["sensitive"] for f in created["schema"]["fields"]} == {False}


def _without(path: list[Any]):
    def change(body: dict[str, Any]) -> None:
        target = body
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


def _set(path: list[Any], value: Any):
    def change(body: dict[str, Any]) -> None:
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


BAD = [
    ("slug", _set(["slug"], "Courbe De Charge")),
    ("slug", _without(["slug"])),
    ("title.en", _without(["title", "en"])),
    ("title", _set(["title"], "Courbe de charge")),
    ("description.fr", _set(["description", "fr"], "")),
    ("data_category", _set(["data_category"], "energy.nuclear")),
    ("schema.fields", _set(["schema", "fields"], [])),
    ("schema.fields[1]", _set(["schema", "fields", 1], "ts")),
    ("schema.fields[1].type", _set(["schema", "fields", 1, "type"], "timestamp")),
    ("schema.fields[0].name", _set(["schema", "fields", 0, "name"], "prm id")),
    ("schema.fields[3].name", _set(["schema", "fields", 3, "name"], "prm")),
    ("schema.fields[2].min", _without(["schema", "fields", 2, "min"])),
    ("schema.fields[2].max", _without(["schema", "fields", 2, "max"])),
    ("schema.fields[2].min", _set(["schema", "fields", 2, "min"], "zero")),
    ("schema.fields[2].max", _set(["schema", "fields", 2, "max"], -5)),
    ("schema.fields[0].min", _set(["schema", "fields", 0, "min"], 0)),
    ("schema.fields[2].unit", _set(["schema", "fields", 2, "unit"], "W" * 40)),
    ("schema.fields[2].colour", _set(["schema", "fields", 2, "colour"], "blue")),
    (
        "schema.fields[3].sensitive",
        _set(
            ["schema", "fields", 3],
            {"name": "h", "type": "boolean", "personal": False, "sensitive": True},
        ),
    ),
    ("schema.subject_field", _without(["schema", "subject_field"])),
    ("schema.subject_field", _set(["schema", "subject_field"], "meter")),
    ("schema.subject_field", _set(["schema", "subject_field"], "heating")),
    ("schema.fields[0].personal", _set(["schema", "fields", 0, "personal"], False)),
    ("schema.time_field", _set(["schema", "time_field"], "power_w")),
    ("schema.time_field", _set(["schema", "time_field"], "when")),
    ("endpoint_url", _set(["endpoint_url"], "http://holder.example/load-curve")),
    ("endpoint_url", _set(["endpoint_url"], "https://elsewhere.example/load-curve")),
    ("endpoint_url", _set(["endpoint_url"], "ftp://holder.example/x")),
    ("auth", _set(["auth"], "none")),
    ("auth", _set(["auth"], "basic")),
    ("refresh", _set(["refresh"], "daily")),
    ("refresh", _set(["refresh"], "PT1S")),
    ("refresh", _set(["refresh"], "P")),
    ("refresh", _set(["refresh"], "P99999999999999999999Y")),
    ("licence", _set(["licence"], "https://www.etalab.gouv.fr/licence-ouverte-open-licence/")),
    ("colour", _set(["colour"], "blue")),
]


@pytest.mark.parametrize(("field", "change"), BAD, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD)])
def test_a_bad_setting_is_refused_with_its_field_named_and_nothing_stored(
    client, session, holder, field, change
):
    body = personal_body(holder.resource_uri)
    change(body)
    fields = problem_fields(register(client, holder, body))
    assert field in fields, fields
    assert all(isinstance(m, str) and m for messages in fields.values() for m in messages)
    assert count(session, Dataset) == 0


def test_many_bad_settings_are_all_named_at_once(client, holder):
    body = personal_body(holder.resource_uri, refresh="often", auth="none")
    body["schema"]["fields"][2].pop("max")
    fields = problem_fields(register(client, holder, body))
    assert {"refresh", "auth", "schema.fields[2].max"} <= set(fields)


def test_invalid_json_is_a_400_problem(client, holder):
    response = client.post(
        "/api/v1/datasets",
        data="{not json",
        headers={**holder.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.get_json()["type"] == "/problems/invalid-json"


def test_open_data_needs_an_open_licence(client, session, holder):
    body = open_body(f"{holder.resource_uri}/buildings")
    del body["licence"]
    assert "licence" in problem_fields(register(client, holder, body))
    body["licence"] = "https://example.org/my-own-licence"
    assert "licence" in problem_fields(register(client, holder, body))
    assert count(session, Dataset) == 0

    body["licence"] = "https://www.etalab.gouv.fr/licence-ouverte-open-licence/"
    created = register(client, holder, body)
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["open_data"] is True
    assert created.get_json()["auth"] == "none"


def test_open_data_is_served_without_a_token(client, holder):
    body = open_body(f"{holder.resource_uri}/buildings", auth="tiers_token")
    assert "auth" in problem_fields(register(client, holder, body))


def test_open_data_has_no_subject_identifier(client, holder):
    body = open_body(f"{holder.resource_uri}/buildings")
    body["schema"]["subject_field"] = "building"
    assert "schema.fields[0].personal" in problem_fields(register(client, holder, body))


def test_open_data_may_live_anywhere_but_personal_data_only_under_the_resource_uri(client, holder):
    response = register(client, holder, open_body("https://opendata.city.example/buildings"))
    assert response.status_code == 201


def test_a_holder_without_a_resource_uri_cannot_take_tiers_tokens(
    client, session, make_client, charter
):
    bare = make_holder(session, make_client, resource_uri=None)
    body = personal_body("https://bare.holder.example")
    assert "auth" in problem_fields(register(client, bare, body))


def test_http_is_allowed_on_loopback_only(client, session, make_client, charter):
    local = make_holder(session, make_client, resource_uri="http://127.0.0.1:8101")
    response = register(client, local, personal_body("http://127.0.0.1:8101"))
    assert response.status_code == 201, response.get_json()


def test_a_slug_is_unique_per_holder_not_across_holders(client, holder, other_holder):
    assert register(client, holder, personal_body(holder.resource_uri)).status_code == 201
    again = register(client, holder, personal_body(holder.resource_uri))
    assert again.status_code == 409
    assert "slug" in again.get_json()["errors"]
    other = register(client, other_holder, personal_body(other_holder.resource_uri))
    assert other.status_code == 201


def test_a_holder_never_sees_another_holders_dataset_settings(client, holder, other_holder):
    created = register(client, holder, personal_body(holder.resource_uri)).get_json()
    path = f"/api/v1/datasets/{created['id']}"
    for response in (
        client.get(path, headers=other_holder.headers),
        client.patch(path, json={"refresh": "PT1H"}, headers=other_holder.headers),
    ):
        assert response.status_code == 404
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["type"] == "/problems/not-found"
    assert client.get("/api/v1/datasets", headers=other_holder.headers).get_json() == []
    unchanged = client.get(path, headers=holder.headers).get_json()
    assert unchanged["refresh"] == "P1D"


def test_an_unknown_dataset_is_404_like_another_holders(client, holder):
    response = client.get(
        "/api/v1/datasets/00000000-0000-4000-8000-000000000000", headers=holder.headers
    )
    assert response.status_code == 404


def test_a_reuser_token_cannot_register_or_read_datasets(client, session, holder, oauth_headers):
    reuser = oauth_headers("reuser", "access:request")
    response = client.post(
        "/api/v1/datasets", json=personal_body(holder.resource_uri), headers=reuser
    )
    assert response.status_code == 403
    assert response.get_json()["type"] == "/problems/insufficient-scope"
    assert client.get("/api/v1/datasets", headers=reuser).status_code == 403
    assert count(session, Dataset) == 0


def test_strangers_get_401_before_any_schema_hint(client):
    response = client.post("/api/v1/datasets", json={"slug": "x"})
    assert response.status_code == 401
    assert "errors" not in response.get_json()


def test_a_holder_changes_some_settings_and_the_result_is_checked_whole(client, session, holder):
    created = register(client, holder, personal_body(holder.resource_uri)).get_json()
    path = f"/api/v1/datasets/{created['id']}"
    changed = client.patch(path, json={"refresh": "PT1H"}, headers=holder.headers)
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json()["refresh"] == "PT1H"
    assert changed.get_json()["schema"] == created["schema"]

    schema = copy.deepcopy(created["schema"])
    schema["fields"][2]["min"] = None
    refused = client.patch(path, json={"schema": schema}, headers=holder.headers)
    assert "schema.fields[2].min" in problem_fields(refused)
    # Turning it into open data needs a licence and no token at once.
    for field in schema["fields"]:
        field["personal"] = False
        field["min"] = field["max"] = None
    schema["subject_field"] = None
    refused = client.patch(path, json={"schema": schema}, headers=holder.headers)
    assert {"auth", "licence"} <= set(problem_fields(refused))
    assert client.get(path, headers=holder.headers).get_json()["schema"] == created["schema"]


def test_an_empty_change_is_refused(client, holder):
    created = register(client, holder, personal_body(holder.resource_uri)).get_json()
    response = client.patch(f"/api/v1/datasets/{created['id']}", json={}, headers=holder.headers)
    assert response.status_code == 422


def test_a_new_endpoint_forgets_the_old_health(client, session, holder):
    created = register(client, holder, personal_body(holder.resource_uri)).get_json()
    dataset = session.get(Dataset, uuid.UUID(created["id"]))
    dataset.health = Health.UP
    session.commit()
    response = client.patch(
        f"/api/v1/datasets/{created['id']}",
        json={"endpoint_url": f"{holder.resource_uri}/v2/load-curve"},
        headers=holder.headers,
    )
    assert response.get_json()["health"]["status"] == "unknown"


def test_the_datasets_api_is_in_the_openapi_document(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    assert {"/api/v1/datasets", "/api/v1/datasets/{dataset_id}", "/api/v1/pairings"} <= set(paths)
    assert "/api/v1/catalog" in paths
