"""Who may read what of the statistics API: the budgets need a token (401) of an observatory
or a city service (403 otherwise), and a release's CSV and chart are its requester's alone
(another observatory gets 404, as for a release that does not exist: no IDOR)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.anonymize.conftest import spec

URL = "/api/v1/releases"


def test_the_budgets_need_a_token(client: FlaskClient) -> None:
    answer = client.get("/api/v1/budgets")
    assert answer.status_code == 401
    assert "Bearer" in answer.headers.get("WWW-Authenticate", "")
    forged = client.get("/api/v1/budgets", headers={"Authorization": "Bearer not-a-token"})
    assert forged.status_code == 401


@pytest.mark.parametrize(
    ("role", "scope", "category"),
    [
        ("reuser", "access:request", "company"),  # a reuser's token: no releases:read
        ("holder", "datasets:write", None),
        ("auditor", "audit:read", None),
        ("committee", "releases:read", None),  # the scope, but not a role that asks
    ],
)
def test_the_budgets_are_refused_to_a_role_that_does_not_receive_statistics(
    client: FlaskClient,
    oauth_headers: Any,
    observatory: dict[str, str],
    role: str,
    scope: str,
    category: str | None,
) -> None:
    assert client.get("/api/v1/budgets", headers=observatory).status_code == 200
    answer = client.get("/api/v1/budgets", headers=oauth_headers(role, scope, category=category))
    assert answer.status_code == 403
    assert answer.mimetype == "application/problem+json"


@pytest.mark.parametrize(
    ("suffix", "mimetype"), [("chart.svg", "image/svg+xml"), ("csv", "text/csv")]
)
def test_a_release_chart_and_csv_are_404_to_another_observatory(
    client: FlaskClient,
    observatory: dict[str, str],
    other_observatory: dict[str, str],
    stage: Any,
    suffix: str,
    mimetype: str,
) -> None:
    made = client.post(URL, json=spec(stage()), headers=observatory).get_json()
    ours = client.get(f"{URL}/{made['id']}/{suffix}", headers=observatory)
    assert ours.status_code == 200
    assert ours.mimetype == mimetype
    theirs = client.get(f"{URL}/{made['id']}/{suffix}", headers=other_observatory)
    assert theirs.status_code == 404
    assert theirs.mimetype == "application/problem+json"
    nowhere = client.get(f"{URL}/{uuid.uuid4()}/{suffix}", headers=other_observatory)
    assert (nowhere.status_code, nowhere.get_json()) == (404, theirs.get_json())
