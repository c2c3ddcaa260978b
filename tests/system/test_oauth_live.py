"""The OAuth2 server as clients meet it: gunicorn (2 sync workers) on PostgreSQL, driven over
real HTTP by independent clients (`requests`), and by a citizen in headless Chromium.

The server runs with its own issuer (its real URL). Organisations and clients are arranged
through a twin app on the same database and keys, committed for real; every test uses fresh
ones, except the named reuser "ecowatt-conseil" of the charter, looked up or created once.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from flask import Flask
from playwright.sync_api import Browser, Route, expect, sync_playwright
from sqlalchemy import select

from audit import service as audit
from audit.models import AuditEntry
from broker.app import create_app
from broker.config import celery_settings
from broker.models import AuthMethod, OAuthClient, Organisation, Role
from broker.service import scopes
from broker.service.credentials import hash_value
from common.db import unit_of_work
from common.keyring import app_keyring
from common.tasks import celery_init_app
from tests.conftest import PASSWORD, REDIRECT_URI, form_csrf, settings
from tests.oauth.helpers import COACHING, par_params, pkce
from tests.system.conftest import _required
from tests.system.live_server import LiveServer, free_port, serve

pytestmark = pytest.mark.system

HTTP_TIMEOUT = 30.0  # seconds, every HTTP call
UI_TIMEOUT = 15_000  # milliseconds, every browser wait
RACERS = 20
REUSER_SLUG = "ecowatt-conseil"  # a named reuser of examples/charter.yaml for energy-coaching


@dataclass(frozen=True)
class Live:
    server: LiveServer
    app: Flask  # the twin: arranges rows and reads the audit log, on the same database

    @property
    def url(self) -> str:
        return self.server.url


@dataclass(frozen=True)
class Client:
    client_id: str
    secret: str
    organisation_name: str
    resource_uri: str | None = None

    @property
    def basic(self) -> tuple[str, str]:
        return (self.client_id, self.secret)


@pytest.fixture(scope="module")
def live(live_app: Flask, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """gunicorn -w 2 on a free loopback port, after live_app migrated and published."""
    database, broker = _required()
    folder = tmp_path_factory.mktemp("gunicorn")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    keys = str(folder / "keys")
    secret = secrets.token_urlsafe(48)
    # The twin keeps the system tier's Celery set-up (a real broker): create_app configures
    # the one Celery app of this process, and the worker tests rely on it.
    twin = create_app(
        settings(
            DATABASE_URL=database,
            ISSUER=url,
            KEYS_DIR=keys,
            SECRET_KEY=secret,
            CELERY=celery_settings(broker),
        )
    )
    with twin.app_context():
        app_keyring().active()  # made now, not by two workers racing on the first token
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "CELERY_BROKER_URL": broker,
        "SECRET_KEY": secret,
        "TIERS_KEYS_DIR": keys,
        "TIERS_ISSUER": url,
        "TIERS_INSTANCE": str(folder / "instance"),
    }
    env.pop("TIERS_SECURE_COOKIES", None)  # plain http on loopback
    try:
        with serve(env, folder / "gunicorn.log", port=port) as server:
            yield Live(server, twin)
    finally:
        celery_init_app(live_app)  # give the process's Celery app back to live_app
        twin.extensions["db.engine"].dispose()


@pytest.fixture
def chromium() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is needed for the browser tests (make test installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            timeout=60_000,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


# --- arranging ------------------------------------------------------------------------------


def _register(
    app: Flask,
    organisation: Callable[[Any], Organisation],
    *,
    grant_types: tuple[str, ...],
    redirect_uris: tuple[str, ...],
) -> Client:
    """One new client_secret_basic client of the organisation `organisation(session)` gives."""
    secret = f"secret-{uuid.uuid4().hex}"
    with app.app_context(), unit_of_work() as session:
        org = organisation(session)
        client = OAuthClient(
            client_id=f"live_{uuid.uuid4().hex[:12]}",
            organisation=org,
            name=f"App of {org.slug}",
            auth_method=AuthMethod.CLIENT_SECRET_BASIC,
            secret_hash=hash_value(secret),
            jwks=None,
            redirect_uris=list(redirect_uris),
            grant_types=list(grant_types),
            scope=" ".join(sorted(scopes.ROLE_SCOPES[org.role])),
            dpop_bound=False,
            registered_by="committee",
            revoked_at=None,
        )
        session.add_all([org, client])
        return Client(client.client_id, secret, org.name, org.resource_uri)


def _reuser(app: Flask) -> Client:
    """A new client of EcoWatt Conseil (the organisation is made once, then reused)."""

    def ecowatt(session: Any) -> Organisation:
        found = session.scalar(select(Organisation).where(Organisation.slug == REUSER_SLUG))
        return found or Organisation(
            slug=REUSER_SLUG,
            name="EcoWatt Conseil",
            role=Role.REUSER,
            reuser_category="company",
            resource_uri=None,
            suspended_at=None,
        )

    return _register(
        app,
        ecowatt,
        grant_types=("authorization_code", "refresh_token"),
        redirect_uris=(REDIRECT_URI,),
    )


def _holder(app: Flask) -> Client:
    """A new holder organisation with its own API (resource URI) and a confidential client."""
    slug = f"holder-{uuid.uuid4().hex[:8]}"

    def holder(_session: Any) -> Organisation:
        return Organisation(
            slug=slug,
            name=f"Holder {slug}",
            role=Role.HOLDER,
            reuser_category=None,
            resource_uri=f"https://{slug}.example.org/api",
            suspended_at=None,
        )

    return _register(app, holder, grant_types=("client_credentials",), redirect_uris=())


def _audit(app: Flask, event: str, actor: str) -> list[AuditEntry]:
    with app.app_context(), unit_of_work() as session:
        query = select(AuditEntry).where(AuditEntry.event == event, AuditEntry.actor == actor)
        return list(session.scalars(query))


# --- what the clients do over HTTP ----------------------------------------------------------


def _push(live: Live, client: Client, challenge: str, **overrides: Any) -> str:
    answer = requests.post(
        f"{live.url}/oauth/par",
        data=par_params(challenge, **overrides),
        auth=client.basic,
        timeout=HTTP_TIMEOUT,
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["request_uri"])


def _token(live: Live, client: Client, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    answer = requests.post(
        f"{live.url}/oauth/token", data=form, auth=client.basic, timeout=HTTP_TIMEOUT
    )
    return answer.status_code, answer.json()


def _redeem(live: Live, client: Client, code: str, verifier: str) -> tuple[int, dict[str, Any]]:
    return _token(
        live,
        client,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
    )


def _refresh(live: Live, client: Client, refresh_token: str) -> tuple[int, dict[str, Any]]:
    return _token(live, client, {"grant_type": "refresh_token", "refresh_token": refresh_token})


def _introspect(live: Live, caller: Client, token: str) -> dict[str, Any]:
    answer = requests.post(
        f"{live.url}/oauth/introspect",
        data={"token": token},
        auth=caller.basic,
        timeout=HTTP_TIMEOUT,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = answer.json()
    return body


def _signed_up(live: Live) -> requests.Session:
    """A citizen's browser without a browser: the sign-up form, with its CSRF token."""
    http = requests.Session()
    page = http.get(f"{live.url}/sign-up", timeout=HTTP_TIMEOUT)
    assert page.status_code == 200
    answer = http.post(
        f"{live.url}/sign-up",
        data={
            "csrf_token": form_csrf(page.text),
            "email": f"live-{uuid.uuid4().hex[:10]}@example.org",
            "password": PASSWORD,
            "password_again": PASSWORD,
        },
        timeout=HTTP_TIMEOUT,
    )
    assert answer.status_code == 200, answer.text[:2000]
    assert urlsplit(answer.url).path == "/me/consents"  # signed in, on "Mes consentements"
    return http


def _approve(live: Live, http: requests.Session, client: Client, request_uri: str) -> str:
    """The consent screen, then "J'accepte": the code from the redirect (not followed)."""
    params = {"client_id": client.client_id, "request_uri": request_uri}
    page = http.get(f"{live.url}/oauth/authorize", params=params, timeout=HTTP_TIMEOUT)
    assert page.status_code == 200, page.text[:2000]
    assert 'data-testid="consent-screen"' in page.text
    answer = http.post(
        f"{live.url}/oauth/authorize",
        data={"csrf_token": form_csrf(page.text), **params, "decision": "approve"},
        allow_redirects=False,
        timeout=HTTP_TIMEOUT,
    )
    assert answer.status_code == 303, answer.text[:2000]
    location = answer.headers["Location"]
    assert location.startswith(f"{REDIRECT_URI}?")
    query = parse_qs(urlsplit(location).query)
    assert query["iss"] == [live.url]
    return query["code"][0]


def _code(live: Live, client: Client) -> tuple[str, str]:
    """A fresh authorization code of a new citizen for `client`, and its PKCE verifier."""
    verifier, challenge = pkce()
    request_uri = _push(live, client, challenge)
    with _signed_up(live) as http:
        return _approve(live, http, client, request_uri), verifier


def _together(count: int, call: Callable[[], tuple[int, dict[str, Any]]]) -> list[Any]:
    """`count` threads released at once by a barrier; each result, or the exception it got."""
    barrier = threading.Barrier(count, timeout=30)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = call()
        except Exception as exc:  # kept for the assertion, never raised in a thread
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a request never came back"
    failures = [r for r in results if isinstance(r, Exception)]
    assert not failures, failures
    return results


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.browser
def test_a_citizen_in_chromium_authorizes_a_reuser_app_then_withdraws_and_its_tokens_die(
    live: Live, chromium: Browser
) -> None:
    reuser, holder = _reuser(live.app), _holder(live.app)
    assert holder.resource_uri is not None

    # The reuser's app pushes its request: PKCE S256, RAR, and the holder's API as audience.
    verifier, challenge = pkce()
    state = f"st-{secrets.token_hex(6)}"
    request_uri = _push(live, reuser, challenge, state=state, resource=holder.resource_uri)

    # The citizen, in Chromium: sign up, sign out, come back through the authorize URL.
    context = chromium.new_context(locale="fr-FR")
    context.set_default_timeout(UI_TIMEOUT)
    context.set_default_navigation_timeout(UI_TIMEOUT)
    callbacks: list[str] = []

    def callback(route: Route) -> None:  # the reuser's redirect URI is not served: catch it
        callbacks.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<h1>back at the app</h1>")

    context.route("https://app.example.org/**", callback)
    try:
        page = context.new_page()
        email = f"live-{uuid.uuid4().hex[:10]}@example.org"
        page.goto(f"{live.url}/sign-up")
        page.fill("input[name=email]", email)
        page.fill("input[name=password]", PASSWORD)
        page.fill("input[name=password_again]", PASSWORD)
        page.get_by_test_id("sign-up").click()
        expect(page.locator("h1")).to_have_text("Mes consentements", timeout=UI_TIMEOUT)
        page.get_by_test_id("sign-out").click()
        expect(page.get_by_test_id("sign-out")).to_have_count(0, timeout=UI_TIMEOUT)

        # The reuser's app sends the signed-out citizen to the authorize URL: sign in, and
        # come back to the consent screen.
        query = urlencode({"client_id": reuser.client_id, "request_uri": request_uri})
        page.goto(f"{live.url}/oauth/authorize?{query}")
        expect(page).to_have_url(re.compile(r"/sign-in\?next="), timeout=UI_TIMEOUT)
        page.fill("input[name=email]", email)
        page.fill("input[name=password]", PASSWORD)
        page.get_by_test_id("sign-in").click()
        screen = page.get_by_test_id("consent-screen")
        expect(screen).to_contain_text(reuser.organisation_name, timeout=UI_TIMEOUT)
        expect(page.get_by_test_id("consent-item")).to_have_count(1, timeout=UI_TIMEOUT)
        page.get_by_test_id("approve").click()
        page.wait_for_url(f"{REDIRECT_URI}?**", timeout=UI_TIMEOUT)
        assert len(callbacks) == 1, callbacks
        returned = parse_qs(urlsplit(callbacks[0]).query)
        assert set(returned) == {"code", "state", "iss"}
        assert returned["state"] == [state]
        assert returned["iss"] == [live.url]

        # The reuser's back end exchanges the code.
        status, body = _redeem(live, reuser, returned["code"][0], verifier)
        assert status == 200, body
        assert body["token_type"] == "Bearer"
        assert body["refresh_token"]
        [detail] = body["authorization_details"]
        assert detail["purpose"] == COACHING
        assert detail["mode"] == "individual"

        # The holder, whose API the token names, asks whether it may serve it.
        seen = _introspect(live, holder, body["access_token"])
        assert seen["active"] is True, seen
        assert seen["client_id"] == reuser.client_id
        assert seen["aud"] == holder.resource_uri
        assert seen["scope"] == "consent:read"
        [consent] = seen["consents"]
        assert consent["status"] == "given"
        consent_id = consent["id"]

        # The citizen withdraws that consent from "Mes consentements".
        page.goto(f"{live.url}/me/consents")
        expect(page.locator("h1")).to_have_text("Mes consentements", timeout=UI_TIMEOUT)
        page.locator(f'a[href="/me/consents/{consent_id}"]').click()
        page.get_by_test_id("withdraw").click()
        expect(page.get_by_test_id("status")).to_contain_text("retiré", timeout=UI_TIMEOUT)
    finally:
        context.close()

    assert _introspect(live, holder, body["access_token"]) == {"active": False}
    status, refused = _refresh(live, reuser, body["refresh_token"])
    assert status == 400, refused
    assert refused["error"] == "invalid_grant"


def test_twenty_concurrent_redemptions_of_one_code_give_one_token_then_revoke_it(
    live: Live,
) -> None:
    reuser = _reuser(live.app)
    code, verifier = _code(live, reuser)

    outcomes = _together(RACERS, lambda: _redeem(live, reuser, code, verifier))

    won = [body for status, body in outcomes if status == 200]
    lost = [(status, body) for status, body in outcomes if status != 200]
    assert len(won) == 1, outcomes
    assert len(lost) == RACERS - 1
    assert all(status == 400 and body["error"] == "invalid_grant" for status, body in lost), lost
    # A replayed code revokes every token issued from it: the winner's too.
    assert _introspect(live, reuser, won[0]["access_token"]) == {"active": False}
    assert _introspect(live, reuser, won[0]["refresh_token"]) == {"active": False}
    replays = _audit(live.app, "oauth:code:replay", f"client:{reuser.client_id}")
    assert len(replays) == RACERS - 1
    assert all(entry.reason == "code_replay" for entry in replays)
    # Each loser waited for the winner's commit, so each saw (and revoked) its grant.
    with live.app.app_context(), unit_of_work() as session:
        details = [audit.detail(session, entry.id) for entry in replays]
    assert all(detail["revoked_grants"] == 1 for detail in details), details


def test_twenty_concurrent_refreshes_never_leave_two_working_refresh_tokens(
    live: Live,
) -> None:
    reuser = _reuser(live.app)
    code, verifier = _code(live, reuser)
    status, first = _redeem(live, reuser, code, verifier)
    assert status == 200, first

    outcomes = _together(RACERS, lambda: _refresh(live, reuser, first["refresh_token"]))

    won = [body for status, body in outcomes if status == 200]
    lost = [(status, body) for status, body in outcomes if status != 200]
    assert len(won) <= 1, outcomes
    assert all(status == 400 and body["error"] == "invalid_grant" for status, body in lost), lost
    new_refresh = {body["refresh_token"] for body in won}
    working = [t for t in new_refresh if _introspect(live, reuser, t).get("active")]
    assert len(working) <= 1
    assert _introspect(live, reuser, first["refresh_token"]) == {"active": False}
    status, again = _refresh(live, reuser, first["refresh_token"])
    assert (status, again["error"]) == (400, "invalid_grant")
    # One of them rotated the token (the others found it spent), and a spent token coming
    # back revokes the whole family, as tokens.refresh documents: nothing of it works now.
    assert len(won) == 1, outcomes
    assert working == []
    assert _introspect(live, reuser, won[0]["access_token"]) == {"active": False}
    assert _audit(live.app, "oauth:refresh:replay", f"client:{reuser.client_id}")


def test_a_signed_out_citizen_sent_to_the_consent_screen_is_asked_to_sign_in(
    live: Live,
) -> None:
    reuser = _reuser(live.app)
    _, challenge = pkce()
    request_uri = _push(live, reuser, challenge)

    answer = requests.get(
        f"{live.url}/oauth/authorize",
        params={"client_id": reuser.client_id, "request_uri": request_uri},
        headers={"Accept": "text/html"},
        allow_redirects=False,
        timeout=HTTP_TIMEOUT,
    )

    assert answer.status_code in (302, 303), (answer.status_code, answer.text[:300])
    location = urlsplit(answer.headers["Location"])
    assert location.path == "/sign-in"
    [back] = parse_qs(location.query)["next"]
    assert back.startswith("/oauth/authorize?")
