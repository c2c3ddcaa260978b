"""The migrations build exactly the schema the models declare: a table, column, index or
constraint written in one and forgotten in the other fails here, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

import anonymize.models  # noqa: F401  (each import registers its tables)
import audit.models  # noqa: F401
import broker.models  # noqa: F401
import charter.models  # noqa: F401
import common.outbox  # noqa: F401
import consent.models  # noqa: F401
from common.db import Base


def test_the_migrated_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []
