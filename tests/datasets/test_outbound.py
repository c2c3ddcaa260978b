"""Tiers never calls addresses inside its own network because an organisation asked it to:
private, link-local and reserved addresses are refused when registered and when connecting;
the loopback only where the deployment allows it (the demo and these tests do)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from broker.models import Dataset
from broker.service import outbound
from tests.datasets.helpers import Holder, count, open_body

INSIDE = (
    "https://10.0.0.7/buildings",
    "https://169.254.169.254/latest/meta-data",
    "https://192.168.1.1/data",
    "https://[fd00::1]/data",
    "https://100.64.0.1/data",
)
STRICT = outbound.Policy(loopback=False, private=False)


@pytest.mark.parametrize("url", INSIDE)
def test_a_dataset_endpoint_inside_the_network_is_refused_and_nothing_is_written(
    client: FlaskClient, session: Session, holder: Holder, url: str
) -> None:
    answer = client.post("/api/v1/datasets", json=open_body(url), headers=holder.headers)
    assert answer.status_code == 422
    assert "private or reserved" in answer.get_json()["errors"]["endpoint_url"][0]
    assert count(session, Dataset) == 0


def test_webhooks_and_resource_uris_inside_the_network_are_refused(
    client: FlaskClient, oauth_headers: Any
) -> None:
    admin = oauth_headers("committee", "admin", category=None)
    base = {"slug": "lab", "name": "Lab", "role": "reuser", "reuser_category": "research"}
    for field in ("webhook_url", "resource_uri"):
        answer = client.post(
            "/api/v1/organisations",
            json={**base, field: "https://169.254.169.254/hook"},
            headers=admin,
        )
        assert answer.status_code == 422
        assert field in answer.get_json()["errors"]


def test_the_loopback_is_refused_where_the_deployment_says_so(
    app: Flask, client: FlaskClient, session: Session, holder: Holder
) -> None:
    app.config["OUTBOUND_ALLOW_LOOPBACK"] = False
    answer = client.post(
        "/api/v1/datasets", json=open_body("http://127.0.0.1:9/open"), headers=holder.headers
    )
    assert answer.status_code == 422
    assert "own host" in answer.get_json()["errors"]["endpoint_url"][0] or (
        "private or reserved" in answer.get_json()["errors"]["endpoint_url"][0]
    )
    assert count(session, Dataset) == 0


def test_connections_check_every_resolved_address() -> None:
    assert outbound.connection_problem("http://localhost:9/x", STRICT) == "address not allowed"
    assert outbound.connection_problem("http://127.0.0.1:9/x", STRICT) == "address not allowed"
    assert outbound.connection_problem("https://10.1.2.3/x", STRICT) == "address not allowed"
    loopback_ok = outbound.Policy(loopback=True, private=False)
    assert outbound.connection_problem("http://127.0.0.1:9/x", loopback_ok) is None
    assert outbound.connection_problem("https://nowhere.invalid/x", STRICT) is None  # unresolvable
    assert outbound.registration_problem("https://8.8.8.8/x", STRICT) is None


def test_the_probe_and_the_notices_do_not_reach_a_refused_address() -> None:

    from broker.service import datasets, notices

    result = datasets.probe("http://127.0.0.1:9/health", timeout=1, rules=STRICT)
    assert (result.health.value, result.detail) == ("down", "address not allowed")
    attempt = notices.Attempt(notice_id=uuid.uuid4(), url="http://127.0.0.1:9/h", body="x")
    assert notices.send(attempt, timeout=1, rules=STRICT) == "address not allowed"
