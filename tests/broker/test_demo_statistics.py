"""`tiers demo-statistics` against the demo electricity distributor served for real: a panel
that signs up, pairs its meters and consents; its daily energy ingested through the holder
protocol; one release of the observatory; idempotent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from anonymize.models import Release, StagedRecord
from broker import demo, demo_statistics
from consent.models import Citizen, Consent, HolderLink, Mode
from examples.holders.app import create_app, set_fault
from examples.holders.tokens import TiersKeys
from tests.conftest import ISSUER
from tests.gateway.conftest import Late, serve

# Fixtures: the distributor's synthetic data, and Tiers' keys served for real.
from tests.gateway.conftest import electricity_data as electricity_data
from tests.gateway.conftest import jwks_url as jwks_url

CHARTER = Path(__file__).resolve().parents[2] / "examples" / "charter.yaml"
PANEL = 24


@pytest.fixture
def served(jwks_url: str, electricity_data: Any) -> Iterator[tuple[str, Flask]]:
    """The demo distributor, checking tokens against Tiers' published keys: URL and app."""
    late = Late()
    with serve(late) as url:
        late.app = create_app(
            electricity_data, tiers_url=ISSUER, resource_uri=url, keys=TiersKeys(jwks_url)
        )
        yield url, late.app


@pytest.fixture
def distributor(served: tuple[str, Flask]) -> str:
    return served[0]


def statistics(app: Flask, **kw: Any) -> list[str]:
    with app.app_context():
        return list(demo_statistics.statistics(**kw))


def count(session: Session, query: Any) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(query.subquery())) or 0


def test_the_panel_is_ingested_and_the_observatory_gets_one_release(
    app: Flask,
    session: Session,
    tmp_path: Path,
    distributor: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with app.app_context():
        list(demo.seed(CHARTER, instance_dir=tmp_path, holder_urls=[distributor], wait=5))
    # The test's Tiers is not served at its issuer; the distributor reads its keys elsewhere.
    monkeypatch.setattr(demo_statistics, "_serving_jwks", lambda wait: True)

    lines = statistics(app, size=PANEL, wait=0)

    assert f"panel: {PANEL} resident(s) linked to a meter and consenting ({PANEL} in all)" in lines
    assert f"daily energy of the panel ingested: {PANEL * 365} rows staged" in lines, lines
    panel = select(Citizen).where(Citizen.email.like("habitant-%@demo.tiers.local"))
    assert count(session, panel) == PANEL
    subjects = select(Citizen.subject_id).where(Citizen.email.like("habitant-%"))
    linked = select(HolderLink).where(HolderLink.subject_id.in_(subjects))
    assert count(session, linked) == PANEL
    aggregate = select(Consent).where(
        Consent.subject_id.in_(subjects),
        Consent.purpose_id == demo.OBSERVATORY_PURPOSE,
        Consent.mode == Mode.AGGREGATE,
    )
    assert count(session, aggregate) == PANEL
    assert count(session, select(StagedRecord)) == PANEL * 365  # the daily energy only
    (release,) = session.scalars(select(Release)).all()
    assert (release.purpose, release.spec["measure"]) == (demo.OBSERVATORY_PURPOSE, "count")

    again = statistics(app, size=PANEL, wait=0)
    assert again == [f"release {release.id} of {demo.OBSERVATORY_SLUG} already made"]
    assert count(session, select(Release)) == 1


def test_without_a_distributor_or_a_served_tiers_it_says_so(
    app: Flask, session: Session, tmp_path: Path, distributor: str
) -> None:
    (nothing,) = statistics(app, size=PANEL, wait=0)
    assert "no daily electricity dataset registered" in nothing
    with app.app_context():
        list(demo.seed(CHARTER, instance_dir=tmp_path, holder_urls=[distributor], wait=5))
    lines = statistics(app, size=2, wait=0)  # nothing answers at the test's issuer
    assert lines[-1] == f"Tiers did not answer at {ISSUER}: no demo statistics"
    assert count(session, select(Release)) == 0


def test_a_distributor_that_fails_is_said_and_nothing_is_released(
    app: Flask,
    session: Session,
    tmp_path: Path,
    served: tuple[str, Flask],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, holder_app = served
    with app.app_context():
        list(demo.seed(CHARTER, instance_dir=tmp_path, holder_urls=[url], wait=5))
    monkeypatch.setattr(demo_statistics, "_serving_jwks", lambda wait: True)
    set_fault(holder_app, "down")
    assert statistics(app, size=2, wait=0) == [
        f"the distributor did not answer at {url}: no demo statistics"
    ]
    set_fault(holder_app, "malformed:json")  # names its meters, then sends half a page
    lines = statistics(app, size=2, wait=0)
    assert lines[-1].startswith("the panel's daily energy could not be ingested ("), lines
    assert count(session, select(Release)) == 0
    assert count(session, select(StagedRecord)) == 0
