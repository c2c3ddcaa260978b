"""Releases over HTTP: every key with its interval, accurate within its declared noise, the
same request served again free, refusals that write nothing, and no one else's releases."""

from __future__ import annotations

import csv
import io
import math
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any
from xml.etree import ElementTree

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from anonymize.models import BudgetAccount, BudgetCharge, Release
from audit import service as audit
from audit.models import AuditEntry
from common.clock import utcnow
from tests.anonymize.conftest import DISTRICTS, spec

URL = "/api/v1/releases"


def count(session: Any, model: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model)))


def post(client: Any, headers: dict[str, str], body: dict[str, Any]) -> Any:
    return client.post(URL, json=body, headers=headers)


def test_a_release_has_every_key_with_its_noise_scale_and_interval(client, observatory, stage):
    staged = stage()
    response = post(client, observatory, spec(staged))
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["mechanism"] == "discrete_gaussian"
    assert Decimal(body["rho"]) <= Decimal("0.2")
    assert 0 < body["epsilon"] < 10
    assert body["delta"] == 1e-7
    result = body["result"]
    assert result["keys"]["time"] == ["2026-01", "2026-02", "2026-03"]
    assert result["keys"]["area"] == list(DISTRICTS)
    cells = result["cells"]
    assert [(c["time"], c["area"]) for c in cells] == [
        (m, d) for m in ("2026-01", "2026-02", "2026-03") for d in DISTRICTS
    ]
    for name in ("count", "sum"):
        assert result["noise"][name]["mechanism"] == "discrete_gaussian"
        assert result["noise"][name]["scale"] > 0
    for cell in cells:
        if cell["suppressed"]:
            assert "count" not in cell
            assert "mean" not in cell
            continue
        low, high = cell["count"]["ci95"]
        assert low < cell["count"]["value"] < high


def test_released_values_are_within_five_sigma_of_the_truth(client, observatory, stage):
    staged = stage(citizens=2000)
    body = post(client, observatory, spec(staged, measure="sum", rho="0.25")).get_json()
    noise_count = body["result"]["noise"]["count"]["scale"]
    noise_sum = body["result"]["noise"]["sum"]["scale"]  # in kWh
    # sigma from the declared bounds: sqrt(3 cells) * 400 kWh at rho 0.125 -> about 1386 kWh
    assert noise_sum == pytest.approx(math.sqrt(3) * 400 / math.sqrt(2 * 0.125), rel=0.01)
    checked = 0
    for cell in body["result"]["cells"]:
        key = (cell["time"], cell["area"])
        true_n = len(staged.citizens.get(key, ()))
        if cell["suppressed"]:
            assert true_n < 10 + 5 * noise_count
            continue
        assert abs(cell["count"]["value"] - true_n) <= 5 * noise_count
        true_kwh = staged.sums_wh.get(key, 0) / 1000
        assert abs(cell["sum"]["value"] - true_kwh) <= 5 * noise_sum
        checked += 1
    assert checked >= 50  # most of the 60 cells have ~100 citizens


def test_the_same_request_twice_is_served_again_and_costs_once(client, observatory, stage):
    staged = stage()
    first = post(client, observatory, spec(staged))
    again = post(client, observatory, spec(staged, rho="0.20"))  # same meaning, same hash
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json() == first.get_json()
    budgets = client.get("/api/v1/budgets", headers=observatory).get_json()
    assert Decimal(budgets["population"]["spent"]) == Decimal(first.get_json()["rho"])
    assert Decimal(budgets["reuser"]["spent"]) == Decimal(first.get_json()["rho"])


def test_budgets_show_what_is_left_and_its_epsilon(client, observatory, stage):
    before = client.get("/api/v1/budgets", headers=observatory).get_json()
    assert before["population"]["spent"] == "0"
    assert Decimal(before["population"]["cap"]) == Decimal("1.0")
    assert Decimal(before["rho_cap_per_release"]) == Decimal("0.25")
    assert before["period"] == str(utcnow().year)
    staged = stage()
    post(client, observatory, spec(staged, rho="0.1"))
    after = client.get("/api/v1/budgets", headers=observatory).get_json()
    spent = Decimal(after["population"]["spent"])
    assert Decimal("0.099") < spent <= Decimal("0.1")
    assert Decimal(after["population"]["remaining"]) == Decimal("1.0") - spent
    assert after["population"]["epsilon_spent"] > 0


def test_an_overspending_release_is_refused_with_what_remains_and_writes_nothing(
    client, observatory, stage, session
):
    staged = stage()
    for measure, bucket, rho in (
        ("count", "all", "0.25"),
        ("sum", "all", "0.25"),
        ("mean", "all", "0.25"),
        ("count", "month", "0.2"),
    ):
        made = post(client, observatory, spec(staged, measure=measure, bucket=bucket, rho=rho))
        assert made.status_code == 201, made.get_json()
    releases, charges = count(session, Release), count(session, BudgetCharge)
    entries = count(session, AuditEntry)
    spent = session.scalars(select(BudgetAccount.spent)).all()
    refused = post(client, observatory, spec(staged, rho="0.1"))
    assert refused.status_code == 409
    assert refused.mimetype == "application/problem+json"
    problem = refused.get_json()
    assert problem["type"] == "/problems/budget-exceeded"
    assert "remaining rho" in str(problem["errors"])
    session.expire_all()
    assert count(session, Release) == releases
    assert count(session, BudgetCharge) == charges
    assert count(session, AuditEntry) == entries
    assert session.scalars(select(BudgetAccount.spent)).all() == spent


def test_a_release_above_the_charter_cap_per_release_is_refused(client, observatory, stage):
    staged = stage()
    response = post(client, observatory, spec(staged, rho="0.3"))
    assert response.status_code == 422
    assert "rho" in response.get_json()["errors"]


def test_pure_dp_releases_use_discrete_laplace_and_are_charged_epsilon_squared_over_two(
    client, observatory, stage
):
    staged = stage()
    body = post(client, observatory, spec(staged, rho=None, epsilon="0.5")).get_json()
    assert body["mechanism"] == "discrete_laplace"
    assert body["delta"] == 0
    assert body["epsilon"] == 0.5
    # two vectors at epsilon 0.25 each: rho = 2 * 0.25^2 / 2, rounded up
    assert Decimal("0.0625") <= Decimal(body["rho"]) < Decimal("0.0626")


def test_a_release_is_audited_in_its_own_transaction(client, observatory, stage, session):
    staged = stage()
    made = post(client, observatory, spec(staged)).get_json()
    events = session.scalars(select(AuditEntry.event).where(AuditEntry.event.like("anonymize:%")))
    assert list(events) == ["anonymize:release:create"]
    assert made["id"]


def test_releases_fail_closed_while_the_access_log_lags(app, client, observatory, stage, session):
    staged = stage()
    app.config["AUDIT_MAX_SEAL_LAG"] = timedelta(0)  # any unsealed leaf is late
    audit.append(session, event="test:anonymize:lag", actor="test")
    session.flush()  # written, never sealed: the integrator only runs after a commit
    time.sleep(0.01)
    response = post(client, observatory, spec(staged))
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.mimetype == "application/problem+json"
    assert count(session, Release) == 0
    assert count(session, BudgetAccount) == 0


def test_an_observatory_never_sees_another_ones_release(
    client, observatory, other_observatory, stage
):
    staged = stage()
    made = post(client, observatory, spec(staged)).get_json()
    assert client.get(f"{URL}/{made['id']}", headers=observatory).status_code == 200
    assert [r["id"] for r in client.get(URL, headers=observatory).get_json()] == [made["id"]]
    assert client.get(URL, headers=other_observatory).get_json() == []
    theirs = client.get(f"{URL}/{made['id']}", headers=other_observatory)
    assert theirs.status_code == 404
    assert theirs.mimetype == "application/problem+json"
    # the other observatory asking the same thing pays for its own release
    again = post(client, other_observatory, spec(staged))
    assert again.status_code == 201
    assert again.get_json()["id"] != made["id"]


def test_only_observatories_and_city_services_ask_for_statistics(client, oauth_headers, stage):
    staged = stage()
    reuser = oauth_headers("reuser", "access:request")
    assert post(client, reuser, spec(staged)).status_code == 403
    committee = oauth_headers("committee", "releases:read", category=None)
    assert post(client, committee, spec(staged)).status_code == 403  # reads, never asks
    company = oauth_headers("observatory", "releases:read releases:write", category="company")
    refused = post(client, company, spec(staged))
    assert refused.status_code == 403  # the purpose does not name companies
    assert client.post(URL, json=spec(staged)).status_code == 401
    city = oauth_headers("city_service", "releases:write", category="public_service")
    assert post(client, city, spec(staged)).status_code == 201


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"measure": "median"}, "measure"),
        ({"measure": None}, "measure"),
        ({"rho": None}, "rho"),
        ({"epsilon": "0.5"}, "rho"),
        ({"rho": "-1"}, "rho"),
        ({"rho": "NaN"}, "rho"),
        ({"bucket": "week"}, "bucket"),
        ({"start": "2026-01-15"}, "start"),
        ({"end": "2025-12-01"}, "end"),
        ({"start": "2026-02-01", "end": "2026-05-01", "bucket": "quarter"}, "start"),
        ({"start": "2026-01-01", "end": "2026-03-01", "bucket": "quarter"}, "end"),
        ({"partition": "galaxies"}, "partition"),
        ({"dataset": "not-a-uuid"}, "dataset"),
        ({"max_cells": 0}, "max_cells"),
        ({"purpose": "energy-coaching"}, None),  # individual only: 403
        ({"purpose": "no-such-purpose"}, "purpose"),
        ({"partition": "communes", "bucket": "month", "max_cells": 16}, "max_cells"),
    ],
)
def test_bad_specs_are_refused_as_problems_and_write_nothing(
    client, observatory, stage, session, overrides, field
):
    staged = stage()
    body = spec(staged, **overrides)
    response = post(client, observatory, body)
    assert response.mimetype == "application/problem+json"
    if field is None:
        assert response.status_code == 403
    else:
        assert response.status_code == 422, response.get_json()
        assert field in response.get_json()["errors"], response.get_json()
    assert count(session, Release) == 0
    assert count(session, BudgetAccount) == 0


def test_grouping_by_category_needs_a_public_category_list(client, observatory, stage):
    staged = stage(records=[], categories=())
    response = post(client, observatory, spec(staged, by_category=True))
    assert response.status_code == 422
    assert "by_category" in response.get_json()["errors"]
    staged = stage(records=[])
    made = post(client, observatory, spec(staged, by_category=True, partition=None))
    assert made.status_code == 201
    keys = [(c["time"], c["category"]) for c in made.get_json()["result"]["cells"]]
    assert keys == [
        (m, k) for m in ("2026-01", "2026-02", "2026-03") for k in ("electric", "gas", "other")
    ]


def test_a_body_that_is_not_json_is_a_problem(client, observatory):
    response = client.post(
        URL, data="{", headers={**observatory, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"


def test_an_unknown_dataset_answers_404(client, observatory, stage):
    staged = stage()
    body = spec(staged, dataset="7d0bbd0b-6b5d-4bd7-8f71-0c0e9d8d0c0e")
    assert post(client, observatory, body).status_code == 404


def test_a_stored_release_cannot_be_changed(client, observatory, stage, session):
    staged = stage()
    made = post(client, observatory, spec(staged)).get_json()
    row = session.get(Release, uuid.UUID(made["id"]))
    row.purpose = "research"
    with pytest.raises(RuntimeError, match="immutable"):
        session.flush()
    session.rollback()
    if session.get_bind().dialect.name == "postgresql":  # the database refuses it too
        with pytest.raises(DBAPIError, match="append-only"):
            session.execute(text("UPDATE dp_release SET purpose = 'research'"))


def test_a_release_downloads_as_csv_with_every_key(client, observatory, other_observatory, stage):
    staged = stage()
    made = post(client, observatory, spec(staged)).get_json()
    response = client.get(f"{URL}/{made['id']}/csv", headers=observatory)
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    lines = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert lines[0][:5] == ["time", "area", "category", "suppressed", "count"]
    assert "mean_ci95_high" in lines[0]
    assert len(lines) == 1 + 3 * len(DISTRICTS)
    for line, cell in zip(lines[1:], made["result"]["cells"], strict=True):
        assert line[:2] == [cell["time"], cell["area"]]
        if not cell["suppressed"]:
            assert float(line[4]) == cell["count"]["value"]
    assert client.get(f"{URL}/{made['id']}/csv", headers=other_observatory).status_code == 404


def test_a_release_draws_as_svg_with_its_error_bars(client, observatory, stage):
    staged = stage()
    made = post(client, observatory, spec(staged)).get_json()
    response = client.get(f"{URL}/{made['id']}/chart.svg", headers=observatory)
    assert response.status_code == 200
    assert response.mimetype == "image/svg+xml"
    svg = ElementTree.fromstring(response.get_data())  # noqa: S314 (our own output, well-formed)
    ns = "{http://www.w3.org/2000/svg}"
    shown = [c for c in made["result"]["cells"] if not c["suppressed"]]
    assert len(svg.findall(f"{ns}circle")) == len(shown)
    assert len(svg.findall(f"{ns}line")) == 1 + sum(1 for c in shown if c["mean"]["ci95"])
