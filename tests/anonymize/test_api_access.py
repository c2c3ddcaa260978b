"""Who may read what of the statistics API: the budgets need a token (401) of an observatory
or a city service (403 otherwise), asking for a release needs `releases:write` (it spends
budget), and a release's CSV and chart are its requester's alone (another observatory gets
404, as for a release that does not exist: no IDOR)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from anonymize.models import BudgetAccount, BudgetCharge, Release
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


def test_a_token_that_only_reads_releases_cannot_spend_the_budget(
    client: FlaskClient, session: Session, oauth_headers: Any, observatory: Any, stage: Any
) -> None:
    staged = stage()
    assert client.post(URL, json=spec(staged), headers=observatory).status_code == 201

    def ledger() -> tuple[int, int, list[Any]]:
        session.expire_all()
        rows = session.scalar(select(func.count()).select_from(Release))
        charges = session.scalar(select(func.count()).select_from(BudgetCharge))
        spent = sorted(session.scalars(select(BudgetAccount.spent)))
        return int(rows or 0), int(charges or 0), spent

    before = ledger()
    reader = oauth_headers("observatory", "releases:read", category="public_service")
    refused = client.post(URL, json=spec(staged, rho="0.1"), headers=reader)
    assert refused.status_code == 403
    assert refused.get_json()["type"] == "/problems/insufficient-scope"
    assert "releases:write" in refused.get_json()["detail"]
    assert ledger() == before
    # It still reads: the budgets, and the (empty) list of its releases.
    assert client.get("/api/v1/budgets", headers=reader).status_code == 200
    assert client.get(URL, headers=reader).get_json() == []
    # An observatory whose token may write is served, and charged.
    writer = oauth_headers("observatory", "releases:write", category="public_service")
    assert client.post(URL, json=spec(staged, rho="0.1"), headers=writer).status_code == 201
    assert ledger()[0] == before[0] + 1


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
