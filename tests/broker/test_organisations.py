"""The committee's rules for organisations and clients, at the service: each refusal names its
field, secrets exist in clear only once, initial access tokens work once."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from audit import service as audit
from audit.models import AuditEntry
from broker.models import (
    AuthMethod,
    CommitteeMember,
    Grant,
    InitialAccessToken,
    OAuthClient,
    Organisation,
    Role,
)
from broker.service import clients, credentials
from broker.service import organisations as service
from broker.service.scopes import ROLE_SCOPES
from common.clock import frozen, utcnow
from common.errors import (
    ConflictError,
    InvalidInputError,
    InvalidTokenError,
    NotFoundError,
)
from consent import accounts
from tests.broker import keys
from tests.conftest import PASSWORD

REDIRECT = "https://app.example.org/callback"


def count(session, model, *where):
    return session.scalar(select(func.count()).select_from(model).where(*where))


def events(session, name):
    return list(session.scalars(select(AuditEntry).where(AuditEntry.event == name)))


def organisation(session, role="reuser", *, slug=None, category="company", **extra):
    created = service.create_organisation(
        session,
        slug=slug or f"org-{uuid.uuid4().hex[:8]}",
        name=f"Organisation {role}",
        role=role,
        reuser_category=category,
        actor="test",
        **extra,
    )
    session.flush()
    return created


def client(session, org, **overrides):
    arguments = {
        "organisation_id": org.id,
        "name": "Application",
        "auth_method": "client_secret_basic",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "scope": "access:request",
        "jwks": None,
        "dpop_bound": False,
        "registered_by": "committee",
        "actor": "test",
        **overrides,
    }
    return clients.create_client(session, **arguments)


def refused(call, *args, **kwargs):
    with pytest.raises(InvalidInputError) as info:
        call(*args, **kwargs)
    return info.value.fields


# --- organisations ----------------------------------------------------------------------


def test_an_organisation_is_created_and_audited(session, charter):
    created = organisation(session, "reuser", slug="energy-lab", category="research")
    assert created.role is Role.REUSER
    assert created.reuser_category == "research"
    assert created.suspended_at is None
    [entry] = events(session, "admin:organisation:create")
    assert entry.actor == "test"
    assert audit.detail(session, entry.id)["organisation"] == "energy-lab"


def test_a_taken_slug_is_a_conflict_on_the_slug(session, charter):
    organisation(session, slug="energy-lab")
    with pytest.raises(ConflictError) as info:
        organisation(session, slug="energy-lab")
    assert "slug" in info.value.fields
    assert count(session, Organisation, Organisation.slug == "energy-lab") == 1


@pytest.mark.parametrize("role", ["reuser", "city_service", "observatory"])
def test_roles_that_receive_data_need_a_reuser_category(session, charter, role):
    fields = refused(organisation, session, role, category=None)
    assert list(fields) == ["reuser_category"]


@pytest.mark.parametrize("role", ["holder", "auditor", "committee"])
def test_other_roles_may_go_without_a_category(session, charter, role):
    assert organisation(session, role, category=None).reuser_category is None


def test_a_category_must_be_one_of_the_current_charter(session, charter):
    fields = refused(organisation, session, "reuser", category="pirates")
    assert "pirates" in fields["reuser_category"][0]
    assert "public_service" in fields["reuser_category"][0]


def test_a_category_needs_a_published_charter(session):
    fields = refused(organisation, session, "holder", category="company")
    assert "charter" in fields["reuser_category"][0]
    assert organisation(session, "holder", category=None).role is Role.HOLDER


def test_a_reuser_the_charter_names_keeps_the_charters_category(session, charter):
    fields = refused(organisation, session, "reuser", slug="ecowatt-conseil", category="research")
    assert "company" in fields["reuser_category"][0]
    assert organisation(session, slug="ecowatt-conseil", category="company")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"slug": "Not A Slug"}, "slug"),
        ({"slug": "-dash-first"}, "slug"),
        ({"slug": "x" * 65}, "slug"),
        ({"name": "   "}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"role": "emperor"}, "role"),
        ({"resource_uri": "http://api.example.org/"}, "resource_uri"),
        ({"resource_uri": "https://api.example.org/#top"}, "resource_uri"),
        ({"resource_uri": "https://api.example.org/?q=1"}, "resource_uri"),
        ({"resource_uri": "api.example.org"}, "resource_uri"),
    ],
)
def test_bad_fields_are_named(session, charter, changes, field):
    arguments = {
        "slug": "good-slug",
        "name": "Good",
        "role": "holder",
        "reuser_category": None,
        "resource_uri": None,
        **changes,
    }
    fields = refused(service.create_organisation, session, **arguments, actor="test")
    assert field in fields
    assert count(session, Organisation) == 0
    assert events(session, "admin:organisation:create") == []


def test_two_holders_cannot_serve_the_same_resource(session, charter):
    organisation(session, "holder", category=None, resource_uri="https://api.example.org/")
    fields = refused(
        organisation, session, "holder", category=None, resource_uri="https://api.example.org/"
    )
    assert "resource_uri" in fields


def test_updates_change_only_what_is_sent_and_are_audited(session, charter):
    created = organisation(session, "reuser", category="company")
    service.update_organisation(session, created.id, name="Renamed", actor="test")
    assert (created.name, created.reuser_category) == ("Renamed", "company")
    service.update_organisation(session, created.id, reuser_category="research", actor="test")
    assert created.reuser_category == "research"
    assert len(events(session, "admin:organisation:update")) == 2
    fields = refused(
        service.update_organisation, session, created.id, reuser_category=None, actor="test"
    )
    assert "reuser_category" in fields
    assert created.reuser_category == "research"


def test_suspension_is_idempotent_and_can_be_lifted(session, charter):
    created = organisation(session)
    service.update_organisation(session, created.id, suspended=True, actor="test")
    first = created.suspended_at
    assert first is not None
    service.update_organisation(session, created.id, suspended=True, actor="test")
    assert created.suspended_at == first
    assert len(events(session, "admin:organisation:suspend")) == 1
    service.update_organisation(session, created.id, suspended=False, actor="test")
    assert created.suspended_at is None
    assert len(events(session, "admin:organisation:unsuspend")) == 1


def test_unknown_organisations_are_not_found(session, charter):
    with pytest.raises(NotFoundError):
        service.get_organisation(session, uuid.uuid4())
    with pytest.raises(NotFoundError):
        clients.list_clients(session, uuid.uuid4())
    with pytest.raises(NotFoundError):
        client(session, type("Org", (), {"id": uuid.uuid4()})())


# --- clients: scopes by role --------------------------------------------------------------


@pytest.mark.parametrize("role", [r.value for r in Role])
def test_each_role_may_hold_exactly_its_scopes(session, charter, role):
    org = organisation(session, role)
    allowed = ROLE_SCOPES[Role(role)]
    grants = ["authorization_code", "client_credentials"]
    created, _ = client(session, org, scope=" ".join(sorted(allowed)), grant_types=grants)
    assert set(created.scope.split()) == allowed
    for scope in sorted({"admin", "datasets:write", "audit:read", "access:request"} - allowed):
        fields = refused(client, session, org, scope=scope, grant_types=grants)
        message = fields["scope"][0]
        assert f"A {role} organisation's clients may hold only" in message
        assert all(s in message for s in allowed)


def test_unknown_and_empty_scopes_are_refused(session, charter):
    org = organisation(session)
    assert (
        "Unknown scope: everything." in refused(client, session, org, scope="everything")["scope"]
    )
    assert "scope" in refused(client, session, org, scope="  ")


def test_citizen_scopes_need_the_code_flow(session, charter):
    org = organisation(session)
    fields = refused(
        client,
        session,
        org,
        scope="consent:read",
        grant_types=["client_credentials"],
        redirect_uris=[],
    )
    assert "authorization_code" in fields["scope"][0]


# --- clients: grant types -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grant", "words"),
    [("implicit", "implicit grant is not supported"), ("password", "password grant")],
)
def test_implicit_and_password_grants_are_refused_with_a_reason(session, charter, grant, words):
    fields = refused(
        client, session, organisation(session), grant_types=["authorization_code", grant]
    )
    assert any(words in m for m in fields["grant_types"])
    assert any("PKCE" in m for m in fields["grant_types"])


def test_unknown_grants_and_a_lone_refresh_token_are_refused(session, charter):
    org = organisation(session)
    assert "grant_types" in refused(client, session, org, grant_types=["device_code"])
    fields = refused(client, session, org, grant_types=["refresh_token"], redirect_uris=[])
    assert any("refresh_token" in m for m in fields["grant_types"])
    assert "grant_types" in refused(client, session, org, grant_types=[])


# --- clients: redirect URIs -------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "http://app.example.org/callback",
        "https://*.example.org/callback",
        "https://app.example.org/*",
        "https://app.example.org/callback#frag",
        "/callback",
        "app.example.org/callback",
        "com.example.app:/callback",
        "https://user:pw@app.example.org/callback",
        "https://app.example.org/call back",
        "http://localhost.evil.example/callback",
        "https://app.example.org:99999/callback",
    ],
)
def test_unsafe_or_inexact_redirect_uris_are_refused(session, charter, uri):
    fields = refused(client, session, organisation(session), redirect_uris=[uri])
    assert list(fields) == ["redirect_uris"]
    assert count(session, OAuthClient) == 0


@pytest.mark.parametrize(
    "uri",
    ["http://localhost:8080/callback", "http://127.0.0.1:53123/cb", "http://[::1]/cb", REDIRECT],
)
def test_https_and_loopback_redirect_uris_are_accepted_as_given(session, charter, uri):
    created, _ = client(session, organisation(session), redirect_uris=[uri, uri])
    assert created.redirect_uris == [uri]


def test_the_code_flow_needs_a_redirect_uri_and_other_flows_take_none(session, charter):
    org = organisation(session, "holder", category=None)
    fields = refused(client, session, org, redirect_uris=[], scope="datasets:write")
    assert "at least one redirect URI" in fields["redirect_uris"][0]
    fields = refused(
        client, session, org, grant_types=["client_credentials"], scope="datasets:write"
    )
    assert "redirect_uris" in fields
    created, _ = client(
        session, org, grant_types=["client_credentials"], redirect_uris=[], scope="datasets:write"
    )
    assert created.redirect_uris == []


# --- clients: authentication methods ------------------------------------------------------


def test_a_secret_exists_in_clear_once_and_only_its_hash_is_stored(session, charter):
    created, secret = client(session, organisation(session))
    assert secret is not None
    assert len(secret) >= 43  # 32 random bytes
    assert created.client_id.startswith("tc_")
    session.commit()
    row = session.execute(
        select(OAuthClient.__table__).where(OAuthClient.client_id == created.client_id)
    ).one()
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in json.dumps([str(v) for v in row])
    audit_text = json.dumps(
        [(e.actor, audit.detail(session, e.id)) for e in session.scalars(select(AuditEntry))]
    )
    assert secret not in audit_text
    assert credentials.check_secret(created, secret)
    assert not credentials.check_secret(created, secret + "x")
    assert credentials.hash_value(secret) == row.secret_hash


@pytest.mark.parametrize(
    "jwk_set",
    [
        keys.jwks(keys.ec_public_jwk()),
        keys.jwks(keys.rsa_public_jwk(2048)),
        keys.jwks(keys.ed25519_public_jwk()),
        keys.jwks({**keys.ec_public_jwk(), "use": "sig", "kid": "k1"}, keys.ed25519_public_jwk()),
    ],
)
def test_private_key_jwt_takes_public_signing_keys(session, charter, jwk_set):
    created, secret = client(
        session, organisation(session), auth_method="private_key_jwt", jwks=jwk_set
    )
    assert secret is None
    assert created.secret_hash is None
    assert created.auth_method is AuthMethod.PRIVATE_KEY_JWT
    assert created.jwks == jwk_set


@pytest.mark.parametrize(
    ("jwk_set", "words"),
    [
        (None, "at least one"),
        ({"keys": []}, "at least one"),
        ({"not": "a jwks"}, "at least one"),
        (keys.jwks(keys.ec_private_jwk()), "private members (d)"),
        (keys.jwks(keys.rsa_public_jwk(1024)), "2048"),
        (keys.jwks(keys.p384_public_jwk()), "P-256"),
        (keys.jwks({"kty": "oct", "k": "c2VjcmV0"}), "private members (k)"),
        (keys.jwks({**keys.ec_public_jwk(), "use": "enc"}), '"use"'),
        (keys.jwks({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}), "not a valid JWK"),
        ({"keys": ["not an object"]}, "JSON object"),
    ],
)
def test_private_key_jwt_refuses_missing_private_weak_or_other_keys(
    session, charter, jwk_set, words
):
    fields = refused(
        client, session, organisation(session), auth_method="private_key_jwt", jwks=jwk_set
    )
    assert any(words in m for m in fields["jwks"]), fields


def test_keys_are_refused_beside_a_shared_secret(session, charter):
    fields = refused(client, session, organisation(session), jwks=keys.jwks())
    assert "jwks" in fields


def test_a_public_client_uses_only_the_code_flow(session, charter):
    org = organisation(session)
    created, secret = client(session, org, auth_method="none")
    assert (secret, created.secret_hash) == (None, None)
    fields = refused(
        client,
        session,
        org,
        auth_method="none",
        grant_types=["authorization_code", "client_credentials"],
    )
    assert "auth_method" in fields


def test_every_bad_field_is_listed_at_once(session, charter):
    fields = refused(
        client,
        session,
        organisation(session),
        name="",
        auth_method="magic",
        grant_types=["implicit"],
        redirect_uris=["http://example.org/cb"],
        scope="admin",
    )
    assert {"name", "auth_method", "grant_types", "redirect_uris", "scope"} <= set(fields)


def test_a_suspended_organisation_gets_no_new_client_nor_token(session, charter):
    org = organisation(session)
    service.update_organisation(session, org.id, suspended=True, actor="test")
    with pytest.raises(ConflictError):
        client(session, org)
    with pytest.raises(ConflictError):
        clients.issue_initial_access_token(session, organisation_id=org.id, actor="test")


def test_revoking_a_client_revokes_its_grants_and_is_idempotent(session, charter):
    org = organisation(session)
    created, _ = client(session, org)
    grant = Grant(
        client_pk=created.id,
        scope="access:request",
        authorization_details=[],
        consent_ids=[],
        audience="https://tiers.test/api",
    )
    session.add(grant)
    session.flush()
    clients.revoke_client(session, client_id=created.client_id, actor="test")
    session.expire_all()
    assert session.get(OAuthClient, created.id).revoked_at is not None
    assert session.get(Grant, grant.id).revoked_reason == "client_revoked"
    clients.revoke_client(session, client_id=created.client_id, actor="test")
    [entry] = events(session, "admin:client:revoke")
    assert audit.detail(session, entry.id)["grants_revoked"] == 1
    assert [c.client_id for c in clients.list_clients(session, org.id)] == [created.client_id]
    assert clients.list_clients(session, org.id, include_revoked=False) == []
    with pytest.raises(NotFoundError):
        clients.revoke_client(session, client_id="tc_nobody", actor="test")


# --- initial access tokens and RFC 7591 -------------------------------------------------

METADATA = {
    "client_name": "Self-registered",
    "redirect_uris": [REDIRECT],
    "grant_types": ["authorization_code"],
    "token_endpoint_auth_method": "client_secret_basic",
    "scope": "access:request",
}


def test_an_initial_access_token_is_stored_hashed_and_lasts_a_day(session, charter):
    org = organisation(session)
    token = clients.issue_initial_access_token(session, organisation_id=org.id, actor="test")
    row = session.scalar(select(InitialAccessToken))
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert timedelta(hours=23, minutes=59) < row.expires_at - utcnow() <= timedelta(hours=24)
    assert token not in json.dumps(
        [audit.detail(session, e.id) for e in events(session, "admin:initial_access_token:issue")]
    )
    with pytest.raises(InvalidInputError):
        clients.issue_initial_access_token(
            session, organisation_id=org.id, ttl=timedelta(0), actor="test"
        )


def test_a_client_registers_itself_once_with_an_initial_access_token(session, charter):
    org = organisation(session)
    token = clients.issue_initial_access_token(session, organisation_id=org.id, actor="test")
    assert clients.initial_access_token_is_valid(session, token)
    created, secret = clients.register_client(
        session, initial_access_token=token, metadata=METADATA
    )
    assert created.registered_by == "dcr"
    assert created.organisation_id == org.id
    assert credentials.check_secret(created, secret)
    assert not clients.initial_access_token_is_valid(session, token)
    [entry] = events(session, "oauth:client:register")
    assert entry.actor == f"organisation:{org.slug}"
    with pytest.raises(InvalidTokenError):
        clients.register_client(session, initial_access_token=token, metadata=METADATA)


def test_an_expired_or_unknown_initial_access_token_registers_nothing(session, charter):
    org = organisation(session)
    start = utcnow()
    with frozen(start) as move_to:
        token = clients.issue_initial_access_token(
            session, organisation_id=org.id, ttl=timedelta(hours=1), actor="test"
        )
        move_to(start + timedelta(hours=1, seconds=1))
        with pytest.raises(InvalidTokenError):
            clients.register_client(session, initial_access_token=token, metadata=METADATA)
    with pytest.raises(InvalidTokenError):
        clients.register_client(session, initial_access_token="made-up", metadata=METADATA)
    assert count(session, OAuthClient) == 0


def test_registration_refusals_use_rfc_7591_names(session, charter):
    org = organisation(session)
    token = clients.issue_initial_access_token(session, organisation_id=org.id, actor="test")
    session.commit()
    with pytest.raises(InvalidInputError) as info:
        clients.register_client(
            session,
            initial_access_token=token,
            metadata={
                **METADATA,
                "token_endpoint_auth_method": "private_key_jwt",
                "scope": "admin",
            },
        )
    assert {"jwks", "scope"} <= set(info.value.fields)
    session.rollback()  # as the unit of work does: the token is still unused
    assert clients.initial_access_token_is_valid(session, token)


def test_a_suspended_organisations_token_registers_nothing(session, charter):
    org = organisation(session)
    token = clients.issue_initial_access_token(session, organisation_id=org.id, actor="test")
    service.update_organisation(session, org.id, suspended=True, actor="test")
    with pytest.raises(InvalidTokenError):
        clients.register_client(session, initial_access_token=token, metadata=METADATA)


# --- the committee ------------------------------------------------------------------------


def test_committee_members_are_portal_accounts_found_by_email(session, charter):
    citizen = accounts.sign_up(session, email="Chair@Example.org", password=PASSWORD)
    assert not service.is_committee_member(session, citizen.id)
    member = service.add_committee_member(session, "  chair@example.org ")
    assert service.is_committee_member(session, citizen.id)
    assert service.add_committee_member(session, "chair@example.org").id == member.id
    assert count(session, CommitteeMember) == 1
    [entry] = events(session, "admin:committee:add")
    assert "chair" not in json.dumps(
        [entry.actor, audit.detail(session, entry.id), entry.subject_tag]
    )
    with pytest.raises(NotFoundError) as info:
        service.add_committee_member(session, "nobody@example.org")
    assert "email" in info.value.fields
