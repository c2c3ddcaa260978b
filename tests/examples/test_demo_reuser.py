"""The demo reuser (examples/reuser, EcoWatt Conseil): its proofs and assertions as Tiers
checks them, its refusals said plainly, the demo seed that registers it, and the whole journey
in a real headless Chromium against a real Tiers (PAR, PKCE, private_key_jwt, DPoP)."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from broker import demo
from broker.models import CommitteeMember, Grant, OAuthClient, Organisation, Role
from common import jose
from common.db import get_session, unit_of_work
from examples.reuser import app as reuser
from tests.conftest import CHARTER, PASSWORD
from tests.live import chromium, own_app, serve

ISSUER = "http://tiers.example"


# --- the protocol pieces, checked with Tiers' own verifiers -----------------------------


def test_a_client_assertion_is_one_tiers_accepts() -> None:
    key = reuser.DpopKey().private  # any P-256 key
    public = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    before = int(time.time())
    assertion = reuser.client_assertion(client_id="tc_x", key=key, kid="k1", audience=ISSUER)
    assert jwt.get_unverified_header(assertion)["kid"] == "k1"
    claims = jose.verify(
        assertion,
        keys={"k1": public}.get,
        algorithms=jose.CLIENT_ALGORITHMS,
        typ=None,
        issuer="tc_x",
        audience=ISSUER,
        required=("iss", "sub", "aud", "exp", "jti"),
        max_age=300,
    )
    assert claims["sub"] == claims["iss"] == "tc_x"
    assert claims["aud"] == ISSUER  # the issuer itself, a string: never the token endpoint
    assert before <= claims["iat"]
    assert claims["exp"] - claims["iat"] <= 60
    again = reuser.client_assertion(client_id="tc_x", key=key, kid="k1", audience=ISSUER)
    assert jwt.decode(again, options={"verify_signature": False})["jti"] != claims["jti"]


def test_a_dpop_proof_is_one_tiers_accepts() -> None:
    key = reuser.DpopKey()
    token = "header.payload.signature"
    proof = key.proof(
        "GET", "http://tiers.example/api/v1/consents?x=1", nonce="n1", access_token=token
    )
    checked = jose.verify_dpop_proof(
        proof, method="GET", url="http://tiers.example/api/v1/consents", access_token=token
    )
    assert checked.jkt == key.jkt == jose.thumbprint(key.jwk)
    assert checked.nonce == "n1"
    header = jwt.get_unverified_header(proof)
    assert header["typ"] == "dpop+jwt"
    assert "d" not in header["jwk"]  # only the public key travels
    claims = jwt.decode(proof, options={"verify_signature": False})
    expected = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=")
    assert claims["ath"] == expected.decode()
    assert claims["htu"] == "http://tiers.example/api/v1/consents"  # no query (RFC 9449 §4.2)


def test_a_proof_for_the_token_endpoint_has_no_ath_and_no_nonce_until_given() -> None:
    claims = jwt.decode(
        reuser.DpopKey().proof("POST", "http://tiers.example/oauth/token"),
        options={"verify_signature": False},
    )
    assert {"jti", "htm", "htu", "iat"} <= set(claims)
    assert "ath" not in claims
    assert "nonce" not in claims


def test_pkce_uses_s256() -> None:
    verifier, challenge = reuser.pkce_pair()
    assert 43 <= len(verifier) <= 128
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    assert challenge == digest.decode()


def test_the_reuser_asks_for_the_load_curve_for_energy_coaching() -> None:
    (detail,) = reuser.authorization_details()
    assert detail["type"] == "https://tiers-territorial.fr/oauth/data-access"
    assert detail["purpose"] == "energy-coaching"
    assert detail["mode"] == "individual"
    assert detail["data_categories"] == ["energy.electricity.load_curve"]


# --- refusals, said plainly ---------------------------------------------------------------


def _credentials(folder: Path) -> Path:
    key = reuser.DpopKey().private
    pem = folder / "key.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path = folder / "demo-reuser.json"
    path.write_text(
        json.dumps(
            {
                "client_id": "tc_demo",
                "private_key_path": str(pem),
                "kid": "k1",
                "redirect_uri": "http://127.0.0.1:5001/callback",
            }
        )
    )
    return path


def _browser(app: Flask) -> tuple[FlaskClient, str]:
    client = app.test_client()
    client.get("/")
    with client.session_transaction() as session:
        return client, str(session["csrf"])


def test_an_unreachable_tiers_is_said_plainly(tmp_path: Path) -> None:
    app = reuser.create_app("http://127.0.0.1:9", _credentials(tmp_path))
    client, csrf = _browser(app)
    answer = client.post("/connexion", data={"csrf_token": csrf})
    assert answer.status_code == 502
    page = answer.get_data(as_text=True)
    assert "Tiers ne répond pas" in page
    assert "Traceback" not in page


def test_missing_credentials_point_to_the_seed(tmp_path: Path) -> None:
    app = reuser.create_app("http://127.0.0.1:9", tmp_path / "absent.json")
    client, csrf = _browser(app)
    answer = client.post("/connexion", data={"csrf_token": csrf})
    assert answer.status_code == 503
    assert "tiers demo-seed" in answer.get_data(as_text=True)


def test_a_post_without_the_forms_token_is_refused(tmp_path: Path) -> None:
    client, _ = _browser(reuser.create_app("http://127.0.0.1:9", _credentials(tmp_path)))
    answer = client.post("/deconnexion")
    assert answer.status_code == 400
    assert "formulaire a expiré" in answer.get_data(as_text=True)


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"iss": "http://evil.example", "state": "s1", "code": "c"}, "RFC 9207"),
        ({"iss": ISSUER, "state": "other", "code": "c"}, "state ne correspond pas"),
        ({"iss": ISSUER, "state": "s1", "error": "access_denied"}, "Vous avez refusé"),
        ({"iss": ISSUER, "state": "s1"}, "pas renvoyé de code"),
    ],
)
def test_the_callback_checks_issuer_and_state_first(
    tmp_path: Path, query: dict[str, str], words: str
) -> None:
    client, _ = _browser(reuser.create_app(ISSUER, _credentials(tmp_path)))
    with client.session_transaction() as session:
        session["pending"] = {"state": "s1", "verifier": "v" * 64, "issuer": ISSUER}
    answer = client.get("/callback", query_string=query)
    assert words in answer.get_data(as_text=True)
    assert answer.status_code == (200 if "error" in query else 400)


def test_a_callback_without_a_pending_request_is_refused(tmp_path: Path) -> None:
    client, _ = _browser(reuser.create_app(ISSUER, _credentials(tmp_path)))
    answer = client.get("/callback", query_string={"iss": ISSUER, "state": "s1", "code": "c"})
    assert answer.status_code == 400
    assert "Aucune connexion en cours" in answer.get_data(as_text=True)


# --- the seed --------------------------------------------------------------------------


def _seed(app: Flask, folder: Path, reuser_url: str) -> list[str]:
    with app.app_context():
        return list(demo.seed(CHARTER, reuser_url=reuser_url, instance_dir=folder))


def test_the_seed_registers_the_reuser_once_and_writes_its_credentials(
    app: Flask, tmp_path: Path
) -> None:
    first = _seed(app, tmp_path, "http://127.0.0.1:5001")
    credentials = json.loads((tmp_path / "demo-reuser.json").read_text())
    key_file = Path(credentials["private_key_path"])
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert credentials["redirect_uri"] == "http://127.0.0.1:5001/callback"
    assert any("registered" in line for line in first)

    again = _seed(app, tmp_path, "http://127.0.0.1:5001")
    assert any(f"client {credentials['client_id']} of ecowatt-conseil already" in x for x in again)
    assert json.loads((tmp_path / "demo-reuser.json").read_text()) == credentials

    with app.app_context():
        session = get_session()
        client = session.scalar(
            select(OAuthClient).where(OAuthClient.client_id == credentials["client_id"])
        )
        assert client is not None
        assert client.dpop_bound
        assert client.auth_method.value == "private_key_jwt"
        assert client.organisation.slug == "ecowatt-conseil"
        assert client.organisation.reuser_category == "company"
        assert client.jwks == {
            "keys": [
                demo.public_jwk(reuser.Credentials.load(tmp_path / "demo-reuser.json").private_key)
            ]
        }
        roles = dict(session.execute(select(Organisation.slug, Organisation.role)).all())
        assert roles["observatoire-energie-brevanne"] is Role.OBSERVATORY
        assert roles["brevanne-reseaux"] is Role.HOLDER
        assert Role.COMMITTEE in roles.values()
        assert session.scalar(select(CommitteeMember.id)) is not None


def test_the_seed_replaces_the_client_when_the_redirect_uri_moves(
    app: Flask, tmp_path: Path
) -> None:
    _seed(app, tmp_path, "http://127.0.0.1:5001")
    old = json.loads((tmp_path / "demo-reuser.json").read_text())["client_id"]
    _seed(app, tmp_path, "http://127.0.0.1:5002")
    new = json.loads((tmp_path / "demo-reuser.json").read_text())
    assert new["client_id"] != old
    assert new["redirect_uri"] == "http://127.0.0.1:5002/callback"
    with app.app_context():
        stale = get_session().scalar(select(OAuthClient).where(OAuthClient.client_id == old))
        assert stale is not None
        assert stale.revoked_at is not None


# --- the journey in a real browser ----------------------------------------------------------


@dataclass
class Demo:
    tiers: str
    reuser: str
    tiers_app: Flask
    client_id: str


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """Tiers on a SQLite file, its ISSUER its real URL, and the reuser beside it, seeded by
    the demo seed with a redirect URI on the reuser's own port."""
    folder = tmp_path_factory.mktemp("reuser")
    tiers_app = own_app(folder, "tiers")
    with ExitStack() as stack:
        tiers_url = stack.enter_context(serve(tiers_app))
        tiers_app.config["ISSUER"] = tiers_url  # RFC 8414 §3.3: the issuer is where it is reached
        reuser_app = reuser.create_app(tiers_url, folder / "demo-reuser.json")  # read at first use
        reuser_url = stack.enter_context(serve(reuser_app))
        _seed(tiers_app, folder, reuser_url)
        client_id = json.loads((folder / "demo-reuser.json").read_text())["client_id"]
        yield Demo(tiers_url, reuser_url, tiers_app, client_id)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def _grant_reasons(running: Demo) -> list[str | None]:
    with running.tiers_app.app_context(), unit_of_work() as session:
        return list(
            session.scalars(
                select(Grant.revoked_reason)
                .join(OAuthClient, Grant.client_pk == OAuthClient.id)
                .where(OAuthClient.client_id == running.client_id)
                .order_by(Grant.created_at)
            )
        )


def _shows_a_dpop_bound_consent(page: Page) -> None:
    expect(page.get_by_test_id("consent-purpose")).to_have_text("energy-coaching")
    expect(page.get_by_test_id("consent-status")).to_have_text("donné")
    expect(page.get_by_test_id("token-type")).to_have_text("DPoP")
    expect(page.get_by_test_id("dpop-bound")).to_contain_text("oui")
    assert (
        page.get_by_test_id("cnf-jkt").inner_text() == page.get_by_test_id("our-jkt").inner_text()
    )
    details = json.loads(page.get_by_test_id("authorization-details").inner_text())
    assert details[0]["purpose"] == "energy-coaching"
    assert details[0]["data_categories"] == ["energy.electricity.load_curve"]


@pytest.mark.browser
def test_a_new_citizen_authorises_ecowatt_and_it_reads_the_consent_with_a_dpop_token(
    browser: Browser, running: Demo
) -> None:
    page = browser.new_context().new_page()
    page.goto(f"{running.tiers}/sign-up")
    page.fill("input[name=email]", "reuser-journey@example.org")
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=password_again]", PASSWORD)
    page.get_by_test_id("sign-up").click()
    expect(page.locator("h1")).to_have_text("Mes consentements")

    page.goto(running.reuser)
    page.get_by_test_id("sign-in-with-tiers").click()
    expect(page.get_by_test_id("consent-screen")).to_contain_text("EcoWatt Conseil")
    page.get_by_test_id("approve").click()

    page.wait_for_url(f"{running.reuser}/compte")
    _shows_a_dpop_bound_consent(page)

    page.get_by_test_id("refresh").click()
    expect(page.get_by_test_id("flash")).to_contain_text("Jeton renouvelé")
    expect(page.get_by_test_id("refreshed")).to_have_text("1 fois")
    _shows_a_dpop_bound_consent(page)  # the new token works too, with a fresh proof

    page.get_by_test_id("sign-out").click()
    expect(page.get_by_test_id("flash")).to_contain_text("révoqués")
    assert _grant_reasons(running)[-1] == "revoked_by_client"  # RFC 7009 ended the grant


@pytest.mark.browser
def test_a_demo_citizen_signs_in_on_the_way_and_sees_only_what_concerns_ecowatt(
    browser: Browser, running: Demo
) -> None:
    page = browser.new_context().new_page()
    page.goto(running.reuser)
    page.get_by_test_id("sign-in-with-tiers").click()
    page.fill("input[name=email]", "camille@demo.tiers.local")  # Tiers' sign-in keeps `next`
    page.fill("input[name=password]", demo.DEMO_PASSWORD)
    page.get_by_test_id("sign-in").click()
    page.get_by_test_id("approve").click()

    page.wait_for_url(f"{running.reuser}/compte")
    _shows_a_dpop_bound_consent(page)
    # camille also consented to the energy observatory: Tiers does not show EcoWatt that one.
    expect(page.get_by_test_id("consent")).to_have_count(1)


@pytest.mark.browser
def test_a_citizen_who_refuses_is_told_nothing_was_shared(browser: Browser, running: Demo) -> None:
    page = browser.new_context().new_page()
    page.goto(running.reuser)
    page.get_by_test_id("sign-in-with-tiers").click()
    page.fill("input[name=email]", "lea@demo.tiers.local")
    page.fill("input[name=password]", demo.DEMO_PASSWORD)
    page.get_by_test_id("sign-in").click()
    page.get_by_test_id("deny").click()
    expect(page.locator("h1")).to_have_text("Vous avez refusé")
    expect(page.get_by_test_id("message")).to_contain_text("rien transmis")


@pytest.mark.browser
def test_a_withdrawal_on_tiers_stops_the_reuser_at_once(browser: Browser, running: Demo) -> None:
    page = browser.new_context().new_page()
    page.goto(f"{running.tiers}/sign-up")
    page.fill("input[name=email]", "reuser-withdraws@example.org")
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=password_again]", PASSWORD)
    page.get_by_test_id("sign-up").click()
    page.goto(running.reuser)
    page.get_by_test_id("sign-in-with-tiers").click()
    page.get_by_test_id("approve").click()
    page.wait_for_url(f"{running.reuser}/compte")
    consent_id = page.get_by_test_id("consent-id").inner_text()

    page.goto(f"{running.tiers}/me/consents/{consent_id}")
    page.get_by_test_id("withdraw").click()
    expect(page.get_by_test_id("status")).to_contain_text("retiré")

    page.goto(f"{running.reuser}/compte")  # the same access token, a minute later: refused
    expect(page.get_by_test_id("api-error")).to_contain_text("HTTP 401")
    page.get_by_test_id("refresh").click()
    expect(page.get_by_test_id("message")).to_contain_text("invalid_grant")
    page.goto(running.reuser)  # the grant is over: EcoWatt forgot the tokens
    expect(page.get_by_test_id("sign-in-with-tiers")).to_be_visible()
