"""The charter's optional privacy figures: what one reuser may spend per period, and the
relative error above which a released value is flagged. Absent, a reuser may spend the whole
period's budget and values are flagged above 50 % (tested throughout tests/anonymize)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from anonymize.models import BudgetCharge, Release
from charter import service as charters
from charter.document import CharterInvalidError, parse, to_dict
from tests.anonymize.conftest import spec
from tests.conftest import CHARTER

URL = "/api/v1/releases"
DEMO_PRIVACY = """privacy:
  unit: citizen
  period: year
  # zCDP budget per citizen across every dataset of the territory, per year; no single release
  # may spend more than a quarter of it
  rho_per_period: "1.0"
  rho_cap_per_release: "0.25"
  min_cohort: 10
"""


def publish_with(session: Any, extra: str) -> charters.Charter:
    """The demo charter again as version 2026.9, its privacy block with `extra` lines."""
    text = CHARTER.read_text(encoding="utf-8")
    assert DEMO_PRIVACY in text, "the demo charter's privacy block moved: update this test"
    text = text.replace('version: "2026.1"', 'version: "2026.9"').replace(
        DEMO_PRIVACY, DEMO_PRIVACY + extra
    )
    loaded, _ = charters.load(session, text)
    session.commit()
    return loaded


def test_a_reuser_may_spend_only_its_own_cap_of_the_period(client, observatory, stage, session):
    staged = stage()
    publish_with(session, '  rho_per_reuser_per_period: "0.3"\n')
    budgets = client.get("/api/v1/budgets", headers=observatory).get_json()
    assert Decimal(budgets["reuser"]["cap"]) == Decimal("0.3")
    assert Decimal(budgets["population"]["cap"]) == Decimal("1.0")
    first = client.post(URL, json=spec(staged, rho="0.25"), headers=observatory)
    assert first.status_code == 201, first.get_json()
    releases = session.scalar(select(func.count()).select_from(Release))
    charges = session.scalar(select(func.count()).select_from(BudgetCharge))
    refused = client.post(URL, json=spec(staged, rho="0.1", bucket="quarter"), headers=observatory)
    assert refused.status_code == 409
    assert refused.get_json()["type"] == "/problems/budget-exceeded"
    assert "0.05" in str(refused.get_json()["errors"])  # what the reuser has left
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Release)) == releases
    assert session.scalar(select(func.count()).select_from(BudgetCharge)) == charges


@pytest.mark.parametrize(("threshold", "expected"), [("0.001", True), ("10", False)])
def test_values_are_flagged_above_the_charters_relative_error(
    client, observatory, stage, session, threshold: str, expected: bool
):
    staged = stage(citizens=2000)
    publish_with(session, f'  max_relative_error: "{threshold}"\n')
    made = client.post(URL, json=spec(staged, measure="count", rho="0.25"), headers=observatory)
    assert made.status_code == 201, made.get_json()
    result = made.get_json()["result"]
    assert result["max_relative_error"] == float(threshold)
    shown = [cell["count"] for cell in result["cells"] if not cell["suppressed"]]
    assert shown, "every cell suppressed: stage more citizens"
    # About 100 citizens a cell, a half-width of a few units: above 0.1 %, below 1000 %.
    assert {found["low_accuracy"] for found in shown} == {expected}


@pytest.mark.parametrize(
    ("extra", "path", "message"),
    [
        ('  rho_per_reuser_per_period: "1.5"\n', "privacy.rho_per_reuser_per_period", "must not"),
        ('  rho_per_reuser_per_period: "-1"\n', "privacy.rho_per_reuser_per_period", "> 0"),
        ('  max_relative_error: "11"\n', "privacy.max_relative_error", "at most 10"),
        ("  max_relative_error: often\n", "privacy.max_relative_error", "decimal"),
    ],
)
def test_bad_privacy_figures_are_refused_with_their_path(extra: str, path: str, message: str):
    text = CHARTER.read_text(encoding="utf-8").replace(DEMO_PRIVACY, DEMO_PRIVACY + extra)
    with pytest.raises(CharterInvalidError) as caught:
        parse(text)
    assert any(e.startswith(path) and message in e for e in caught.value.errors), (
        caught.value.errors
    )


def test_absent_figures_leave_the_canonical_form_as_it_was():
    privacy = to_dict(parse(CHARTER.read_text(encoding="utf-8")))["privacy"]
    assert set(privacy) == {"unit", "period", "rho_per_period", "rho_cap_per_release", "min_cohort"}
    text = CHARTER.read_text(encoding="utf-8").replace(
        DEMO_PRIVACY, DEMO_PRIVACY + '  max_relative_error: "0.25"\n'
    )
    assert to_dict(parse(text))["privacy"]["max_relative_error"] == "0.25"
