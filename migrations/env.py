"""Alembic environment: every package's models, batch mode for SQLite."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import anonymize.models  # noqa: F401  (each import registers its tables)
import audit.models  # noqa: F401
import broker.models  # noqa: F401
import charter.models  # noqa: F401
import common.outbox  # noqa: F401
import consent.models  # noqa: F401
from common.db import Base, make_engine

target_metadata = Base.metadata
config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        _run(conn)
