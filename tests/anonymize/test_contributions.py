"""Per-citizen accounting: each release counts, in its own transaction and in one set-based
statement, for exactly the citizens whose rows entered its exact aggregate; the sums are
exact; nothing counts for a refused or a re-served release; erasure takes the counters."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from anonymize import service
from anonymize.models import Contribution, StagedRecord
from anonymize.service import Contributions, Record, contributions, erase_subject
from common.clock import utcnow
from tests.anonymize.conftest import spec
from tests.conftest import sql_statements

URL = "/api/v1/releases"
JAN = datetime(2026, 1, 10, tzinfo=UTC)


def arranged(stage: Any) -> tuple[Any, dict[str, uuid.UUID]]:
    """Four citizens: in D01 in January, in D02 in January, in D01 in June (outside a
    first-quarter window), and one staged for another recipient (research)."""
    who = {name: uuid.uuid4() for name in ("d01", "d02", "june", "research")}
    records = [
        Record(who["d01"], JAN, 5, "D01"),
        Record(who["d01"], JAN + timedelta(days=30), 5, "D01"),
        Record(who["d02"], JAN, 5, "D02"),
        Record(who["june"], JAN + timedelta(days=150), 5, "D01"),
        Record(who["research"], JAN, 5, "D01", recipient="research"),
    ]
    return stage(records=records), who


def test_nobody_has_contributed_before_any_release(session, charter):
    found = contributions(session, uuid.uuid4())
    assert found == Contributions(str(utcnow().year), 0, Decimal(0), 0.0, 0.0)


def test_a_release_counts_for_exactly_the_citizens_whose_rows_entered_it(
    client, observatory, stage, session
):
    staged, who = arranged(stage)
    first = client.post(URL, json=spec(staged, rho="0.1"), headers=observatory)
    assert first.status_code == 201, first.get_json()
    rho_1 = Decimal(first.get_json()["rho"])
    filtered = spec(staged, rho="0.05", measure="count", areas=["D02"])
    second = client.post(URL, json=filtered, headers=observatory)
    assert second.status_code == 201, second.get_json()
    rho_2 = Decimal(second.get_json()["rho"])
    session.expire_all()
    d01, d02 = contributions(session, who["d01"]), contributions(session, who["d02"])
    assert (d01.releases, d01.rho) == (1, rho_1)  # not in D02: the filter left them out
    assert (d02.releases, d02.rho) == (2, rho_1 + rho_2)  # exact: decimals, never floats
    assert d02.epsilon == service.epsilon_at(rho_1 + rho_2)
    assert d02.delta == service.DELTA
    assert d02.period == str(utcnow().year)
    for outside in ("june", "research"):  # outside the window; another recipient's rows
        assert contributions(session, who[outside]).releases == 0
    next_year = contributions(session, who["d02"], at=utcnow() + timedelta(days=366))
    assert (next_year.releases, next_year.rho) == (0, 0)


def test_a_refused_or_re_served_release_counts_for_no_one(client, observatory, stage, session):
    staged, who = arranged(stage)
    assert client.post(URL, json=spec(staged), headers=observatory).status_code == 201
    assert client.post(URL, json=spec(staged), headers=observatory).status_code == 200  # free
    assert client.post(URL, json=spec(staged, rho="0.3"), headers=observatory).status_code == 422
    session.expire_all()
    assert contributions(session, who["d01"]).releases == 1


def test_citizens_are_counted_in_one_statement_whatever_their_number(
    client, observatory, stage, session, engine
):
    staged = stage(citizens=300)
    with sql_statements(engine) as seen:
        made = client.post(URL, json=spec(staged), headers=observatory)
    statements = [s for s in seen if "dp_contribution" in s and s.upper().startswith("INSERT")]
    assert made.status_code == 201, made.get_json()
    assert len(statements) == 1
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Contribution)) == 300


def test_erasure_takes_a_citizens_counters_and_staged_rows(client, observatory, stage, session):
    staged, who = arranged(stage)
    assert client.post(URL, json=spec(staged), headers=observatory).status_code == 201
    session.expire_all()
    assert contributions(session, who["d01"]).releases == 1
    assert erase_subject(session, who["d01"]) == 3  # two staged rows and one counter
    assert contributions(session, who["d01"]).releases == 0
    rows = select(func.count()).where(StagedRecord.subject_id == who["d01"])
    assert session.scalar(rows) == 0
    assert contributions(session, who["d02"]).releases == 1  # others keep theirs
    assert erase_subject(session, who["d01"]) == 0  # idempotent
