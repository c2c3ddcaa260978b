"""The committee's admin pages: members only, CSRF on every form, secrets shown once."""

from __future__ import annotations

import html
import json
import re

import pytest
from sqlalchemy import func, select

from audit.models import AuditEntry
from broker.models import InitialAccessToken, OAuthClient, Organisation
from broker.service import clients, credentials, organisations
from tests.broker import keys
from tests.conftest import form_csrf, sign_in

ORG_FORM = {
    "slug": "energy-lab",
    "name": "Energy Lab",
    "role": "reuser",
    "reuser_category": "research",
    "resource_uri": "",
}
CLIENT_FORM = {
    "name": "Lab app",
    "auth_method": "client_secret_basic",
    "grant_types": ["authorization_code", "refresh_token"],
    "scope": ["access:request"],
    "redirect_uris": "https://lab.example.org/callback\nhttp://127.0.0.1:8000/cb\n",
    "jwks": "",
}


def rows(session, model):
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model))


def text(response):
    return html.unescape(response.get_data(as_text=True))


def post_form(browser, page, action, data):
    token = form_csrf(browser.get(page).get_data(as_text=True))
    return browser.post(action, data={"csrf_token": token, **data})


@pytest.fixture
def lab(session, charter):
    org = organisations.create_organisation(
        session,
        slug="energy-lab",
        name="Energy Lab",
        role="reuser",
        reuser_category="research",
        actor="test",
    )
    session.commit()
    return org


def org_page(org):
    return f"/admin/organisations/{org.id}"


# --- who gets in --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/admin/", "/admin/organisations/new"])
def test_anonymous_visitors_are_sent_to_sign_in(client, charter, path):
    response = client.get(path)
    assert response.status_code == 302
    assert "/sign-in" in response.headers["Location"]
    assert "next=" in response.headers["Location"]


def test_a_citizen_who_is_not_a_member_gets_403_pages_and_changes_nothing(
    app, session, charter, lab
):
    stranger = sign_in(app, session)
    for path in ("/admin/", "/admin/organisations/new", org_page(lab)):
        response = stranger.client.get(path)
        assert response.status_code == 403
        assert "text/html" in response.content_type
        assert "comité de la charte" in text(response)
    token = form_csrf(stranger.client.get("/").get_data(as_text=True))
    before = (rows(session, Organisation), rows(session, OAuthClient))
    for action, data in (
        ("/admin/organisations/new", {**ORG_FORM, "slug": "intruder"}),
        (f"{org_page(lab)}/clients", CLIENT_FORM),
        (f"{org_page(lab)}/suspension", {"suspended": "1"}),
        (f"{org_page(lab)}/initial-access-tokens", {"hours": "24"}),
    ):
        assert stranger.client.post(action, data={"csrf_token": token, **data}).status_code == 403
    assert (rows(session, Organisation), rows(session, OAuthClient)) == before
    assert rows(session, InitialAccessToken) == 0
    session.expire_all()
    assert session.get(Organisation, lab.id).suspended_at is None


def test_a_member_sees_the_organisations(member, lab):
    response = member.client.get("/admin/")
    assert response.status_code == 200
    page = text(response)
    assert 'data-slug="energy-lab"' in page
    assert "Réutilisateur" in page


# --- organisations --------------------------------------------------------------------------


def test_a_member_creates_an_organisation_through_the_form(member, session, charter):
    response = post_form(
        member.client, "/admin/organisations/new", "/admin/organisations/new", ORG_FORM
    )
    assert response.status_code == 302, text(response)
    created = session.scalar(select(Organisation).where(Organisation.slug == "energy-lab"))
    assert response.headers["Location"].endswith(org_page(created))
    assert created.reuser_category == "research"
    assert created.resource_uri is None
    entry = session.scalar(
        select(AuditEntry).where(AuditEntry.event == "admin:organisation:create")
    )
    assert entry.actor.startswith("committee:")
    assert member.email not in entry.actor
    page = member.client.get(response.headers["Location"])
    assert "Energy Lab" in text(page)


def test_a_post_without_csrf_is_refused_and_creates_nothing(member, session, charter):
    response = member.client.post("/admin/organisations/new", data=ORG_FORM)
    assert response.status_code == 403
    assert rows(session, Organisation) == 0


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"slug": "Bad Slug"}, ["slug"]),
        ({"role": "king"}, ["role"]),
        (
            {"reuser_category": "", "resource_uri": "http://x.org/"},
            ["reuser_category", "resource_uri"],
        ),
        ({"reuser_category": "pirates"}, ["reuser_category"]),
    ],
)
def test_form_errors_are_shown_by_field_and_create_nothing(
    member, session, charter, changes, fields
):
    response = post_form(
        member.client,
        "/admin/organisations/new",
        "/admin/organisations/new",
        {**ORG_FORM, **changes},
    )
    assert response.status_code == 422
    page = text(response)
    assert 'data-testid="error-summary"' in page
    for field in fields:
        assert f'id="f-{field}-error"' in page
    assert rows(session, Organisation) == 0


def test_a_taken_slug_is_shown_on_the_form(member, session, lab):
    response = post_form(
        member.client, "/admin/organisations/new", "/admin/organisations/new", ORG_FORM
    )
    assert response.status_code == 422
    assert "already taken" in text(response)
    assert rows(session, Organisation) == 1


def test_a_member_edits_and_suspends_an_organisation(member, session, lab):
    response = post_form(
        member.client,
        org_page(lab),
        org_page(lab),
        {"name": "Energy Lab (CNRS)", "reuser_category": "public_service", "resource_uri": ""},
    )
    assert response.status_code == 302
    session.expire_all()
    assert session.get(Organisation, lab.id).name == "Energy Lab (CNRS)"
    assert session.get(Organisation, lab.id).reuser_category == "public_service"
    bad = post_form(
        member.client, org_page(lab), org_page(lab), {"name": "X", "reuser_category": ""}
    )
    assert bad.status_code == 422
    assert session.get(Organisation, lab.id).name == "Energy Lab (CNRS)"
    assert (
        post_form(
            member.client, org_page(lab), f"{org_page(lab)}/suspension", {"suspended": "1"}
        ).status_code
        == 302
    )
    session.expire_all()
    assert session.get(Organisation, lab.id).suspended_at is not None
    assert 'data-testid="client-form"' not in text(member.client.get(org_page(lab)))
    post_form(member.client, org_page(lab), f"{org_page(lab)}/suspension", {"suspended": "0"})
    session.expire_all()
    assert session.get(Organisation, lab.id).suspended_at is None


def test_an_unknown_organisation_is_a_404_page(member, charter):
    response = member.client.get("/admin/organisations/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert "text/html" in response.content_type


# --- clients --------------------------------------------------------------------------------


def test_a_new_clients_secret_is_shown_once_and_stored_hashed(member, session, lab):
    response = post_form(member.client, org_page(lab), f"{org_page(lab)}/clients", CLIENT_FORM)
    assert response.status_code == 200, text(response)
    assert response.headers["Cache-Control"] == "no-store"
    page = text(response)
    secret = re.search(r'data-testid="new-client-secret">([^<]+)<', page).group(1)
    client_id = re.search(r'data-testid="new-client-id">([^<]+)<', page).group(1)
    stored = session.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id))
    assert stored.redirect_uris == ["https://lab.example.org/callback", "http://127.0.0.1:8000/cb"]
    assert stored.secret_hash == credentials.hash_value(secret)
    again = text(member.client.get(org_page(lab)))
    assert client_id in again
    assert secret not in again


def test_client_form_errors_are_shown_and_create_nothing(member, session, lab):
    response = post_form(
        member.client,
        org_page(lab),
        f"{org_page(lab)}/clients",
        {
            **CLIENT_FORM,
            "grant_types": ["implicit"],
            "scope": ["admin"],
            "redirect_uris": "https://*.example.org/cb",
        },
    )
    assert response.status_code == 422
    page = text(response)
    assert "implicit grant is not supported" in page
    assert "may hold only" in page
    assert "wildcards are not allowed" in page
    assert rows(session, OAuthClient) == 0


def test_a_private_key_jwt_client_takes_its_keys_from_the_form(member, session, lab):
    form = {**CLIENT_FORM, "auth_method": "private_key_jwt", "jwks": "{not json"}
    bad = post_form(member.client, org_page(lab), f"{org_page(lab)}/clients", form)
    assert bad.status_code == 422
    assert "not valid JSON" in text(bad)
    form["jwks"] = json.dumps(keys.jwks(keys.ec_private_jwk()))
    private = post_form(member.client, org_page(lab), f"{org_page(lab)}/clients", form)
    assert private.status_code == 422
    assert "private members" in text(private)
    assert rows(session, OAuthClient) == 0
    form["jwks"] = json.dumps(keys.jwks(keys.ec_public_jwk()))
    good = post_form(member.client, org_page(lab), f"{org_page(lab)}/clients", form)
    assert good.status_code == 200
    assert 'data-testid="new-client-secret"' not in text(good)
    assert rows(session, OAuthClient) == 1


def test_a_member_revokes_a_client(member, session, lab):
    made, _ = clients.create_client(
        session,
        organisation_id=lab.id,
        name="Old app",
        auth_method="client_secret_basic",
        redirect_uris=["https://lab.example.org/callback"],
        grant_types=["authorization_code"],
        scope="access:request",
        actor="test",
    )
    session.commit()
    response = post_form(
        member.client, org_page(lab), f"/admin/clients/{made.client_id}/revoke", {}
    )
    assert response.status_code == 302
    session.expire_all()
    assert session.get(OAuthClient, made.id).revoked_at is not None
    assert "révoqué" in text(member.client.get(org_page(lab)))


# --- initial access tokens ----------------------------------------------------------------


def test_an_initial_access_token_is_shown_once_and_registers_a_client(member, app, session, lab):
    response = post_form(
        member.client, org_page(lab), f"{org_page(lab)}/initial-access-tokens", {"hours": "2"}
    )
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    token = re.search(r'data-testid="initial-access-token">([^<]+)<', text(response)).group(1)
    assert token not in text(member.client.get(org_page(lab)))
    registered = app.test_client().post(
        "/oauth/register",
        json={"redirect_uris": ["https://lab.example.org/cb"], "scope": "access:request"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert registered.status_code == 201, registered.get_json()


def test_a_bad_token_lifetime_is_shown(member, session, lab):
    response = post_form(
        member.client, org_page(lab), f"{org_page(lab)}/initial-access-tokens", {"hours": "0"}
    )
    assert response.status_code == 422
    assert rows(session, InitialAccessToken) == 0
