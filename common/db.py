"""The SQLAlchemy base, the session of the current app context, and the unit of work.

Services take a Session and never commit; only entry points open `unit_of_work()`
(shared/STYLE.md §4, "Transactions").
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    Enum,
    MetaData,
    Table,
    Uuid,
    create_engine,
    event,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from common.clock import as_utc, utcnow


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware timestamps on every backend: SQLite drops the zone, we put UTC back."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetimes are refused: use common.clock.utcnow()")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)


class Base(DeclarativeBase):
    """Declarative base with stable constraint names, so Alembic migrations stay reviewable."""

    metadata = MetaData(
        naming_convention={
            "pk": "pk_%(table_name)s",
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        }
    )
    type_annotation_map = {
        datetime: UTCDateTime(),
        uuid.UUID: Uuid(),
        dict[str, Any]: JSON(),
        enum.Enum: Enum(
            enum.Enum, native_enum=False, values_callable=lambda e: [m.value for m in e]
        ),
    }


def str_enum(kind: type[enum.Enum], length: int = 16) -> Enum:
    """An enum stored as its value in a VARCHAR (no native type: migrations stay simple)."""
    return Enum(
        kind,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda e: [m.value for m in e],
    )


class HasId:
    """A random UUID primary key and the creation time."""

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# A pooled connection idle for longer than this is pinged before use (see _ping_when_idle).
PING_AFTER_IDLE = 1.0  # seconds


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets foreign keys and the pysqlite SAVEPOINT recipe."""
    if not url.startswith("sqlite"):
        engine = create_engine(url, future=True)
        _ping_when_idle(engine, PING_AFTER_IDLE)
        return engine
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    # SQLAlchemy's documented recipe: let SQLAlchemy emit BEGIN itself so SAVEPOINTs work.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _ping_when_idle(engine: Engine, idle: float) -> None:
    """`pool_pre_ping`, for connections that sat in the pool more than `idle` seconds only.

    A ping is a round trip on every checkout, and a busy server checks connections out many
    times a second; a connection handed back a moment ago is alive.
    A dead one (the database restarted) is replaced before use, as pre-ping would; one that
    died within the last `idle` seconds fails its request, and that disconnect error makes
    SQLAlchemy drop the whole pool, so the next requests reconnect.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since <= idle:
            return  # just connected, or just handed back
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool discards this connection and checks out another (SQLAlchemy docs).
            raise DisconnectionError("stale pooled connection") from exc


def init_app(app: Flask) -> None:
    """Create the engine and sessionmaker of this app; close the session after each context."""
    engine = make_engine(app.config["DATABASE_URL"])
    app.extensions["db.engine"] = engine
    app.extensions["db.sessionmaker"] = sessionmaker(bind=engine, expire_on_commit=False)

    @app.teardown_appcontext
    def _close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


def get_session() -> Session:
    """The session of the current app context: one per request, one per task run."""
    if "db_session" not in g:
        g.db_session = current_app.extensions["db.sessionmaker"]()
    session: Session = g.db_session
    return session


@contextmanager
def unit_of_work() -> Iterator[Session]:
    """Commit on success, roll back on any error. Entry points only; services never commit."""
    session = get_session()
    if session.info.get("in_unit_of_work"):
        raise RuntimeError("nested unit_of_work: open it at the entry point only")
    session.info["in_unit_of_work"] = True
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.info.pop("in_unit_of_work", None)


def insert_or_merge(session: Session, table: Table) -> postgresql.Insert | sqlite.Insert:
    """INSERT in the session's dialect, which both give ON CONFLICT (`on_conflict_do_nothing`,
    `on_conflict_do_update`, `excluded`): PostgreSQL in production, SQLite embedded."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
