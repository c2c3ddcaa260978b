"""The statistics pages: the public privacy statement; an observatory's releases for the
portal accounts acting for it (chart, tile map, table, downloads, budget), and no one else's;
the memberships that open them."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

import pytest
from sqlalchemy import func, select

from anonymize import views
from anonymize.maps import CLASSES, number
from audit import service as audit
from audit.models import AuditEntry
from broker.cli import main
from broker.models import OrganisationMember
from broker.service import organisations
from common.errors import ConflictError, ForbiddenError, NotFoundError
from consent import accounts
from tests.anonymize.conftest import DISTRICTS, spec, synthetic
from tests.anonymize.pages import make_release, table_rows
from tests.conftest import PASSWORD, bearer_for, sign_in

RHO = "\N{GREEK SMALL LETTER RHO}"
RELEASES = "/api/v1/releases"
NS = "{http://www.w3.org/2000/svg}"
FIGURE = re.compile(r'<figure class="maps__item" data-testid="map">\s*(<svg.*?</svg>)\s*'
                    r"<figcaption>(.*?)</figcaption>", re.S)  # fmt: skip
CELL = re.compile(r'<tr data-testid="cell" data-time="([^"]*)" data-area="([^"]*)" '
                  r'data-suppressed="(true|false)">')  # fmt: skip


def svg(text: str) -> ElementTree.Element:
    return ElementTree.fromstring(text)  # noqa: S314 (our own output)


def maps_of(html: str) -> list[tuple[str, ElementTree.Element]]:
    """(caption, svg) of each tile map of a page."""
    return [(caption, svg(body)) for body, caption in FIGURE.findall(html)]


def test_the_privacy_statement_needs_a_charter(client):
    response = client.get("/statistics")
    assert response.status_code == 404
    assert "Aucune charte" in response.get_data(as_text=True)


def test_the_privacy_statement_shows_the_budget_and_what_is_left(client, observatory, stage):
    page = client.get("/statistics").get_data(as_text=True)
    assert f"{RHO} = 0 / 1\n" in page
    assert "Vous êtes l&#39;unité protégée" in page or "Vous êtes l'unité protégée" in page
    assert "inférieur à 10" in page  # the charter's minimum cohort
    staged = stage()
    made = client.post("/api/v1/releases", json=spec(staged, rho="0.1"), headers=observatory)
    assert made.status_code == 201
    page = client.get("/statistics").get_data(as_text=True)
    assert f"{RHO} = {made.get_json()['rho']} / 1\n" in page
    assert '<dd data-testid="releases-made">1</dd>' in page


def test_the_privacy_statement_is_in_english_too(client, charter):
    with client.session_transaction() as browser:
        browser["lang"] = "en"
    page = client.get("/statistics").get_data(as_text=True)
    assert "You are the protected unit" in page
    assert "at δ = 1e-07" in page


# --- the observatory's pages -------------------------------------------------------------


@dataclass
class Member:
    """A portal account acting for an observatory, and a token of the same observatory."""

    browser: Any  # FlaskClient, signed in
    email: str
    slug: str
    token: dict[str, str]


@pytest.fixture
def make_member(app, arranging_app, session, make_client, charter):
    def make(role: str = "observatory", category: str = "public_service") -> Member:
        registered = make_client(role, scope="releases:read releases:write", category=category)
        slug = registered.model.organisation.slug
        signed = sign_in(app, session)
        organisations.add_member(session, signed.email, slug, actor="test")
        session.commit()
        asks = role in ("observatory", "city_service")  # only they hold releases:write
        return Member(
            signed.client,
            signed.email,
            slug,
            bearer_for(session, registered.model, "releases:read releases:write") if asks else {},
        )

    return make


@pytest.fixture
def member(make_member) -> Member:
    return make_member()


def released(client, member: Member, staged, **overrides) -> dict[str, Any]:
    made = client.post(RELEASES, json=spec(staged, **overrides), headers=member.token)
    assert made.status_code == 201, made.get_json()
    return made.get_json()


PAGES = ("/statistics/releases", "/statistics/releases/{id}", "/statistics/releases/{id}.csv",
         "/statistics/releases/{id}.json")  # fmt: skip


@pytest.mark.parametrize("page", PAGES)
def test_anonymous_visitors_are_sent_to_the_sign_in_page(client, page):
    response = client.get(page.format(id=uuid.uuid4()))
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/sign-in?next=/statistics/releases")


@pytest.mark.parametrize("page", PAGES)
def test_a_citizen_who_acts_for_no_observatory_gets_403(client, citizen, member, stage, page):
    made = released(client, member, stage())
    response = citizen.client.get(page.format(id=made["id"]))
    assert response.status_code == 403
    assert "réservées aux observatoires" in response.get_data(as_text=True)


def test_a_member_of_a_reuser_gets_403_and_of_a_suspended_observatory_too(
    client, make_member, session
):
    reuser = make_member("reuser", "company")
    assert reuser.browser.get("/statistics/releases").status_code == 403
    observatory = make_member()
    assert observatory.browser.get("/statistics/releases").status_code == 200
    found = organisations.get_organisation_by_slug(session, observatory.slug)
    organisations.update_organisation(session, found.id, actor="test", suspended=True)
    session.commit()
    assert observatory.browser.get("/statistics/releases").status_code == 403


def test_without_the_brokers_answer_nobody_sees_releases(app, member):
    del app.extensions[views.REQUESTER_EXTENSION]
    assert member.browser.get("/statistics/releases").status_code == 403


def test_a_member_lists_its_own_releases_only(client, member, make_member, stage):
    other = make_member()
    staged = stage()
    mine = released(client, member, staged)
    theirs = released(client, other, staged, measure="count")
    page = member.browser.get("/statistics/releases")
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    html = page.get_data(as_text=True)
    assert f'data-id="{mine["id"]}"' in html
    assert theirs["id"] not in html
    assert 'data-testid="budget-organisation"' in html
    assert not re.search(RHO + r" = \d+\.\d*0000\b", html)  # exact, without trailing zeros


def test_an_empty_list_says_how_to_ask(member):
    html = member.browser.get("/statistics/releases").get_data(as_text=True)
    assert 'data-testid="no-releases"' in html
    assert f"{RHO} = 1 restant sur 1" in html  # nothing spent yet


@pytest.mark.parametrize("suffix", ["", ".csv", ".json"])
def test_another_observatorys_release_answers_404(client, member, make_member, stage, suffix):
    theirs = released(client, make_member(), stage())
    response = member.browser.get(f"/statistics/releases/{theirs['id']}{suffix}")
    assert response.status_code == 404
    assert "text/html" in response.content_type  # the portal's 404 page, nothing of theirs
    assert 'data-testid="release-facts"' not in response.get_data(as_text=True)
    assert member.browser.get(f"/statistics/releases/{uuid.uuid4()}{suffix}").status_code == 404


def test_a_release_page_has_its_chart_maps_table_downloads_and_budget(client, member, stage):
    made = released(client, member, stage())
    response = member.browser.get(f"/statistics/releases/{made['id']}")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    chart = svg(re.search(r'<figure class="chart" data-testid="chart">.*?(<svg.*?</svg>)',
                          html, re.S).group(1))  # fmt: skip
    assert chart.get("role") == "img"
    assert chart.find(f"{NS}title") is not None
    assert chart.find(f"{NS}desc") is not None
    drawn = maps_of(html)
    assert [caption for caption, _ in drawn] == ["2026-01", "2026-02", "2026-03"]
    for _, tile_map in drawn:
        assert tile_map.get("role") == "img"
        assert tile_map.find(f"{NS}title").text.startswith("mean")
        assert tile_map.find(f"{NS}desc").text
        tiles = tile_map.findall(f"{NS}g")
        assert [t.get("data-area") for t in tiles] == list(DISTRICTS)
        centre = next(t for t in tiles if t.get("data-area") == "D01")
        assert centre.find(f"{NS}title").text.startswith("D01 Centre-ville: ")
        rect = centre.find(f"{NS}rect")
        assert (rect.get("x"), rect.get("y")) == ("144", "144")  # its tile [2, 2]
    cells = made["result"]["cells"]
    rows = CELL.findall(html)
    assert len(rows) == len(cells) == 60
    for row, cell in zip(rows, cells, strict=True):
        assert row == (cell["time"], cell["area"], str(cell["suppressed"]).lower())
    suppressed = [c for c in cells if c["suppressed"]]
    assert html.count('data-testid="flag-suppressed"') == len(suppressed)
    assert 'data-testid="map-legend"' in html
    assert f'href="/statistics/releases/{made["id"]}.csv"' in html
    assert f'href="/statistics/releases/{made["id"]}.json"' in html
    assert 'data-testid="budget-population"' in html
    assert "Valeurs et intervalles à 95 %" in html
    assert "%%" not in html


def test_suppressed_and_low_accuracy_areas_are_not_coloured_as_data(client, member, stage):
    # 60 citizens over 20 districts: most cells fall under the minimum cohort.
    made = released(client, member, stage(citizens=60), rho="0.01")
    html = member.browser.get(f"/statistics/releases/{made['id']}").get_data(as_text=True)
    by_key = {(c["time"], c["area"]): c for c in made["result"]["cells"]}
    seen = set()
    for time, tile_map in maps_of(html):
        for tile in tile_map.findall(f"{NS}g"):
            cell = by_key[(time, tile.get("data-area"))]
            state, fill = tile.get("data-state"), tile.find(f"{NS}rect").get("fill")
            seen.add(state)
            if cell["suppressed"] or cell["mean"]["value"] is None:
                assert state == "suppressed"
                assert fill.startswith("url(#map-")
            elif cell["mean"]["low_accuracy"]:
                assert (state, fill) == ("low-accuracy", "#ffffff")
            else:
                assert state.startswith("class-")
                assert fill in CLASSES
    assert "suppressed" in seen


def test_a_release_without_areas_has_no_map(client, member, stage):
    made = released(client, member, stage(), partition=None, measure="count")
    html = member.browser.get(f"/statistics/releases/{made['id']}").get_data(as_text=True)
    assert 'data-testid="maps"' not in html
    assert 'data-testid="chart"' in html


def test_downloads_are_the_apis_csv_and_json(client, member, stage):
    made = released(client, member, stage())
    base = f"/statistics/releases/{made['id']}"
    as_csv = member.browser.get(f"{base}.csv")
    assert as_csv.status_code == 200
    assert as_csv.mimetype == "text/csv"
    assert "attachment" in as_csv.headers["Content-Disposition"]
    assert as_csv.headers["Cache-Control"] == "no-store"
    api_csv = client.get(f"{RELEASES}/{made['id']}/csv", headers=member.token)
    assert as_csv.get_data() == api_csv.get_data()
    rows = list(csv.reader(io.StringIO(as_csv.get_data(as_text=True))))
    assert len(rows) == 61
    as_json = member.browser.get(f"{base}.json")
    assert as_json.mimetype == "application/json"
    assert json.loads(as_json.get_data()) == made


def _count(value: float) -> str:
    return str(int(value))  # noisy counts are whole (and below a thousand here)


def _interval(found: dict[str, Any]) -> str:
    low, high = found["ci95"]
    return f"{number(low)} \N{EN DASH} {number(high)}"


def test_a_histogram_release_shows_every_bin_of_every_cell(client, member, stage, session):
    organisation = organisations.get_organisation_by_slug(session, member.slug)
    made = make_release(session, organisation, stage(), measure="histogram",
                        bins=["0", "100", "200", "400"])  # fmt: skip
    result = made["result"]
    assert result["bins"] == [0.0, 100.0, 200.0, 400.0]
    html = member.browser.get(f"/statistics/releases/{made['id']}").get_data(as_text=True)
    labels = ["[0, 100)", "[100, 200)", "[200, 400]"]  # the last one holds the upper bound
    rows = table_rows(html, "bins")
    expected = []
    for cell in result["cells"]:
        keys = [cell["time"], cell["area"]]
        if cell["suppressed"]:
            expected.append([*keys, "total", "—", "—", "masquée"])
            continue
        for label, found in zip(labels, cell["histogram"], strict=True):
            assert found["bin"] == [float(label[1:].split(",")[0]),
                                    float(label.split(", ")[1][:-1])]  # fmt: skip
            flag = "peu précise" if found["low_accuracy"] else ""
            expected.append([*keys, label, _count(found["value"]), _interval(found), flag])
        total = cell["count"]
        flag = "peu précise" if total["low_accuracy"] else ""
        expected.append([*keys, "total", _count(total["value"]), _interval(total), flag])
    assert [texts for _, texts in rows] == expected
    assert any(not c["suppressed"] for c in result["cells"])
    assert 'data-testid="cells"' not in html  # not the generic table of one value per cell
    # The chart: the first cells' histograms, a bar per bin with its interval.
    drawn = re.findall(r'<figure class="maps__item" data-testid="histogram">\s*(<svg.*?</svg>)'
                       r"\s*<figcaption>(.*?)</figcaption>", html, re.S)  # fmt: skip
    assert len(drawn) == views.MAX_HISTOGRAMS
    assert "48 cases de plus ne sont pas dessinées" in html
    for (body, caption), cell in zip(drawn, result["cells"], strict=False):
        assert caption == f"{cell['time']} · {cell['area']}"
        chart = svg(body)
        assert chart.get("role") == "img"
        assert chart.find(f"{NS}title").text == f"Histogramme — {caption}"
        assert chart.find(f"{NS}desc").text
        bars = chart.findall(f"{NS}g")
        if cell["suppressed"]:
            assert bars == []
            continue
        tips = [bar.find(f"{NS}title").text for bar in bars]
        assert [t.split(":")[0] for t in tips] == labels
        assert [t.split(": ")[1].split(" ")[0] for t in tips] == [
            number(f["value"]) for f in cell["histogram"]
        ]
        assert [len(bar.findall(f"{NS}line")) for bar in bars] == [1, 1, 1]  # error bars
    # The maps keep showing the count.
    for _, tile_map in maps_of(html):
        assert tile_map.find(f"{NS}title").text.startswith("count")
    # The CSV has every bin of every cell.
    lines = list(csv.reader(io.StringIO(
        member.browser.get(f"/statistics/releases/{made['id']}.csv").get_data(as_text=True))))  # fmt: skip
    assert lines[0][4:6] == ["bin_low", "bin_high"]
    assert len(lines) == 1 + 3 * len(result["cells"])
    assert [line[4:6] for line in lines[1:4]] == [["0.0", "100.0"], ["100.0", "200.0"],
                                                  ["200.0", "400.0"]]  # fmt: skip


def test_a_quantile_release_shows_each_q_with_the_bin_it_falls_in(client, member, stage, session):
    organisation = organisations.get_organisation_by_slug(session, member.slug)
    made = make_release(session, organisation, stage(), measure="quantile", partition=None,
                        bin_count=8, quantiles=["0.25", "0.5", "0.9"])  # fmt: skip
    result = made["result"]
    assert result["quantiles"] == [0.25, 0.5, 0.9]
    assert result["bins"] == [50.0 * i for i in range(9)]
    html = member.browser.get(f"/statistics/releases/{made['id']}").get_data(as_text=True)
    rows = table_rows(html, "quantiles")
    expected = []
    for cell in result["cells"]:
        assert not cell["suppressed"]  # 400 citizens a month
        for found in cell["quantiles"]:
            lo, hi = found["interval"]
            label = f"[{lo:g}, {hi:g}{']' if hi == 400 else ')'}"
            flag = "peu précise" if found["low_accuracy"] else ""
            q = f"{found['q']:g}"
            expected.append([cell["time"], q, number(found["value"]), label, flag])
    assert [texts for _, texts in rows] == expected
    assert [attrs["data-q"] for attrs, _ in rows[:3]] == ["0.25", "0.5", "0.9"]
    assert "pas un intervalle de confiance" in html
    # The histogram they are read off, every bin of every cell.
    bins = table_rows(html, "bins")
    assert len(bins) == len(result["cells"]) * 9
    assert [texts[1] for texts in (t for _, t in bins[:9])] == [
        "[0, 50)", "[50, 100)", "[100, 150)", "[150, 200)", "[200, 250)", "[250, 300)",
        "[300, 350)", "[350, 400]", "total"]  # fmt: skip
    # The chart: each quantile's value, its bin as the bar.
    chart = svg(re.search(r'<figure class="chart" data-testid="chart">.*?(<svg.*?</svg>)',
                          html, re.S).group(1))  # fmt: skip
    assert chart.get("role") == "img"
    assert "classe de l'histogramme" in chart.find(f"{NS}desc").text
    labels = [t.text for t in chart.iter(f"{NS}text")]
    assert labels[0] == "quantile (kWh)"
    assert "2026-01 · q = 0.5" in labels
    dots = [c.find(f"{NS}title").text for c in chart.iter(f"{NS}circle")]
    assert len(dots) == 9
    assert dots[1] == f"2026-01 · q = 0.5: {result['cells'][0]['quantiles'][1]['value']:.6g}"
    assert len(chart.findall(f"{NS}line")) == 1 + 9  # the zero line, a bar per quantile
    assert 'data-testid="maps"' not in html
    lines = list(csv.reader(io.StringIO(
        member.browser.get(f"/statistics/releases/{made['id']}.csv").get_data(as_text=True))))  # fmt: skip
    assert [line[4] for line in lines[1:]] == ["0.25", "0.5", "0.9"] * 3


def test_histogram_pages_are_in_english_too(client, member, stage, session):
    organisation = organisations.get_organisation_by_slug(session, member.slug)
    made = make_release(session, organisation, stage(), measure="quantile", partition=None,
                        bin_count=4, quantiles=["0.5"])  # fmt: skip
    with member.browser.session_transaction() as browser:
        browser["lang"] = "en"
    html = member.browser.get(f"/statistics/releases/{made['id']}").get_data(as_text=True)
    assert "The noisy histogram" in html
    assert "not a confidence interval" in html
    assert "%%" not in html


def test_the_observatory_pages_are_in_english_too(client, member, stage):
    made = released(client, member, stage())
    with member.browser.session_transaction() as browser:
        browser["lang"] = "en"
    html = member.browser.get(f"/statistics/releases/{made['id']}").get_data(as_text=True)
    assert "Download as CSV" in html
    assert "All the values" in html
    assert "Centre-ville: " in html
    assert "95 % interval" in html
    assert "Values and 95 % intervals" in html
    assert "%%" not in html
    listing = member.browser.get("/statistics/releases").get_data(as_text=True)
    assert "Our statistics" in listing


# --- memberships ---------------------------------------------------------------------------


def test_a_membership_is_idempotent_and_audited_once(session, make_client, charter):
    slug = make_client("observatory", category="public_service").model.organisation.slug
    accounts.sign_up(session, email="obs@example.org", password=PASSWORD)
    first = organisations.add_member(session, "OBS@example.org", slug, actor="test")
    again = organisations.add_member(session, "obs@example.org", slug, actor="test")
    session.commit()
    assert first.id == again.id
    entries = session.scalars(select(AuditEntry).where(AuditEntry.event == "admin:member:add"))
    (entry,) = entries.all()
    assert entry.actor == "test"
    assert entry.subject_tag is not None  # the account, by its subject tag
    detail = audit.detail(session, entry.id)
    assert detail == {"member": str(first.id), "organisation": slug}
    assert "obs@" not in json.dumps([entry.actor, detail, entry.subject_tag])


def test_a_membership_needs_an_account_an_organisation_and_only_one(session, make_client, charter):
    slug = make_client("observatory", category="public_service").model.organisation.slug
    other = make_client("observatory", category="public_service").model.organisation.slug
    with pytest.raises(NotFoundError, match="signs up first"):
        organisations.add_member(session, "nobody@example.org", slug)
    accounts.sign_up(session, email="obs@example.org", password=PASSWORD)
    with pytest.raises(NotFoundError):
        organisations.add_member(session, "obs@example.org", "no-such-organisation")
    organisations.add_member(session, "obs@example.org", slug)
    with pytest.raises(ConflictError, match="another organisation"):
        organisations.add_member(session, "obs@example.org", other)


def test_a_suspended_organisation_gets_no_member(session, make_client, charter):
    organisation = make_client("observatory", category="public_service").model.organisation
    organisations.update_organisation(session, organisation.id, actor="test", suspended=True)
    accounts.sign_up(session, email="obs@example.org", password=PASSWORD)
    with pytest.raises(ForbiddenError, match="suspended"):
        organisations.add_member(session, "obs@example.org", organisation.slug)


def test_member_add_on_the_command_line(app, session, make_client, charter):
    slug = make_client("observatory", category="public_service").model.organisation.slug
    runner = app.test_cli_runner()
    refused = runner.invoke(main, ["member", "add", "obs@example.org", slug])
    assert refused.exit_code == 1
    assert "signs up first" in refused.stderr
    accounts.sign_up(session, email="obs@example.org", password=PASSWORD)
    session.commit()
    added = runner.invoke(main, ["member", "add", "obs@example.org", slug])
    assert added.exit_code == 0, added.stderr
    assert f"acts for organisation {slug}" in added.stdout
    unknown = runner.invoke(main, ["member", "add", "obs@example.org", "nope"])
    assert unknown.exit_code == 1
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(OrganisationMember)) == 1


# --- the citizen's view --------------------------------------------------------------------


def test_a_citizen_sees_how_many_releases_their_data_went_into(
    client, citizen, other_citizen, member, stage
):
    records = synthetic(400)
    mine = records[0].subject_id
    records = [
        dataclasses.replace(r, subject_id=citizen.subject_id) if r.subject_id == mine else r
        for r in records
    ]
    staged = stage(records=records)
    before = citizen.client.get("/statistics/me")
    assert before.status_code == 200
    assert 'data-releases="0"' in before.get_data(as_text=True)
    released(client, member, staged)
    released(client, member, staged, measure="count", rho="0.05")
    html = citizen.client.get("/statistics/me").get_data(as_text=True)
    assert 'data-releases="2"' in html
    assert "Vos données ont contribué à 2 statistiques publiées cette période" in html
    assert re.search(RHO + r" = 0\.\d+, soit \u03b5 = \d+\.\d{3} \(\u03b4 = 1e-07\)", html), html
    assert 'href="/statistics"' in html
    assert 'data-releases="0"' in other_citizen.client.get("/statistics/me").get_data(as_text=True)


def test_the_citizens_view_needs_a_sign_in_and_is_linked_from_the_navigation(client, citizen):
    response = client.get("/statistics/me")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/sign-in")
    home = citizen.client.get("/").get_data(as_text=True)
    assert 'href="/statistics/me"' in home
    assert 'data-testid="nav-releases"' not in home


def test_members_find_their_releases_in_the_navigation(member):
    assert 'data-testid="nav-releases"' in member.browser.get("/").get_data(as_text=True)
