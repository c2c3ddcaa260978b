"""What every answer carries (security headers, `no-store` on personal pages) and what no input
may hold: a NUL character (PostgreSQL text refuses it), a control character in `next`, a time
UTC cannot hold (tests/gateway/test_requests.py). Each is a clear 4xx, never a 500, and
nothing is written."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from broker.app import create_app
from broker.config import from_env
from consent.models import Citizen, SignInFailure
from tests.conftest import PASSWORD, form_csrf, settings
from tests.consent.test_api import body


def count(session, model):
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize("path", ["/", "/charter", "/api/v1/health", "/api/v1/charter"])
def test_every_answer_forbids_framing_and_sniffing(client, charter, path):
    response = client.get(path)
    assert response.status_code == 200
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert "Strict-Transport-Security" not in response.headers  # plain http in tests
    assert "no-store" not in response.headers.get("Cache-Control", "")  # nobody's page


def test_what_a_citizen_sees_is_never_stored_by_a_cache(citizen, charter):
    for path in ("/me", "/me/consents", "/me/access-log", "/api/v1/me"):
        response = citizen.client.get(path)
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == "no-store", path


@pytest.mark.parametrize(
    ("issuer", "loopback"),
    [
        ("https://tiers.example.fr", False),
        ("http://127.0.0.1:5000", True),
        ("http://localhost:8000", True),
        ("http://[::1]:5000", True),
        ("http://10.0.0.5:5000", False),
    ],
)
def test_tiers_calls_the_loopback_only_where_it_is_served_itself(
    monkeypatch, tmp_path, issuer, loopback
):
    monkeypatch.setenv("TIERS_ISSUER", issuer)
    monkeypatch.delenv("TIERS_OUTBOUND_LOOPBACK", raising=False)
    assert from_env(str(tmp_path))["OUTBOUND_ALLOW_LOOPBACK"] is loopback
    monkeypatch.setenv("TIERS_OUTBOUND_LOOPBACK", "1")  # said explicitly: as said
    assert from_env(str(tmp_path))["OUTBOUND_ALLOW_LOOPBACK"] is True


def test_https_deployments_get_hsts_and_secure_cookies(app, client, charter, monkeypatch):
    monkeypatch.setenv("TIERS_ISSUER", "https://tiers.example.fr")
    monkeypatch.delenv("TIERS_SECURE_COOKIES", raising=False)
    assert from_env(str(app.instance_path))["SESSION_COOKIE_SECURE"] is True
    monkeypatch.setenv("TIERS_ISSUER", "http://127.0.0.1:5000")
    assert from_env(str(app.instance_path))["SESSION_COOKIE_SECURE"] is False
    app.config["SESSION_COOKIE_SECURE"] = True
    assert client.get("/").headers["Strict-Transport-Security"].startswith("max-age=")


def test_a_nul_character_is_a_field_error_and_writes_nothing(client, session, charter, citizen):
    page = client.get("/sign-in").get_data(as_text=True)
    refused = client.post(
        "/sign-in",
        data={"csrf_token": form_csrf(page), "email": "a\x00@example.org", "password": "x"},
    )
    assert refused.status_code == 422
    assert "text/html" in refused.content_type
    assert count(session, SignInFailure) == 0
    api = citizen.client.post(
        "/api/v1/consents",
        json=body(charter, notice_hash=None) | {"purpose_id": "energy\x00coaching"},
        headers=citizen.headers,
    )
    assert api.status_code == 422
    assert api.mimetype == "application/problem+json"
    assert api.get_json()["errors"] == {"purpose_id": ["Must not contain NUL characters."]}
    query = client.get("/api/v1/charter", query_string={"lang": "f\x00r"})
    assert query.status_code == 422
    assert "query.lang" in query.get_json()["errors"]


def test_a_next_with_a_control_character_is_not_followed(client, session, charter):
    page = client.get("/sign-up").get_data(as_text=True)
    client.post(
        "/sign-up",
        data={
            "csrf_token": form_csrf(page),
            "email": "crlf@example.org",
            "password": PASSWORD,
            "password_again": PASSWORD,
        },
    )
    client.post(
        "/sign-out", data={"csrf_token": form_csrf(client.get("/me").get_data(as_text=True))}
    )
    page = client.get("/sign-in").get_data(as_text=True)
    signed_in = client.post(
        "/sign-in?next=/me%0d%0aX-Injected:%201",
        data={"csrf_token": form_csrf(page), "email": "crlf@example.org", "password": PASSWORD},
    )
    assert signed_in.status_code == 302
    assert signed_in.headers["Location"].endswith("/me/consents")  # the default, not `next`
    assert "X-Injected" not in signed_in.headers
    assert count(session, Citizen) == 1


def client_tags(session):
    session.expire_all()
    return set(session.scalars(select(SignInFailure.client_tag)))


@pytest.mark.parametrize(("proxies", "clients"), [(0, 1), (1, 2)])
def test_the_sign_in_limit_counts_the_real_client_only_behind_a_trusted_proxy(
    session_factory, session, charter, proxies, clients
):
    app = create_app(settings(PROXIES=proxies))
    app.extensions["db.sessionmaker"] = session_factory
    browser = app.test_client()
    for forwarded in ("203.0.113.7", "198.51.100.9"):  # two people, one proxy (127.0.0.1)
        page = browser.get("/sign-in").get_data(as_text=True)
        refused = browser.post(
            "/sign-in",
            data={"csrf_token": form_csrf(page), "email": "x@example.org", "password": "bad"},
            headers={"X-Forwarded-For": forwarded},
        )
        assert refused.status_code == 401
    # Without a trusted proxy, X-Forwarded-For is anyone's to forge: it is ignored.
    assert len(client_tags(session)) == clients


def test_a_proxy_count_that_is_not_a_number_is_refused_by_name(monkeypatch, tmp_path):
    monkeypatch.setenv("TIERS_PROXIES", "one")
    with pytest.raises(ValueError, match="TIERS_PROXIES must be a whole number"):
        from_env(str(tmp_path))
