"""Run Alembic migrations from code: the only way any schema is made (never create_all)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(connection: Connection) -> None:
    """alembic upgrade head on an open connection (tests, CLI)."""
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
