"""Token introspection (RFC 7662): who may ask, what one request reads, what it records.

The client_secret_basic path reads the caller and the token in one statement (the hot path of
a holder's API, bench/introspection.py); these tests pin what that must never lose.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask.testing import FlaskClient
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from audit.models import AuditEntry
from broker.service import tokens
from common.clock import utcnow
from common.keyring import app_keyring
from tests.conftest import ISSUER, SignedIn, sql_statements
from tests.oauth.helpers import code_flow

API = "https://holder.example.org/api"


@pytest.fixture
def holder(make_client: Any) -> Any:
    return make_client(
        "holder", category=None, resource_uri=API, grant_types=("client_credentials",)
    )


@pytest.fixture
def reuser(make_client: Any) -> Any:
    return make_client("reuser", slug="ecowatt-conseil", category="company")


def _mint(session: Session, registered: Any, resource: str | None = API) -> str:
    """A client_credentials access token of `registered` for `resource` (no consent)."""
    issuer = tokens.Issuer(ISSUER, f"{ISSUER}/api", app_keyring())
    body = tokens.client_credentials(
        session, registered.model, issuer, scope=None, resource=resource, dpop_jkt=None
    )
    session.commit()
    return str(body["access_token"])


def _introspect(client: FlaskClient, token: str, auth: Any) -> Any:
    return client.post("/oauth/introspect", data={"token": token}, auth=auth)


def _events(session: Session, event_name: str) -> list[AuditEntry]:
    return list(session.scalars(select(AuditEntry).where(AuditEntry.event == event_name)))


@pytest.fixture
def statements(connection: Connection) -> Iterator[list[str]]:
    """Every SQL statement sent on the test's connection while the fixture is active."""
    with sql_statements(connection) as seen:
        yield seen


def _reads_and_writes(seen: list[str]) -> tuple[list[str], list[str]]:
    """The introspection's own statements: reads of clients and tokens, audit inserts (the
    integrator that tests run after each commit, and savepoints, are left out)."""
    reads = [s for s in seen if s.startswith("SELECT") and "oauth_" in s]
    writes = [s for s in seen if "INSERT INTO audit_entry" in s]  # alone or in a CTE
    return reads, writes


def test_a_holder_introspects_in_one_read_and_one_audit_row(
    client: FlaskClient, session: Session, holder: Any, reuser: Any, statements: list[str]
) -> None:
    token = _mint(session, reuser)
    statements.clear()

    seen = _introspect(client, token, holder.basic)

    assert seen.status_code == 200
    assert seen.get_json()["active"] is True
    assert seen.get_json()["client_id"] == reuser.client_id
    assert seen.headers["Cache-Control"] == "no-store"
    reads, writes = _reads_and_writes(statements)
    assert len(reads) == 1, reads  # caller and token together: no second client read
    assert "oauth_token" in reads[0]
    assert "secret_hash" in reads[0]
    assert len(writes) == 1


def test_the_consents_are_read_once_per_introspection(
    client: FlaskClient, citizen: SignedIn, reuser: Any, statements: list[str]
) -> None:
    body = code_flow(client, citizen.client, reuser)
    statements.clear()

    seen = _introspect(client, body["access_token"], reuser.basic)

    assert seen.get_json()["consents"][0]["status"] == "given"
    consent_reads = [s for s in statements if s.startswith("SELECT") and "FROM consent" in s]
    assert len(consent_reads) == 1  # one query for all of them, from the current state
    reads, writes = _reads_and_writes(statements)
    assert len(reads) == 1
    assert len(writes) == 1


def test_an_unknown_token_is_inactive_and_audited(
    client: FlaskClient, session: Session, holder: Any
) -> None:
    for value in ("never-issued", "", "x" * 20_000):
        seen = _introspect(client, value, holder.basic)
        assert seen.status_code == 200
        assert seen.get_json() == {"active": False}
    recorded = _events(session, "oauth:token:introspect")
    assert [(e.decision, e.reason) for e in recorded] == [("inactive", "unknown")] * 3
    assert {e.actor for e in recorded} == {f"client:{holder.client_id}"}


def test_a_holder_learns_nothing_of_a_token_for_another_api(
    client: FlaskClient, session: Session, holder: Any, reuser: Any
) -> None:
    token = _mint(session, reuser, resource=None)  # for Tiers' own API, not the holder's

    assert _introspect(client, token, holder.basic).get_json() == {"active": False}
    assert _introspect(client, token, reuser.basic).get_json()["active"] is True
    [refused, _] = _events(session, "oauth:token:introspect")
    assert refused.reason == "not_audience"


@pytest.mark.parametrize(
    "credentials",
    [
        lambda holder: (holder.client_id, "wrong-secret"),
        lambda holder: (holder.client_id, ""),
        lambda holder: ("tc_unknown", "whatever"),
        lambda holder: ("x" * 65, "whatever"),
        lambda holder: ("", ""),
    ],
)
def test_a_failed_basic_authentication_reveals_nothing(
    client: FlaskClient, session: Session, holder: Any, reuser: Any, credentials: Any
) -> None:
    token = _mint(session, reuser)

    refused = _introspect(client, token, credentials(holder))

    assert refused.status_code == 401
    assert refused.get_json()["error"] == "invalid_client"
    assert "active" not in refused.get_json()
    assert refused.headers["WWW-Authenticate"].startswith("Basic")
    assert _events(session, "oauth:token:introspect") == []
    assert [e.reason for e in _events(session, "oauth:client:refuse")] == ["invalid_client"]


@pytest.mark.parametrize("ended", ["client", "organisation"])
def test_a_revoked_client_or_suspended_organisation_cannot_introspect(
    client: FlaskClient, session: Session, holder: Any, reuser: Any, ended: str
) -> None:
    token = _mint(session, reuser)
    assert _introspect(client, token, holder.basic).get_json()["active"] is True
    if ended == "client":
        holder.model.revoked_at = utcnow()
    else:
        holder.model.organisation.suspended_at = utcnow()
    session.commit()

    assert _introspect(client, token, holder.basic).status_code == 401


def test_a_private_key_jwt_client_may_not_use_basic(
    client: FlaskClient, session: Session, make_client: Any, reuser: Any
) -> None:
    keyed = make_client(
        "holder",
        category=None,
        auth_method="private_key_jwt",
        jwks={"keys": []},
        grant_types=("client_credentials",),
        resource_uri=API,
    )
    token = _mint(session, reuser)

    assert _introspect(client, token, (keyed.client_id, "")).status_code == 401


def test_a_private_key_jwt_holder_introspects_with_an_assertion(
    client: FlaskClient, session: Session, make_client: Any, reuser: Any
) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public = jwt.algorithms.ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    public["kid"] = "k1"
    keyed = make_client(
        "holder",
        category=None,
        auth_method="private_key_jwt",
        jwks={"keys": [public]},
        grant_types=("client_credentials",),
        resource_uri=API,
    )
    token = _mint(session, reuser)
    now = int(time.time())
    claims = {"iss": keyed.client_id, "sub": keyed.client_id, "aud": ISSUER, "iat": now}
    claims |= {"exp": now + 60, "jti": uuid.uuid4().hex}
    form = {
        "token": token,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": jwt.encode(claims, private, algorithm="ES256", headers={"kid": "k1"}),
    }

    seen = client.post("/oauth/introspect", data=form)
    replayed = client.post("/oauth/introspect", data=form)

    assert seen.status_code == 200
    assert seen.get_json()["active"] is True
    assert seen.get_json()["aud"] == API
    assert replayed.status_code == 401  # an assertion authenticates once
