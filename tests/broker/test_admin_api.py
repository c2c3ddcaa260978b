"""The committee's API: `admin` scope only, problem+json with field messages, nothing written
by a refused request, secrets in the create response only."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import func, select

from audit.models import AuditEntry
from broker.models import InitialAccessToken, OAuthClient, Organisation

ORG = {"slug": "energy-lab", "name": "Energy Lab", "role": "reuser", "reuser_category": "research"}
CLIENT = {
    "name": "Lab app",
    "auth_method": "client_secret_basic",
    "redirect_uris": ["https://lab.example.org/callback"],
    "grant_types": ["authorization_code", "refresh_token"],
    "scope": "access:request",
}


def rows(session, model):
    return session.scalar(select(func.count()).select_from(model))


def snapshot(session):
    session.expire_all()
    return tuple(
        rows(session, m) for m in (Organisation, OAuthClient, InitialAccessToken, AuditEntry)
    )


def create_org(client, headers, **changes):
    response = client.post("/api/v1/organisations", json={**ORG, **changes}, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def problem(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    return response.get_json()


def test_the_committee_creates_lists_reads_and_updates_organisations(client, admin_headers):
    created = create_org(client, admin_headers)
    assert created["role"] == "reuser"
    assert created["suspended"] is False
    listed = client.get("/api/v1/organisations", headers=admin_headers).get_json()
    assert "energy-lab" in [o["slug"] for o in listed]
    one = client.get(f"/api/v1/organisations/{created['id']}", headers=admin_headers)
    assert one.get_json()["name"] == "Energy Lab"
    patched = client.patch(
        f"/api/v1/organisations/{created['id']}",
        json={"name": "Energy Lab (CNRS)", "suspended": True},
        headers=admin_headers,
    )
    assert patched.status_code == 200, patched.get_json()
    assert patched.get_json()["name"] == "Energy Lab (CNRS)"
    assert patched.get_json()["suspended"] is True


def test_a_client_is_created_with_its_secret_shown_once(client, session, admin_headers):
    org = create_org(client, admin_headers)
    response = client.post(
        f"/api/v1/organisations/{org['id']}/clients", json=CLIENT, headers=admin_headers
    )
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    secret = created["client_secret"]
    assert secret
    assert "secret_hash" not in created
    assert created["organisation"] == "energy-lab"
    assert created["registered_by"] == "committee"
    listed = client.get(f"/api/v1/organisations/{org['id']}/clients", headers=admin_headers)
    assert listed.status_code == 200
    assert secret not in listed.get_data(as_text=True)
    assert "secret_hash" not in listed.get_json()[0]
    stored = session.scalar(
        select(OAuthClient).where(OAuthClient.client_id == created["client_id"])
    )
    assert stored.secret_hash != secret


def test_revoking_a_client_answers_204_and_listing_shows_it(client, admin_headers):
    org = create_org(client, admin_headers)
    created = client.post(
        f"/api/v1/organisations/{org['id']}/clients", json=CLIENT, headers=admin_headers
    ).get_json()
    response = client.delete(f"/api/v1/clients/{created['client_id']}", headers=admin_headers)
    assert response.status_code == 204
    listed = client.get(f"/api/v1/organisations/{org['id']}/clients", headers=admin_headers)
    assert listed.get_json()[0]["revoked_at"] is not None
    problem(client.delete("/api/v1/clients/tc_nobody", headers=admin_headers), 404)


def test_an_initial_access_token_is_issued_once_with_its_expiry(client, admin_headers):
    org = create_org(client, admin_headers)
    response = client.post(
        f"/api/v1/organisations/{org['id']}/initial-access-tokens",
        json={"hours": 2},
        headers=admin_headers,
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["initial_access_token"]
    assert body["registration_endpoint"].endswith("/oauth/register")
    assert body["expires_at"]
    default = client.post(
        f"/api/v1/organisations/{org['id']}/initial-access-tokens", json={}, headers=admin_headers
    )
    assert default.status_code == 201


# --- who may call -------------------------------------------------------------------------


CALLS = [
    ("get", "/api/v1/organisations", None),
    ("post", "/api/v1/organisations", ORG),
    ("get", "/api/v1/organisations/{id}", None),
    ("patch", "/api/v1/organisations/{id}", {"name": "Mine now"}),
    ("get", "/api/v1/organisations/{id}/clients", None),
    ("post", "/api/v1/organisations/{id}/clients", CLIENT),
    ("delete", "/api/v1/clients/{client_id}", None),
    ("post", "/api/v1/organisations/{id}/initial-access-tokens", {"hours": 1}),
]


@pytest.fixture
def arranged(client, admin_headers):
    org = create_org(client, admin_headers, slug="arranged")
    made = client.post(
        f"/api/v1/organisations/{org['id']}/clients", json=CLIENT, headers=admin_headers
    ).get_json()
    return {"id": org["id"], "client_id": made["client_id"]}


@pytest.mark.parametrize(("method", "path", "body"), CALLS)
def test_a_reuser_token_is_forbidden_and_changes_nothing(
    client, session, arranged, reuser_headers, method, path, body
):
    before = snapshot(session)
    response = getattr(client, method)(path.format(**arranged), json=body, headers=reuser_headers)
    assert problem(response, 403)["type"] == "/problems/insufficient-scope"
    assert snapshot(session)[:3] == before[:3]


@pytest.mark.parametrize(("method", "path", "body"), CALLS)
def test_without_a_valid_token_the_api_answers_401_and_changes_nothing(
    client, session, arranged, method, path, body
):
    before = snapshot(session)
    for headers in ({"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"}):
        response = getattr(client, method)(path.format(**arranged), json=body, headers=headers)
        problem(response, 401)
        assert "WWW-Authenticate" in response.headers
    response = getattr(client, method)(path.format(**arranged), json=body)
    assert problem(response, 401)["type"] == "/problems/unauthorized"  # no credential at all
    assert snapshot(session)[:3] == before[:3]


def test_a_stranger_gets_401_before_any_schema_hint(client):
    response = client.post(
        "/api/v1/organisations", json={"slug": 42}, headers={"Authorization": "Bearer x"}
    )
    assert "errors" not in problem(response, 401)


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"slug": "Energy Lab"}, "slug"),
        ({"slug": 42}, "slug"),
        ({"name": ""}, "name"),
        ({"role": "king"}, "role"),
        ({"reuser_category": "pirates"}, "reuser_category"),
        ({"reuser_category": None}, "reuser_category"),
        ({"resource_uri": "http://api.example.org/"}, "resource_uri"),
        ({"unexpected": True}, "unexpected"),
    ],
)
def test_bad_organisation_fields_are_named_and_write_nothing(
    client, session, admin_headers, payload, field
):
    before = snapshot(session)
    response = client.post("/api/v1/organisations", json={**ORG, **payload}, headers=admin_headers)
    body = problem(response, 422)
    assert field in body["errors"]
    assert snapshot(session) == before


def test_a_taken_slug_is_a_409_naming_the_slug(client, session, admin_headers):
    create_org(client, admin_headers)
    before = snapshot(session)
    body = problem(client.post("/api/v1/organisations", json=ORG, headers=admin_headers), 409)
    assert "slug" in body["errors"]
    assert snapshot(session) == before


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"scope": "admin"}, "scope"),
        ({"scope": "datasets:write"}, "scope"),
        ({"grant_types": ["implicit"]}, "grant_types"),
        ({"grant_types": ["password"]}, "grant_types"),
        ({"grant_types": "authorization_code"}, "grant_types"),
        ({"redirect_uris": ["http://lab.example.org/callback"]}, "redirect_uris"),
        ({"redirect_uris": ["https://*.example.org/callback"]}, "redirect_uris"),
        ({"redirect_uris": []}, "redirect_uris"),
        ({"auth_method": "private_key_jwt"}, "jwks"),
        ({"auth_method": "client_secret_post"}, "auth_method"),
        ({"jwks": "not an object"}, "jwks"),
        ({"dpop_bound": "perhaps"}, "dpop_bound"),
        ({"name": None}, "name"),
        ({"secret": "mine"}, "secret"),
    ],
)
def test_bad_client_fields_are_named_and_write_nothing(
    client, session, admin_headers, payload, field
):
    org = create_org(client, admin_headers)
    before = snapshot(session)
    response = client.post(
        f"/api/v1/organisations/{org['id']}/clients",
        json={**CLIENT, **payload},
        headers=admin_headers,
    )
    body = problem(response, 422)
    assert field in body["errors"], body
    assert snapshot(session) == before


@pytest.mark.parametrize("payload", [{}, {"suspended": "maybe"}, {"role": "holder"}, {"name": ""}])
def test_bad_updates_are_422_and_change_nothing(client, session, admin_headers, payload):
    org = create_org(client, admin_headers)
    before = snapshot(session)
    response = client.patch(
        f"/api/v1/organisations/{org['id']}", json=payload, headers=admin_headers
    )
    problem(response, 422)
    assert snapshot(session) == before
    session.expire_all()
    assert session.get(Organisation, uuid.UUID(org["id"])).name == ORG["name"]


@pytest.mark.parametrize("payload", [{"hours": 0}, {"hours": 10_000}, {"hours": "24"}])
def test_bad_token_lifetimes_are_named(client, session, admin_headers, payload):
    org = create_org(client, admin_headers)
    before = snapshot(session)
    response = client.post(
        f"/api/v1/organisations/{org['id']}/initial-access-tokens",
        json=payload,
        headers=admin_headers,
    )
    assert "hours" in problem(response, 422)["errors"]
    assert snapshot(session) == before


def test_unknown_or_malformed_ids_are_404_problems(client, admin_headers):
    for path in (
        f"/api/v1/organisations/{uuid.uuid4()}",
        f"/api/v1/organisations/{uuid.uuid4()}/clients",
        "/api/v1/organisations/not-a-uuid",
    ):
        problem(client.get(path, headers=admin_headers), 404)
    problem(
        client.post(
            f"/api/v1/organisations/{uuid.uuid4()}/clients", json=CLIENT, headers=admin_headers
        ),
        404,
    )


def test_bad_json_is_a_400_problem(client, admin_headers):
    response = client.post(
        "/api/v1/organisations",
        data="{not json",
        content_type="application/json",
        headers=admin_headers,
    )
    problem(response, 400)


def test_a_suspended_organisation_gets_no_client(client, session, admin_headers):
    org = create_org(client, admin_headers)
    client.patch(
        f"/api/v1/organisations/{org['id']}", json={"suspended": True}, headers=admin_headers
    )
    before = snapshot(session)
    response = client.post(
        f"/api/v1/organisations/{org['id']}/clients", json=CLIENT, headers=admin_headers
    )
    problem(response, 409)
    assert snapshot(session) == before


def test_the_api_is_documented_in_openapi(client):
    spec = client.get("/openapi.json").get_json()
    assert "/api/v1/organisations" in spec["paths"]
    assert "/oauth/register" in spec["paths"]
    assert json.dumps(spec).count("client_secret") >= 1


WEIRD = [
    None,
    [],
    "text",
    42,
    {"name": "nul\x00byte"},
    {"name": "x" * 5000},
    {"redirect_uris": [None, 42, {"a": 1}]},
    {"grant_types": [None]},
    {"scope": "\x00"},
    {"jwks": {"keys": [{"kty": "RSA", "n": "!!!", "e": "AQAB"}]}},
    {"jwks": {"keys": [{"kty": "RSA", "n": "A" * 4000, "e": "AQAB"}]}},
    {"jwks": {"keys": [{"kty": "OKP", "crv": "Ed448", "x": "AA"}]}},
    {"jwks": {"keys": {"kty": "EC"}}},
    {"reuser_category": ["research"]},
    {"suspended": None},
    {"hours": None},
    {"resource_uri": "https://[::1"},
]


@pytest.mark.parametrize("payload", WEIRD)
def test_nothing_answers_500_to_bad_input(client, admin_headers, payload):
    org = create_org(client, admin_headers, slug="weird")

    def merged(base):
        return {**base, **payload} if isinstance(payload, dict) else payload

    for method, path, base in (
        ("post", "/api/v1/organisations", {**ORG, "slug": "weird-two"}),
        ("patch", f"/api/v1/organisations/{org['id']}", {}),
        ("post", f"/api/v1/organisations/{org['id']}/clients", CLIENT),
        ("post", f"/api/v1/organisations/{org['id']}/initial-access-tokens", {}),
    ):
        response = getattr(client, method)(path, json=merged(base), headers=admin_headers)
        assert response.status_code < 500, (path, response.get_json())
        if response.status_code >= 400:
            assert response.mimetype == "application/problem+json"


def test_an_organisation_registers_where_its_notices_go(client, session, admin_headers):
    before = snapshot(session)
    for bad in ("http://notices.example.org/hook", "ftp://127.0.0.1/x", "not a url", ""):
        body = problem(
            client.post(
                "/api/v1/organisations", json={**ORG, "webhook_url": bad}, headers=admin_headers
            ),
            422,
        )
        assert "webhook_url" in body["errors"], bad
    assert snapshot(session) == before
    created = create_org(client, admin_headers, webhook_url="http://127.0.0.1:5001/webhooks/tiers")
    assert created["webhook_url"] == "http://127.0.0.1:5001/webhooks/tiers"
    url = f"/api/v1/organisations/{created['id']}"
    moved = client.patch(
        url, json={"webhook_url": "https://ecowatt.example/tiers"}, headers=admin_headers
    )
    assert moved.get_json()["webhook_url"] == "https://ecowatt.example/tiers"
    refused = client.patch(
        url, json={"webhook_url": "http://ecowatt.example/tiers"}, headers=admin_headers
    )
    assert "webhook_url" in problem(refused, 422)["errors"]
    cleared = client.patch(url, json={"webhook_url": None}, headers=admin_headers)
    assert cleared.get_json()["webhook_url"] is None
