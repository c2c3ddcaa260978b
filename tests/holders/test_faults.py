"""Fault modes for the gateway's tests and benchmarks: a holder that is down, slow, or sends
malformed pages, switched by configuration (never by a request)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
import requests

from examples.holders.app import Fault, set_fault
from examples.holders.electricity import Fleet
from tests.holders.conftest import SEED, HolderFactory, serve

PRM = Fleet(SEED).meter(0).prm
RECORDS = "/datasets/daily/records"


def test_down_answers_503_with_retry_after_everywhere(
    make_holder: HolderFactory, bearer: Callable[[str], dict[str, str]]
) -> None:
    app = make_holder(fault="down:120")
    client = app.test_client()
    for path in ("/health", RECORDS, "/datasets", "/webhooks/received"):
        response = client.get(path, query_string={"subject": PRM}, headers=bearer("electricity"))
        assert response.status_code == 503, path
        assert response.headers["Retry-After"] == "120"
        assert response.mimetype == "application/problem+json"
    set_fault(app, "none")
    assert client.get("/health").status_code == 200


def test_slow_waits_on_every_page_over_http(
    make_holder: HolderFactory, bearer: Callable[[str], dict[str, str]]
) -> None:
    app = make_holder(fault="slow:150")
    with serve(app) as url:
        started = time.perf_counter()
        response = requests.get(
            f"{url}{RECORDS}",
            params={"subject": PRM, "limit": 5},
            headers=bearer("electricity"),
            timeout=5,
        )
        elapsed = time.perf_counter() - started
        assert response.status_code == 200
        assert elapsed >= 0.15
        health = time.perf_counter()
        assert requests.get(f"{url}/health", timeout=5).status_code == 200
        assert time.perf_counter() - health < 0.15  # only records pages are slow


def test_malformed_pages_are_broken_json_or_records_without_their_fields(
    make_holder: HolderFactory, bearer: Callable[[str], dict[str, str]]
) -> None:
    app = make_holder(fault="malformed")
    with serve(app) as url:
        broken = requests.get(
            f"{url}{RECORDS}",
            params={"subject": PRM, "limit": 5},
            headers=bearer("electricity"),
            timeout=5,
        )
        assert broken.status_code == 200
        assert broken.headers["Content-Type"] == "application/json"
        with pytest.raises(json.JSONDecodeError):
            json.loads(broken.text)
        set_fault(app, "malformed:fields")
        partial = requests.get(
            f"{url}{RECORDS}",
            params={"subject": PRM, "limit": 5},
            headers=bearer("electricity"),
            timeout=5,
        ).json()
    assert len(partial["records"]) == 5
    assert all(set(record) == {"date"} for record in partial["records"])


def test_fault_specs_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Fault.parse(None) == Fault()
    assert Fault.parse("slow") == Fault("slow", delay_ms=500)
    assert Fault.parse("down") == Fault("down", retry_after=30)
    assert Fault.parse("MALFORMED:fields") == Fault("malformed", variant="fields")
    for bad in ("broken", "slow:fast", "malformed:xml"):
        with pytest.raises(ValueError, match=r"fault|takes"):
            Fault.parse(bad)
    from examples.holders.__main__ import fault_for

    monkeypatch.setenv("HOLDER_FAULT", "slow:20")
    monkeypatch.setenv("HOLDER_FAULT_GAS", "down")
    assert fault_for("gas") == Fault("down", retry_after=30)
    assert fault_for("transit") == Fault("slow", delay_ms=20)
    assert fault_for("transit", "malformed") == Fault("malformed")
