"""An observatory's member in a real headless Chromium against a real server: sign in, open
the observatory's release, read its tile map (each area's value on hover), its table, and
download it as CSV — then the citizen's own view, in English."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from datetime import date
from decimal import Decimal

import pytest
from playwright.sync_api import Browser, expect
from sqlalchemy import select
from sqlalchemy.orm import Session

from anonymize import service as releases
from broker import territory
from broker.models import Role
from broker.service import organisations, publish_charter
from common.db import unit_of_work
from consent import accounts
from consent.models import Citizen
from tests.anonymize.conftest import PURPOSE, RECIPIENT, make_profile, synthetic
from tests.conftest import CHARTER, PASSWORD
from tests.live import own_app, serve

pytestmark = pytest.mark.browser
MEMBER = "observatoire@example.org"


def _always(session: object, **_kw: object) -> bool:
    return True  # the grant itself is tested in tests/anonymize; here, the pages


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A server of its own on a SQLite file, with one release of an observatory whose member
    can sign in; yields the base URL and the release id."""
    app = own_app(tmp_path_factory.mktemp("statistics"), "statistics")
    profile = make_profile()
    with app.app_context():
        with unit_of_work() as session:
            publish_charter(session, CHARTER.read_text(encoding="utf-8"), actor="browser-test")
            observatory = territory.organisation(
                session,
                "observatoire-test",
                "Observatoire",
                Role.OBSERVATORY,
                category="public_service",
                actor="browser-test",
            )
            accounts.sign_up(session, email=MEMBER, password=PASSWORD)
            session.flush()
            organisations.add_member(session, MEMBER, observatory.slug, actor="browser-test")
            releases.stage_records(
                session, profile, PURPOSE, synthetic(600), retention_days=730, recipient=RECIPIENT
            )
        with unit_of_work() as session:
            requester = organisations.member_requester(session, _member_id(session))
            assert requester is not None
            spec = releases.ReleaseSpec(
                dataset_id=profile.dataset_id,
                purpose=PURPOSE,
                measure="mean",
                start=date(2026, 1, 1),
                end=date(2026, 4, 1),
                partition="districts",
                rho=Decimal("0.2"),
            )
            made, _ = releases.release(session, spec, requester, grants=_always)
            release_id = str(made.id)
    with serve(app) as url:
        yield url, release_id


def _member_id(session: Session) -> uuid.UUID:
    found = session.scalar(select(Citizen.id).where(Citizen.email == MEMBER))
    assert found is not None
    return found


def test_an_observatory_reads_its_release_as_a_map_and_downloads_it(
    browser: Browser, server: tuple[str, str]
) -> None:
    base, release_id = server
    page = browser.new_context(accept_downloads=True).new_page()
    page.goto(f"{base}/statistics/releases")  # signed out: the sign-in page, then back
    page.fill("input[name=email]", MEMBER)
    page.fill("input[name=password]", PASSWORD)
    page.locator("form button[type=submit]").last.click()
    expect(page.locator("h1")).to_have_text("Nos statistiques")
    expect(page.get_by_test_id("nav-releases")).to_be_visible()
    page.get_by_test_id("open-release").first.click()
    expect(page).to_have_url(f"{base}/statistics/releases/{release_id}")

    maps = page.get_by_test_id("map")
    expect(maps).to_have_count(3)
    first = maps.first.locator("svg")
    expect(first).to_have_attribute("role", "img")
    centre = first.locator("g[data-area='D01']")
    expect(centre).to_be_visible()
    assert centre.locator("title").text_content().startswith("D01 Centre-ville: ")
    box = centre.locator("rect").bounding_box()
    west = first.locator("g[data-area='D07']").locator("rect").bounding_box()
    assert box is not None
    assert west is not None
    assert west["x"] < box["x"]  # Les Tanneries sits west of the centre, as its tile says
    assert abs(west["y"] - box["y"]) < 1
    expect(page.get_by_test_id("cell")).to_have_count(60)
    expect(page.get_by_test_id("budget-organisation")).to_contain_text(
        "\N{GREEK SMALL LETTER RHO} ="
    )

    with page.expect_download() as download:
        page.get_by_test_id("download-csv").click()
    body = download.value.path().read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0][:4] == ["time", "area", "category", "suppressed"]
    assert len(rows) == 61

    page.get_by_test_id("lang-switch").click()
    expect(page.get_by_test_id("download-csv")).to_have_text("Download as CSV")
    page.goto(f"{base}/statistics/me")
    expect(page.locator("h1")).to_have_text("My data in statistics")
    expect(page.get_by_test_id("privacy-link")).to_be_visible()
