"""The `tiers` command: migrations, charters, keys, demo data, and the worker and beat."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

from broker.app import create_app
from broker.service import publish_charter
from charter import service as charters
from charter.document import CharterInvalidError
from common import migrations
from common.db import unit_of_work
from common.errors import DomainError
from common.keyring import app_keyring


@click.group(cls=FlaskGroup, create_app=lambda: create_app(), add_version_option=False)
def main() -> None:
    """Tiers, the territory's trusted third party."""


@main.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@with_appcontext
def db_upgrade() -> None:
    """Apply every Alembic migration (alembic upgrade head)."""
    with current_app.extensions["db.engine"].begin() as connection:
        migrations.upgrade(connection)
    click.echo("database is up to date")


@main.group()
def charter() -> None:
    """Charter versions."""


@charter.command("load")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@with_appcontext
def charter_load(path: Path) -> None:
    """Validate and publish a charter file; every error is listed, nothing stored on error."""
    try:
        with unit_of_work() as session:
            loaded, new = publish_charter(session, path.read_text(encoding="utf-8"), actor="cli")
    except CharterInvalidError as exc:
        click.echo(f"{path}: {exc.detail}", err=True)
        for line in exc.errors:
            click.echo(f"  {line}", err=True)
        sys.exit(1)
    except DomainError as exc:
        click.echo(f"{path}: {exc.detail}", err=True)
        sys.exit(1)
    state = "published" if new else "already published (same content)"
    click.echo(f"charter {loaded.version} {state}: sha256 {loaded.row.sha256}")


@charter.command("diff")
@click.argument("old")
@click.argument("new")
@with_appcontext
def charter_diff(old: str, new: str) -> None:
    """Which purposes' terms changed between two published versions, and how."""
    try:
        with unit_of_work() as session:
            changes = charters.diff_versions(session, old, new)
    except DomainError as exc:
        click.echo(exc.detail, err=True)
        sys.exit(1)
    for line in changes.summary_lines():
        click.echo(line)


@main.group()
def keys() -> None:
    """Receipt signing keys (instance/keys/)."""


@keys.command("rotate")
@with_appcontext
def keys_rotate() -> None:
    """Make a new signing key; the old one keeps verifying its receipts."""
    info = app_keyring().rotate()
    click.echo(f"new signing key {info.kid}")


@keys.command("list")
@with_appcontext
def keys_list() -> None:
    """Every key with its dates."""
    for info in app_keyring().all():
        retired = info.retired_at.isoformat() if info.retired_at else "active"
        click.echo(f"{info.kid}  created {info.created_at.isoformat()}  {retired}")


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def worker(args: tuple[str, ...]) -> None:
    """Run a Celery worker (needs CELERY_BROKER_URL)."""
    from broker.worker import celery_app

    celery_app.worker_main(["worker", "--loglevel=INFO", *args])


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def beat(args: tuple[str, ...]) -> None:
    """Run Celery beat: the outbox safety-net relay and the consent sweep."""
    from broker.worker import celery_app

    celery_app.start(["beat", "--loglevel=INFO", *args])


@main.command("demo-seed")
@click.option("--charter", "charter_path", default="examples/charter.yaml")
@with_appcontext
def demo_seed(charter_path: str) -> None:
    """Load the demo charter and create demo citizens with consents (idempotent)."""
    from broker import demo

    for line in demo.seed(Path(charter_path)):
        click.echo(line)
