"""FAPI 2.0 grade: pushed requests (RFC 9126), DPoP-bound tokens (RFC 9449), private_key_jwt."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask.testing import FlaskClient

from common.clock import frozen, utcnow
from tests.conftest import ISSUER, REDIRECT_URI, SignedIn
from tests.oauth.helpers import DpopKey, approve, par_params, pkce, push

TOKEN_URL = "http://localhost/oauth/token"  # what the test client's requests look like
API_URL = "http://localhost/api/v1/consents"


@pytest.fixture
def reuser(make_client: Any) -> Any:
    return make_client("reuser", slug="ecowatt-conseil", category="company")


# --- PAR ---------------------------------------------------------------------------------


def test_a_confidential_client_must_push_its_request(
    client: FlaskClient, citizen: SignedIn, reuser: Any
) -> None:
    _, challenge = pkce()
    direct = citizen.client.get(
        "/oauth/authorize", query_string={"client_id": reuser.client_id, **par_params(challenge)}
    )
    assert direct.status_code == 400
    assert "PAR" in direct.get_data(as_text=True)
    assert "Location" not in direct.headers  # errors never go to an unverified redirect URI


def test_a_request_uri_is_single_use(client: FlaskClient, citizen: SignedIn, reuser: Any) -> None:
    _, challenge = pkce()
    request_uri = push(client, reuser, challenge).get_json()["request_uri"]
    approve(citizen.client, reuser.client_id, request_uri)
    again = citizen.client.get(
        "/oauth/authorize", query_string={"client_id": reuser.client_id, "request_uri": request_uri}
    )
    assert again.status_code == 400
    assert "invalid_request_uri" in again.get_data(as_text=True)


def test_a_request_uri_expires(client: FlaskClient, citizen: SignedIn, reuser: Any) -> None:
    _, challenge = pkce()
    pushed = push(client, reuser, challenge).get_json()
    assert pushed["expires_in"] < 600
    with frozen(utcnow() + timedelta(seconds=pushed["expires_in"] + 1)):
        late = citizen.client.get(
            "/oauth/authorize",
            query_string={"client_id": reuser.client_id, "request_uri": pushed["request_uri"]},
        )
    assert late.status_code == 400


def test_another_clients_request_uri_is_refused(
    client: FlaskClient, citizen: SignedIn, reuser: Any, make_client: Any
) -> None:
    other = make_client("reuser", category="company")
    _, challenge = pkce()
    request_uri = push(client, reuser, challenge).get_json()["request_uri"]
    stolen = citizen.client.get(
        "/oauth/authorize", query_string={"client_id": other.client_id, "request_uri": request_uri}
    )
    assert stolen.status_code == 400


def test_par_needs_client_authentication(client: FlaskClient, reuser: Any) -> None:
    _, challenge = pkce()
    response = client.post(
        "/oauth/par", data={"client_id": reuser.client_id, **par_params(challenge)}
    )
    assert response.status_code == 401


def test_a_purpose_the_clients_category_may_not_use_is_refused_before_any_screen(
    client: FlaskClient, make_client: Any
) -> None:
    company = make_client("reuser", category="company")
    _, challenge = pkce()
    from tests.oauth.helpers import details

    response = push(
        client, company, challenge, authorization_details=details("social-aid-simulation")
    )
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid_authorization_details"
    assert "authorization_details[0].purpose" in body["errors"]


def test_a_named_purpose_refuses_an_organisation_it_does_not_name(
    client: FlaskClient, make_client: Any
) -> None:
    stranger = make_client("reuser", slug="not-named", category="company")
    _, challenge = pkce()
    response = push(client, stranger, challenge)
    assert response.status_code == 400
    assert "not one" in response.get_json()["errors"]["authorization_details[0].purpose"][0]


def test_the_citizen_can_refuse(client: FlaskClient, citizen: SignedIn, reuser: Any) -> None:
    from tests.conftest import form_csrf

    _, challenge = pkce()
    request_uri = push(client, reuser, challenge, state="s1").get_json()["request_uri"]
    query = {"client_id": reuser.client_id, "request_uri": request_uri}
    page = citizen.client.get("/oauth/authorize", query_string=query)
    answer = citizen.client.post(
        "/oauth/authorize",
        data={"csrf_token": form_csrf(page.get_data(as_text=True)), **query, "decision": "deny"},
    )
    assert answer.status_code == 303
    assert answer.headers["Location"].startswith(f"{REDIRECT_URI}?error=access_denied&state=s1")
    assert citizen.client.get("/api/v1/consents", headers=citizen.headers).get_json() == []


def test_the_consent_screen_needs_csrf(client: FlaskClient, citizen: SignedIn, reuser: Any) -> None:
    _, challenge = pkce()
    request_uri = push(client, reuser, challenge).get_json()["request_uri"]
    answer = citizen.client.post(
        "/oauth/authorize",
        data={"client_id": reuser.client_id, "request_uri": request_uri, "decision": "approve"},
    )
    assert answer.status_code in (400, 403)
    assert citizen.client.get("/api/v1/consents", headers=citizen.headers).get_json() == []


def test_the_consent_screen_asks_a_signed_out_visitor_to_sign_in(
    client: FlaskClient, reuser: Any, charter: Any
) -> None:
    _, challenge = pkce()
    request_uri = push(client, reuser, challenge).get_json()["request_uri"]
    page = client.get(
        "/oauth/authorize", query_string={"client_id": reuser.client_id, "request_uri": request_uri}
    )
    assert page.status_code == 302
    assert "/oauth/authorize" in page.headers["Location"]


# --- DPoP --------------------------------------------------------------------------------


def _nonce(client: FlaskClient, key: DpopKey, data: dict[str, str], auth: Any) -> str:
    first = client.post(
        "/oauth/token", data=data, auth=auth, headers={"DPoP": key.proof("POST", TOKEN_URL)}
    )
    assert first.status_code == 400
    assert first.get_json()["error"] == "use_dpop_nonce"
    return str(first.headers["DPoP-Nonce"])


@pytest.fixture
def bound(client: FlaskClient, citizen: SignedIn, make_client: Any) -> dict[str, Any]:
    """A DPoP-bound token pair from a client registered with dpop_bound_access_tokens."""
    reuser = make_client("reuser", slug="ecowatt-conseil", category="company", dpop=True)
    key = DpopKey()
    verifier, challenge = pkce()
    request_uri = push(client, reuser, challenge).get_json()["request_uri"]
    query = approve(citizen.client, reuser.client_id, request_uri)
    data = {
        "grant_type": "authorization_code",
        "code": query["code"][0],
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    nonce = _nonce(client, key, data, reuser.basic)
    answer = client.post(
        "/oauth/token",
        data=data,
        auth=reuser.basic,
        headers={"DPoP": key.proof("POST", TOKEN_URL, nonce=nonce)},
    )
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["token_type"] == "DPoP"
    return {"key": key, "nonce": nonce, "reuser": reuser, **body}


def _api(
    client: FlaskClient, bound: dict[str, Any], proof: str | None, scheme: str = "DPoP"
) -> Any:
    headers = {"Authorization": f"{scheme} {bound['access_token']}"}
    if proof:
        headers["DPoP"] = proof
    return client.get("/api/v1/consents", headers=headers)


def test_a_bound_token_works_with_a_fresh_proof(client: FlaskClient, bound: dict[str, Any]) -> None:
    claims = jwt.decode(bound["access_token"], options={"verify_signature": False})
    from common.jose import thumbprint

    assert claims["cnf"]["jkt"] == thumbprint(bound["key"].jwk)
    proof = bound["key"].proof(
        "GET", API_URL, access_token=bound["access_token"], nonce=bound["nonce"]
    )
    assert _api(client, bound, proof).status_code == 200


def test_a_bound_token_sent_as_bearer_is_refused(
    client: FlaskClient, bound: dict[str, Any]
) -> None:
    assert _api(client, bound, None, scheme="Bearer").status_code == 401


def test_a_replayed_proof_is_refused(client: FlaskClient, bound: dict[str, Any]) -> None:
    proof = bound["key"].proof(
        "GET", API_URL, access_token=bound["access_token"], nonce=bound["nonce"]
    )
    assert _api(client, bound, proof).status_code == 200
    assert _api(client, bound, proof).status_code == 401


@pytest.mark.parametrize(
    "change",
    [
        {"method": "POST"},
        {"url": "http://localhost/api/v1/charter"},
        {"iat": int(time.time()) - 600},
        {"no_ath": True},
        {"no_nonce": True},
        {"other_key": True},
        {"typ": "jwt"},
    ],
)
def test_bad_proofs_are_refused(
    client: FlaskClient, bound: dict[str, Any], change: dict[str, Any]
) -> None:
    key = DpopKey() if change.get("other_key") else bound["key"]
    proof = key.proof(
        change.get("method", "GET"),
        change.get("url", API_URL),
        access_token=None if change.get("no_ath") else bound["access_token"],
        nonce=None if change.get("no_nonce") else bound["nonce"],
        iat=change.get("iat"),
        typ=change.get("typ", "dpop+jwt"),
    )
    response = _api(client, bound, proof)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("DPoP")
    if change.get("no_nonce"):
        assert response.headers["DPoP-Nonce"]


def test_a_bound_refresh_token_needs_the_same_key(
    client: FlaskClient, bound: dict[str, Any]
) -> None:
    data = {"grant_type": "refresh_token", "refresh_token": bound["refresh_token"]}
    stranger = DpopKey()
    refused = client.post(
        "/oauth/token",
        data=data,
        auth=bound["reuser"].basic,
        headers={"DPoP": stranger.proof("POST", TOKEN_URL, nonce=bound["nonce"])},
    )
    assert refused.status_code == 400
    assert refused.get_json()["error"] == "invalid_dpop_proof"


def test_a_dpop_bound_client_cannot_get_an_unbound_token(
    client: FlaskClient, make_client: Any
) -> None:
    observatory = make_client(
        "observatory",
        category="public_service",
        dpop=True,
        grant_types=("client_credentials",),
        redirect_uris=(),
    )
    response = client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=observatory.basic
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_dpop_proof"


# --- private_key_jwt ---------------------------------------------------------------------


@pytest.fixture
def keyed(make_client: Any) -> Any:
    private = ec.generate_private_key(ec.SECP256R1())
    public = jwt.algorithms.ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    public["kid"] = "k1"
    registered = make_client(
        "observatory",
        category="public_service",
        auth_method="private_key_jwt",
        jwks={"keys": [public]},
        grant_types=("client_credentials",),
        redirect_uris=(),
    )
    registered.private_key = private
    return registered


def _assertion(keyed: Any, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": keyed.client_id,
        "sub": keyed.client_id,
        "aud": ISSUER,
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
        **claims,
    }
    return jwt.encode(body, keyed.private_key, algorithm="ES256", headers={"kid": "k1"})


def _token_with(client: FlaskClient, assertion: str) -> Any:
    return client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        },
    )


def test_private_key_jwt_authenticates_once_per_assertion(client: FlaskClient, keyed: Any) -> None:
    assertion = _assertion(keyed)
    first = _token_with(client, assertion)
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["scope"] == "access:request releases:read releases:write"
    replay = _token_with(client, assertion)
    assert replay.status_code == 401
    assert replay.get_json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "http://tiers.test/oauth/token"},
        {"aud": [ISSUER]},
        {"exp": int(time.time()) + 3600},
        {"iss": "someone-else"},
    ],
)
def test_bad_client_assertions_are_refused(
    client: FlaskClient, keyed: Any, claims: dict[str, Any]
) -> None:
    response = _token_with(client, _assertion(keyed, **claims))
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"


def test_an_assertion_with_unknown_crit_is_refused(client: FlaskClient, keyed: Any) -> None:
    now = int(time.time())
    assertion = jwt.encode(
        {
            "iss": keyed.client_id,
            "sub": keyed.client_id,
            "aud": ISSUER,
            "iat": now,
            "exp": now + 60,
            "jti": "j1",
        },
        keyed.private_key,
        algorithm="ES256",
        headers={"kid": "k1", "crit": ["x-unknown"], "x-unknown": True},
    )
    assert _token_with(client, assertion).status_code == 401


def test_client_credentials_never_carry_citizen_scopes(
    client: FlaskClient, make_client: Any
) -> None:
    service = make_client(
        "city_service",
        category="public_service",
        grant_types=("client_credentials",),
        redirect_uris=(),
    )
    response = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "consent:write"},
        auth=service.basic,
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_scope"
