"""The charter over HTTP and the `tiers charter` commands: all errors listed, nothing stored."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func, select

from audit.models import AuditEntry
from broker.cli import main
from charter.models import CharterVersion
from tests.conftest import CHARTER, CHARTER_V2

BROKEN = """
version: "2026.9"
effective_from: 2026-01-01
territory: {name: Test, code: T, partitions: {districts: [{id: D1, name: Un}]}}
data_categories:
  - {id: energy.daily, title: {fr: Énergie, en: Energy}, sensitivity: low}
reuser_categories:
  - {id: company, title: {fr: Entreprise, en: Company}}
purposes:
  - id: coaching
    title: {fr: Conseil}
    description: {fr: Conseil, en: Coaching}
    citizen_keeps: {fr: Tout, en: Everything}
    data_categories: [energy.daily]
    reuser_categories: [compagny]
    recipients: category
    modes: [everything]
    retention_days: 365
    approval: auto
    consent_max_days: 365
privacy: {unit: citizen, period: year, rho_per_period: "1.0", rho_cap_per_release: "0.5", min_cohort: 10}
"""


def test_the_current_charter_and_its_versions_are_public(client, charter):
    current = client.get("/api/v1/charter")
    assert current.status_code == 200
    body = current.get_json()
    assert body["version"] == charter.version
    assert body["sha256"] == charter.row.sha256
    assert set(body["notice_hashes"]["energy-coaching"]) == {"fr", "en"}
    assert client.get(f"/api/v1/charter/versions/{charter.version}").get_json() == body
    assert [v["version"] for v in client.get("/api/v1/charter/versions").get_json()] == [
        charter.version
    ]


def test_the_odrl_form_has_one_set_per_purpose(client, charter):
    response = client.get(f"/api/v1/charter/versions/{charter.version}/odrl")
    assert response.mimetype == "application/ld+json"
    graph = response.get_json()["@graph"]
    assert len(graph) == len(charter.doc.purposes)


def test_an_unknown_version_is_a_404_problem(client, charter):
    response = client.get("/api/v1/charter/versions/1999.1")
    assert response.status_code == 404
    assert response.get_json()["type"] == "/problems/not-found"


def test_no_charter_yet_is_a_404_problem_not_a_500(client):
    response = client.get("/api/v1/charter")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def _cli(app, *args):
    return CliRunner().invoke(main, list(args), obj=_ScriptInfo(app), catch_exceptions=False)


class _ScriptInfo:
    """Hand the test app to the Flask CLI group instead of building one from the environment."""

    def __new__(cls, app):
        from flask.cli import ScriptInfo

        return ScriptInfo(create_app=lambda: app)


def test_loading_an_invalid_charter_lists_every_error_and_stores_nothing(
    app, session, tmp_path: Path
):
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    before = session.scalar(select(func.count()).select_from(AuditEntry))
    result = _cli(app, "charter", "load", str(path))
    assert result.exit_code == 1
    assert 'purposes[0].reuser_categories[0]: unknown category "compagny"' in result.output
    assert "purposes[0].title.en" in result.output
    assert "purposes[0].modes" in result.output
    assert "Traceback" not in result.output
    assert session.scalar(select(func.count()).select_from(CharterVersion)) == 0
    assert session.scalar(select(func.count()).select_from(AuditEntry)) == before


def test_load_then_diff_two_versions_from_the_command_line(app, session):
    first = _cli(app, "charter", "load", str(CHARTER))
    assert first.exit_code == 0, first.output
    assert "published" in first.output
    again = _cli(app, "charter", "load", str(CHARTER))
    assert "already published" in again.output
    assert _cli(app, "charter", "load", str(CHARTER_V2)).exit_code == 0
    diff = _cli(app, "charter", "diff", "2026.1", "2026.2")
    assert diff.exit_code == 0, diff.output
    assert "energy-coaching" in diff.output
    assert "retention_days" in diff.output
    publications = session.scalars(
        select(AuditEntry).where(AuditEntry.event == "charter:version:publish")
    ).all()
    assert len(publications) == 2


def test_the_same_version_with_other_content_is_refused(app, session, tmp_path: Path):
    assert _cli(app, "charter", "load", str(CHARTER)).exit_code == 0
    altered = tmp_path / "altered.yaml"
    altered.write_text(
        CHARTER.read_text(encoding="utf-8").replace(
            "retention_days: 365", "retention_days: 366", 1
        ),
        encoding="utf-8",
    )
    result = _cli(app, "charter", "load", str(altered))
    assert result.exit_code == 1
    assert "already exists" in result.output


def test_keys_rotate_adds_a_key_that_jwks_publishes(app, client):
    before = len(client.get("/.well-known/jwks.json").get_json()["keys"])
    result = _cli(app, "keys", "rotate")
    assert result.exit_code == 0
    after = client.get("/.well-known/jwks.json").get_json()["keys"]
    assert len(after) == before + 1
