"""The `tiers` command: migrations, charters, keys, the committee, organisations, their
members and clients, citizens' erasure requests, demo data, and the worker and beat."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

from broker.app import create_app
from broker.models import AuthMethod, Role
from broker.service import clients, organisations, publish_charter
from charter import service as charters
from charter.document import CharterInvalidError
from common import migrations
from common.db import unit_of_work
from common.errors import ConflictError, DomainError
from common.keyring import app_keyring
from consent import accounts, closing


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


def _fail(what: str, exc: DomainError) -> NoReturn:
    """Print a refusal with its field messages and exit 1 (nothing was stored)."""
    click.echo(f"{what}: {exc.detail}", err=True)
    for field, messages in exc.fields.items():
        for message in messages:
            click.echo(f"  {field}: {message}", err=True)
    sys.exit(1)


@main.group()
def committee() -> None:
    """The charter committee's members (they use the admin pages)."""


@committee.command("add")
@click.argument("email")
@with_appcontext
def committee_add(email: str) -> None:
    """Let the portal account with this e-mail use the admin pages (it signs up first)."""
    try:
        with unit_of_work() as session:
            organisations.add_committee_member(session, email, actor="cli")
    except DomainError as exc:
        _fail(email, exc)
    click.echo(f"{email} is a member of the charter committee")


@main.group()
def citizen() -> None:
    """Citizens' accounts: erasure requests received outside the portal (GDPR art. 17)."""


@citizen.command("close")
@click.argument("email")
@click.confirmation_option(prompt="Close this account and withdraw all its consents?")
@with_appcontext
def citizen_close(email: str) -> None:
    """Close the account with this e-mail, as its citizen can on the portal ("Mon compte"):
    every consent withdrawn, the address and password scrubbed; the rest is erased by
    `tiers citizen erase-due` (run by the beat) once the recipients have been told."""
    try:
        with unit_of_work() as session:
            closing.close_account(
                session, accounts.find_open(session, email, lock=True), actor="cli"
            )
    except DomainError as exc:
        _fail(email, exc)
    click.echo(f"the account of {email} is closed")


@citizen.command("erase-due")
@with_appcontext
def citizen_erase_due() -> None:
    """Erase what closed accounts left, where their withdrawals are settled (what the beat
    runs every ten minutes; the embedded default has no beat)."""
    from broker.tasks import erase_closed_accounts

    erased = erase_closed_accounts.apply().get()
    click.echo(f"{erased} closed account(s) erased")


@main.group()
def member() -> None:
    """Portal accounts acting for an organisation (an observatory's statistics pages)."""


@member.command("add")
@click.argument("email")
@click.argument("slug")
@click.option("--note", default="", help="Why (kept with the membership).")
@with_appcontext
def member_add(email: str, slug: str, note: str) -> None:
    """Let the portal account with this e-mail act for organisation SLUG (it signs up
    first); an account acts for one organisation only."""
    try:
        with unit_of_work() as session:
            organisations.add_member(session, email, slug, note=note, actor="cli")
    except DomainError as exc:
        _fail(email, exc)
    click.echo(f"{email} acts for organisation {slug}")


@main.group()
def org() -> None:
    """Organisations of the territory."""


@org.command("create")
@click.option("--slug", required=True, help="Lowercase kebab-case id (the charter's reuser id).")
@click.option("--name", required=True)
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]))
@click.option("--category", default=None, help="A reuser category of the current charter.")
@click.option("--resource-uri", default=None, help="A holder's API (RFC 8707 resource).")
@with_appcontext
def org_create(
    slug: str, name: str, role: str, category: str | None, resource_uri: str | None
) -> None:
    """Register an organisation."""
    try:
        with unit_of_work() as session:
            created = organisations.create_organisation(
                session,
                slug=slug,
                name=name,
                role=role,
                reuser_category=category,
                resource_uri=resource_uri,
                actor="cli",
            )
            organisation_id = created.id
    except DomainError as exc:
        _fail(slug, exc)
    click.echo(f"organisation {slug} created: {organisation_id}")


@main.group()
def client() -> None:
    """OAuth2 clients of organisations."""


@client.command("create")
@click.argument("org_slug")
@click.option("--name", required=True)
@click.option(
    "--auth-method",
    type=click.Choice([m.value for m in AuthMethod]),
    default=AuthMethod.CLIENT_SECRET_BASIC.value,
    show_default=True,
)
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="Repeat for several.")
@click.option("--grant-type", "grant_types", multiple=True, required=True, help="Repeatable.")
@click.option("--scope", required=True, help='Space-separated, e.g. "access:request".')
@click.option(
    "--jwks-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The public JWK Set, for private_key_jwt.",
)
@click.option("--dpop", is_flag=True, help="Bind its tokens to a DPoP key (RFC 9449).")
@with_appcontext
def client_create(
    org_slug: str,
    name: str,
    auth_method: str,
    redirect_uris: tuple[str, ...],
    grant_types: tuple[str, ...],
    scope: str,
    jwks_file: Path | None,
    dpop: bool,
) -> None:
    """Register a client; its secret (client_secret_basic) is printed once, never stored."""
    jwks = None
    if jwks_file is not None:
        try:
            jwks = json.loads(jwks_file.read_text(encoding="utf-8"))
        except ValueError as exc:
            click.echo(f"{jwks_file}: not valid JSON ({exc})", err=True)
            sys.exit(1)
    try:
        with unit_of_work() as session:
            organisation = organisations.get_organisation_by_slug(session, org_slug)
            created, secret = clients.create_client(
                session,
                organisation_id=organisation.id,
                name=name,
                auth_method=auth_method,
                redirect_uris=list(redirect_uris),
                grant_types=list(grant_types),
                scope=scope,
                jwks=jwks,
                dpop_bound=dpop,
                registered_by="committee",
                actor="cli",
            )
            client_id = created.client_id
    except DomainError as exc:
        _fail(org_slug, exc)
    click.echo(f"client_id: {client_id}")
    if secret is not None:
        click.echo(f"client_secret: {secret}")
        click.echo("(shown once: Tiers keeps only its hash)", err=True)


@main.group()
def iat() -> None:
    """Initial access tokens for RFC 7591 self-registration."""


@iat.command("issue")
@click.argument("org_slug")
@click.option("--hours", type=click.IntRange(1, 720), default=24, show_default=True)
@with_appcontext
def iat_issue(org_slug: str, hours: int) -> None:
    """Issue a single-use initial access token; printed once, stored hashed."""
    try:
        with unit_of_work() as session:
            organisation = organisations.get_organisation_by_slug(session, org_slug)
            token = clients.issue_initial_access_token(
                session, organisation_id=organisation.id, ttl=timedelta(hours=hours), actor="cli"
            )
            expires_at = clients.get_initial_access_token(session, token).expires_at
    except DomainError as exc:
        _fail(org_slug, exc)
    click.echo(f"initial_access_token: {token}")
    click.echo(f"expires_at: {expires_at.isoformat()}")


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


@main.command("demo-statistics")
@click.option("--panel", "size", default=300, show_default=True, help="Residents in the panel.")
@click.option("--wait", default=30.0, show_default=True, help="Seconds to wait for Tiers.")
@with_appcontext
def demo_statistics(size: int, wait: float) -> None:
    """Give the demo observatory something to show, once Tiers is serving: a panel of
    residents consenting to it, their daily energy ingested, one release (idempotent)."""
    from broker import demo_statistics as demo

    for line in demo.statistics(size=size, wait=wait):
        click.echo(line)


@main.command("demo-seed")
@click.option("--charter", "charter_path", default="examples/charter.yaml")
@with_appcontext
def demo_seed(charter_path: str) -> None:
    """Load the demo charter and create demo citizens with consents (idempotent)."""
    from broker import demo

    try:
        for line in demo.seed(Path(charter_path)):
            click.echo(line)
    except ConflictError as exc:
        # An instance/ seeded by an older Tiers whose demo charter had other content under
        # the same version: charters are immutable, so the demo starts from a new database.
        click.echo(
            f"The demo cannot be seeded: {exc.detail}\nThis database holds a demo made from "
            "another copy of the demo charter: remove instance/ (make clean) and run "
            "make demo again.",
            err=True,
        )
        sys.exit(1)


@main.group("audit")
def audit_group() -> None:
    """The access log: export it, verify an export offline."""


@audit_group.command("export")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write to this file instead of standard output.",
)
@with_appcontext
def audit_export(output: Path | None) -> None:
    """Write the whole log as JSON Lines: leaves, Merkle nodes, signed checkpoints."""
    from audit.export import export

    with unit_of_work() as session:
        if output is None:
            for line in export(session):
                click.echo(line, nl=False)
        else:
            with output.open("w", encoding="utf-8") as handle:
                handle.writelines(export(session))
    if output is not None:
        click.echo(f"exported the access log to {output}", err=True)


@audit_group.command("verify")
@click.argument("export_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--log-key", required=True, help="The log's verifier key, or a file holding it.")
@click.option(
    "--checkpoint",
    "saved",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A signed checkpoint saved earlier: the export must extend it.",
)
def audit_verify(export_file: Path, log_key: str, saved: Path | None) -> None:
    """Verify an export offline (no database, no network, no configuration); exit 1 if bad.

    A plain command, without the app context: FlaskGroup builds no app for it.
    """
    from audit.notes import NoteError
    from audit.verify import verify

    key = log_key
    try:
        if Path(log_key).is_file():
            key = Path(log_key).read_text(encoding="utf-8").strip()
    except OSError:  # not a path at all (a name too long): the key itself
        pass
    checkpoint = saved.read_text(encoding="utf-8") if saved is not None else None
    try:
        with export_file.open(encoding="utf-8") as lines:
            report = verify(lines, log_key=key, saved_checkpoint=checkpoint)
    except NoteError as exc:
        click.echo(f"--log-key: {exc}", err=True)
        sys.exit(2)
    click.echo(report.verdict())
    sys.exit(0 if report.ok else 1)


@main.group()
def auditor() -> None:
    """Auditors' portal accounts (they use the auditor pages of the access log)."""


@auditor.command("add")
@click.argument("email")
@click.option("--organisation", default=None, help="Slug of the auditing organisation.")
@with_appcontext
def auditor_add(email: str, organisation: str | None) -> None:
    """Let the portal account with this e-mail read the access log (it signs up first)."""
    from audit.service import browse

    try:
        with unit_of_work() as session:
            found = accounts.find_open(session, email)
            if organisation is not None:
                organisations.get_organisation_by_slug(session, organisation)
            browse.add_auditor(
                session,
                citizen_id=found.id,
                subject_id=found.subject_id,
                organisation=organisation,
                actor="cli",
            )
    except DomainError as exc:
        _fail(email, exc)
    click.echo(f"{email} is an auditor of the access log")
