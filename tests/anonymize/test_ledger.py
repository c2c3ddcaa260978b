"""The ledger: exact decimals, all-or-nothing charges, refusals that name what is left, and on
PostgreSQL two concurrent releases that can never both spend the last of a budget."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from anonymize import noise
from anonymize.ledger import (
    POPULATION,
    REUSER,
    AccountKey,
    BudgetExceededError,
    balance,
    charge,
    period_of,
)
from anonymize.models import BudgetAccount


def key(kind: str = POPULATION, period: str = "2026") -> AccountKey:
    return AccountKey(kind, f"test-{uuid.uuid4().hex[:12]}", period)


def test_periods_follow_the_territorys_calendar():
    new_year_in_paris = datetime(2025, 12, 31, 23, 30, tzinfo=UTC)  # 00:30 on 1 January
    assert period_of(new_year_in_paris, "year") == "2026"
    assert period_of(new_year_in_paris, "quarter") == "2026-Q1"
    assert period_of(datetime(2026, 8, 14, tzinfo=UTC), "month") == "2026-08"
    with pytest.raises(ValueError, match="period"):
        period_of(new_year_in_paris, "week")


def test_charges_add_up_exactly_in_decimals(session):
    population = key()
    for _ in range(3):
        charge(session, {population: Decimal("1.0")}, Decimal("0.1"))
    session.commit()
    spent = session.scalar(
        select(BudgetAccount.spent).where(BudgetAccount.holder == population.holder)
    )
    assert spent == Decimal("0.3")  # never 0.30000000000000004
    assert balance(session, population, Decimal("1.0")).remaining == Decimal("0.7")


def test_a_charge_over_any_cap_charges_no_account(session):
    population, reuser = key(), key(REUSER)
    charge(session, {population: Decimal("1"), reuser: Decimal("0.5")}, Decimal("0.4"))
    with pytest.raises(BudgetExceededError) as refused:
        charge(session, {population: Decimal("1"), reuser: Decimal("0.5")}, Decimal("0.2"))
    assert refused.value.remaining == {"reuser:2026": Decimal("0.1")}
    assert "0.1" in refused.value.detail
    assert balance(session, population, Decimal("1")).spent == Decimal("0.4")
    assert balance(session, reuser, Decimal("0.5")).spent == Decimal("0.4")


def test_spending_exactly_the_whole_budget_is_allowed_and_nothing_after(session):
    population = key()
    charge(session, {population: Decimal("1")}, Decimal("0.75"))
    charge(session, {population: Decimal("1")}, Decimal("0.25"))
    with pytest.raises(BudgetExceededError):
        charge(session, {population: Decimal("1")}, Decimal("0.000000000001"))


def test_a_lowered_cap_applies_at_once(session):
    population = key()
    charge(session, {population: Decimal("1")}, Decimal("0.4"))
    with pytest.raises(BudgetExceededError):
        charge(session, {population: Decimal("0.5")}, Decimal("0.2"))


def test_costs_are_rounded_up_never_down():
    assert noise.round_up(0.1000000000001) == Decimal("0.100000000001")
    assert noise.round_up(Decimal("0.25")) == Decimal("0.25")
    assert noise.round_up(1e-15) == Decimal("1E-12")


def test_rho_is_shown_as_epsilon_delta_by_opendps_conversion():
    # anchors-dp.md §1.4, measured with OpenDP 0.16 at delta 1e-7
    assert noise.epsilon_at(Decimal("0.125")) == pytest.approx(2.649, abs=0.002)
    assert noise.epsilon_at(Decimal("1.0")) == pytest.approx(8.395, abs=0.002)
    assert noise.epsilon_at(Decimal("0.02")) == pytest.approx(0.995, abs=0.002)


@pytest.fixture
def committed(engine):
    """Accounts that concurrent transactions commit for real (PostgreSQL only), cleaned up."""
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite serialises writers (BEGIN IMMEDIATE)")
    made: list[AccountKey] = []
    yield made
    with Session(engine) as session, session.begin():
        for account in made:
            session.execute(delete(BudgetAccount).where(BudgetAccount.holder == account.holder))


@pytest.mark.parametrize("hold_lock", [0.0, 0.3])
def test_two_concurrent_releases_never_both_spend_the_last_of_a_budget(
    engine, committed, hold_lock
):
    population, reuser = key(), key(REUSER)
    committed.extend([population, reuser])
    caps = {population: Decimal("1.0"), reuser: Decimal("1.0")}
    with Session(engine) as session, session.begin():
        charge(session, caps, Decimal("0.1"))  # the accounts exist: only the row lock serialises
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def release() -> None:
        with Session(engine) as session:
            try:
                with session.begin():
                    start.wait()
                    charge(session, caps, Decimal("0.5"))  # 0.1 + 0.5 + 0.5 > 1.0
                    threading.Event().wait(hold_lock)  # noise drawn here, lock held
                outcomes.append("charged")
            except BudgetExceededError:
                outcomes.append("refused")

    threads = [threading.Thread(target=release) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["charged", "refused"]
    with Session(engine) as session:
        spent = session.scalars(
            select(BudgetAccount.spent).where(
                BudgetAccount.holder.in_([population.holder, reuser.holder])
            )
        ).all()
    assert spent == [Decimal("0.6"), Decimal("0.6")]  # 0.1 + the one charge that went through
