"""Pooled PostgreSQL connections are pinged only after sitting idle, and a dead one is replaced."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from common import db
from tests.conftest import database_url

pytestmark = pytest.mark.skipif(
    not database_url().startswith("postgresql"), reason="the ping is PostgreSQL's pool only"
)


@pytest.fixture
def engine(monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE", 0.2)
    engine = db.make_engine(database_url())
    yield engine
    engine.dispose()


def _pings(engine, monkeypatch) -> list[int]:
    pings: list[int] = []
    original = engine.dialect.do_ping

    def counted(dbapi_connection):
        pings.append(1)
        return original(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pings


def _backend_pid(engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(text("SELECT pg_backend_pid()"))


def test_a_connection_handed_back_a_moment_ago_is_not_pinged(engine, monkeypatch):
    pings = _pings(engine, monkeypatch)
    first = _backend_pid(engine)  # a new connection: nothing to ping
    assert _backend_pid(engine) == first
    assert pings == []


def test_an_idle_connection_is_pinged_and_a_dead_one_replaced(engine, monkeypatch):
    pings = _pings(engine, monkeypatch)
    first = _backend_pid(engine)
    killer = db.make_engine(database_url())
    try:
        with killer.connect() as other:  # the server drops it meanwhile
            assert other.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    finally:
        killer.dispose()
    time.sleep(0.3)
    second = _backend_pid(engine)  # no error: the ping found it dead, the pool reconnected
    assert second != first
    assert pings == [1]
