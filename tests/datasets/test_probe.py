"""The health probe: `broker.probe_datasets` GETs each service's /health once and records up or
down on its datasets; the holder sees it in its settings, the committee on its pages."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from broker.models import Dataset, Health
from broker.service import datasets, organisations, outbound
from broker.tasks import probe_datasets
from tests.conftest import form_csrf, sign_in
from tests.datasets.helpers import make_holder, open_body, personal_body

LOCAL = outbound.Policy(loopback=True, private=False)


class _Holder(BaseHTTPRequestHandler):
    """A holder's service: /health answers what the test says."""

    answer: tuple[int, bytes] = (200, b'{"status": "ok"}')
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        status, body = self.answer if self.path == "/health" else (404, b"{}")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class Service:
    """A local HTTP server on a free port, stopped by the test (or at teardown)."""

    def __init__(self) -> None:
        handler = type("Handler", (_Holder,), {"seen": []})
        self.handler = handler
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.running = True

    def answer(self, status: int, body: dict[str, Any]) -> None:
        self.handler.answer = (status, json.dumps(body).encode())

    @property
    def seen(self) -> list[str]:
        return self.handler.seen

    def stop(self) -> None:
        if self.running:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=5)
            self.running = False


@pytest.fixture
def service() -> Iterator[Service]:
    running = Service()
    yield running
    running.stop()


@pytest.fixture
def local_holder(session, make_client, charter, service):
    return make_holder(session, make_client, resource_uri=service.url)


def test_the_probe_marks_a_running_service_up_and_a_stopped_one_down(
    client, session, local_holder, service
):
    body = personal_body(service.url)
    created = client.post("/api/v1/datasets", json=body, headers=local_holder.headers)
    assert created.status_code == 201, created.get_json()
    path = f"/api/v1/datasets/{created.get_json()['id']}"

    assert probe_datasets.apply().get() == 1
    assert service.seen == ["/health"]  # the origin's /health, not the dataset's endpoint
    health = client.get(path, headers=local_holder.headers).get_json()["health"]
    assert health["status"] == "up"
    assert health["checked_at"] is not None

    service.stop()
    assert probe_datasets.apply().get() == 1
    health = client.get(path, headers=local_holder.headers).get_json()["health"]
    assert health["status"] == "down"
    assert health["detail"].startswith("unreachable")


def test_a_service_answering_an_error_or_nonsense_is_down(client, local_holder, service):
    body = personal_body(service.url)
    created = client.post("/api/v1/datasets", json=body, headers=local_holder.headers)
    path = f"/api/v1/datasets/{created.get_json()['id']}"

    service.answer(503, {"status": "busy"})
    probe_datasets.apply()
    health = client.get(path, headers=local_holder.headers).get_json()["health"]
    assert (health["status"], health["detail"]) == ("down", "HTTP 503")

    service.answer(200, {"status": "degraded"})
    probe_datasets.apply()
    assert client.get(path, headers=local_holder.headers).get_json()["health"]["status"] == "down"


def test_one_probe_per_service_whatever_its_number_of_datasets(
    client, session, local_holder, service
):
    client.post("/api/v1/datasets", json=personal_body(service.url), headers=local_holder.headers)
    client.post(
        "/api/v1/datasets",
        json=open_body(f"{service.url}/buildings"),
        headers=local_holder.headers,
    )
    assert probe_datasets.apply().get() == 2
    assert service.seen == ["/health"]
    assert {d.health for d in session.query(Dataset)} == {Health.UP}


def test_a_redirect_is_not_followed(service):
    service.handler.answer = (302, b"")
    result = datasets.probe(f"{service.url}/health", timeout=2, rules=LOCAL)
    assert result.health is Health.DOWN
    assert result.detail == "HTTP 302"


def test_an_unresolvable_host_is_down_without_raising():
    result = datasets.probe("https://nowhere.invalid/health", timeout=1, rules=LOCAL)
    assert result.health is Health.DOWN


def test_the_committee_sees_each_datasets_health(app, client, session, local_holder, service):
    client.post("/api/v1/datasets", json=personal_body(service.url), headers=local_holder.headers)
    member = sign_in(app, session)
    organisations.add_committee_member(session, member.email, actor="test")
    session.commit()
    page = member.client.get("/admin/datasets")
    assert page.status_code == 200
    assert 'data-health="unknown"' in page.get_data(as_text=True)

    probed = member.client.post(
        "/admin/datasets/probe", data={"csrf_token": form_csrf(page.get_data(as_text=True))}
    )
    assert probed.status_code == 302
    page = member.client.get("/admin/datasets").get_data(as_text=True)
    assert 'data-health="up"' in page
    assert service.url in page


def test_a_citizen_is_not_the_committee(citizen):
    assert citizen.client.get("/admin/datasets").status_code == 403
