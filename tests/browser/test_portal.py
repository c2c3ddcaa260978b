"""The citizen's journey in a real headless Chromium against a real server (Debian's chromium,
driven by Playwright): sign up, give a consent, download its receipt, withdraw it, read the
history — in French, then in English."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from playwright.sync_api import Browser, Page, expect

from broker.service import publish_charter
from common.db import unit_of_work
from tests.conftest import CHARTER, ISSUER, PASSWORD
from tests.live import own_app, serve

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # A server of its own on a SQLite file: the browser's requests commit for real.
    app = own_app(tmp_path_factory.mktemp("portal"), "portal")
    with app.app_context(), unit_of_work() as session:
        publish_charter(session, CHARTER.read_text(encoding="utf-8"), actor="browser-test")
    with serve(app) as url:
        yield url


def _journey(page: Page, server: str, email: str, words: dict[str, str], tmp: Path) -> None:
    page.goto(f"{server}/sign-up")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=password_again]", PASSWORD)
    page.get_by_test_id("sign-up").click()
    expect(page.locator("h1")).to_have_text(words["my_consents"])

    page.goto(f"{server}/charter/energy-coaching")
    expect(page.get_by_test_id("notice")).to_contain_text(words["notice_word"])
    page.get_by_role("link", name=words["give_link"]).click()
    page.get_by_test_id("give").click()
    expect(page.get_by_test_id("status")).to_contain_text(words["given"])

    with page.expect_download() as download_info:
        page.get_by_test_id("receipt").click()
    receipt = tmp / download_info.value.suggested_filename
    download_info.value.save_as(receipt)
    token = receipt.read_text().strip()
    jwks = page.request.get(f"{server}/.well-known/jwks.json").json()
    jwk = next(k for k in jwks["keys"] if k["kid"] == jwt.get_unverified_header(token)["kid"])
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"], issuer=ISSUER)
    assert claims["consent"]["purpose"]["id"] == "energy-coaching"

    page.get_by_test_id("withdraw").click()
    expect(page.get_by_test_id("status")).to_contain_text(words["withdrawn"])
    history = page.get_by_test_id("history")
    expect(history).to_contain_text(words["history_given"])
    expect(history).to_contain_text(words["history_withdrawn"])


def test_the_consent_journey_in_french(browser: Browser, server: str, tmp_path: Path) -> None:
    page = browser.new_context(accept_downloads=True).new_page()
    page.goto(server)
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    _journey(
        page,
        server,
        "journey-fr@example.org",
        {
            "my_consents": "Mes consentements",
            "notice_word": "Vos données",
            "give_link": "Donner mon consentement",
            "given": "donné",
            "withdrawn": "retiré",
            "history_given": "Consentement donné",
            "history_withdrawn": "Consentement retiré",
        },
        tmp_path,
    )


def test_the_consent_journey_in_english(browser: Browser, server: str, tmp_path: Path) -> None:
    page = browser.new_context(accept_downloads=True).new_page()
    page.goto(server)
    page.get_by_test_id("lang-switch").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    _journey(
        page,
        server,
        "journey-en@example.org",
        {
            "my_consents": "My consents",
            "notice_word": "Your data",
            "give_link": "Give my consent",
            "given": "given",
            "withdrawn": "withdrawn",
            "history_given": "Consent given",
            "history_withdrawn": "Consent withdrawn",
        },
        tmp_path,
    )


def test_a_citizen_closes_their_account(browser: Browser, server: str) -> None:
    page = browser.new_context().new_page()
    page.goto(f"{server}/sign-up")
    page.fill("input[name=email]", "leaving@example.org")
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=password_again]", PASSWORD)
    page.get_by_test_id("sign-up").click()
    page.goto(f"{server}/charter/energy-coaching")
    page.get_by_role("link", name="Donner mon consentement").click()
    page.get_by_test_id("give").click()
    expect(page.get_by_test_id("status")).to_contain_text("donné")

    page.goto(f"{server}/me")
    page.get_by_test_id("close-account-link").click()
    expect(page.locator("h1")).to_have_text("Fermer mon compte")
    page.fill("input[name=password]", "not my password")
    page.get_by_test_id("close-account").click()
    expect(page.get_by_test_id("error-password")).to_contain_text("incorrect")
    expect(page.locator("input[name=password]")).to_have_attribute("aria-invalid", "true")

    page.fill("input[name=password]", PASSWORD)
    page.get_by_test_id("close-account").click()
    expect(page.get_by_test_id("flash-success")).to_contain_text("Votre compte est fermé")

    page.goto(f"{server}/sign-in")
    page.fill("input[name=email]", "leaving@example.org")
    page.fill("input[name=password]", PASSWORD)
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_test_id("sign-in-error")).to_be_visible()
