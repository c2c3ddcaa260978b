"""`releases:write`, which spends privacy budget, is held by observatories and city services
only: no other role's client can be registered with it or obtain it from /oauth/token, even
from a client row that lists it."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from broker.service import clients
from common.errors import InvalidInputError

WRITE = "releases:write"
OWN_SCOPE = {"reuser": "access:request", "holder": "datasets:write", "auditor": "audit:read"}
CATEGORY = {"reuser": "company", "observatory": "public_service", "city_service": "public_service"}


def _token(client: FlaskClient, registered: Any, scope: str | None) -> Any:
    data = {"grant_type": "client_credentials"}
    if scope is not None:
        data["scope"] = scope
    return client.post("/oauth/token", data=data, auth=registered.basic)


def _machine_client(make_client: Any, role: str, scope: str) -> Any:
    return make_client(
        role,
        category=CATEGORY.get(role),
        scope=scope,
        grant_types=("client_credentials",),
        redirect_uris=(),
    )


@pytest.mark.parametrize("role", ["observatory", "city_service"])
def test_observatories_and_city_services_obtain_releases_write(
    client: FlaskClient, make_client: Any, role: str
) -> None:
    registered = _machine_client(make_client, role, f"releases:read {WRITE}")
    answer = _token(client, registered, WRITE)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["scope"] == WRITE


@pytest.mark.parametrize("role", ["reuser", "holder", "auditor", "committee"])
def test_no_other_role_obtains_releases_write(
    client: FlaskClient, make_client: Any, role: str
) -> None:
    # A client row that lists the scope anyway (written before the rule, or by hand): the
    # role's table still decides.
    own = OWN_SCOPE.get(role, "admin")
    registered = _machine_client(make_client, role, f"{own} {WRITE}")
    refused = _token(client, registered, WRITE)
    assert refused.status_code == 400
    assert refused.get_json()["error"] == "invalid_scope"
    default = _token(client, registered, None)  # no scope asked: what the client may hold
    assert default.status_code == 200, default.get_json()
    assert WRITE not in default.get_json()["scope"].split()


@pytest.mark.parametrize("role", ["reuser", "holder", "committee"])
def test_no_other_role_can_register_a_client_with_releases_write(
    session: Session, make_client: Any, role: str
) -> None:
    organisation = _machine_client(make_client, role, OWN_SCOPE.get(role, "admin")).model
    with pytest.raises(InvalidInputError) as refused:
        clients.create_client(
            session,
            organisation_id=organisation.organisation.id,
            name="Budget spender",
            auth_method="client_secret_basic",
            grant_types=["client_credentials"],
            scope=WRITE,
            actor="test",
        )
    assert "may hold only" in refused.value.fields["scope"][0]


def test_the_metadata_lists_releases_write(client: FlaskClient) -> None:
    metadata = client.get("/.well-known/oauth-authorization-server").get_json()
    assert {"releases:read", WRITE} <= set(metadata["scopes_supported"])
