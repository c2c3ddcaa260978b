"""Migrations that move data. 0011: observatories' and city services' clients that could ask
for releases keep that right under releases:write; nobody else gets it; downgrading takes it
back. 0010: staging is emptied both ways."""

from __future__ import annotations

import uuid
from pathlib import Path

from alembic import command
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from broker.models import AuthMethod, OAuthClient, Organisation, Role
from common import migrations
from common.db import make_engine


def _client(organisation: Organisation, scope: str) -> OAuthClient:
    return OAuthClient(
        id=uuid.uuid4(),
        client_id=f"tc_{uuid.uuid4().hex[:12]}",
        organisation_id=organisation.id,
        name=f"{organisation.slug} client",
        auth_method=AuthMethod.CLIENT_SECRET_BASIC,
        redirect_uris=[],
        grant_types=["client_credentials"],
        scope=scope,
        registered_by="committee",
    )


def test_releases_write_goes_to_the_clients_that_could_already_ask(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/scopes.sqlite")
    config = migrations.alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0010")
        with Session(bind=connection) as session:
            made = {}
            for slug, role, scope in (
                ("obs", Role.OBSERVATORY, "releases:read access:request"),
                ("city", Role.CITY_SERVICE, "consent:read releases:read"),
                ("obs-no-releases", Role.OBSERVATORY, "access:request"),
                ("reuser", Role.REUSER, "access:request consent:read"),
            ):
                organisation = Organisation(id=uuid.uuid4(), slug=slug, name=slug, role=role)
                session.add(organisation)
                session.flush()
                made[slug] = _client(organisation, scope)
                session.add(made[slug])
            session.commit()
        command.upgrade(config, "head")

    def scopes() -> dict[str, str]:
        with engine.connect() as connection, Session(bind=connection) as session:
            rows = session.execute(
                select(Organisation.slug, OAuthClient.scope).join(
                    OAuthClient, OAuthClient.organisation_id == Organisation.id
                )
            ).all()
            return {str(slug): str(scope) for slug, scope in rows}

    assert scopes() == {
        "obs": "releases:read access:request releases:write",
        "city": "consent:read releases:read releases:write",
        "obs-no-releases": "access:request",
        "reuser": "access:request consent:read",
    }
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0010")
    assert scopes()["obs"] == "releases:read access:request"
    assert scopes()["city"] == "consent:read releases:read"
    engine.dispose()


def test_downgrading_0010_empties_staging_so_no_citizen_is_counted_twice(tmp_path: Path) -> None:
    """After 0010 a citizen has one copy of their staged rows per recipient; the schema before
    it has no recipient, so the downgrade leaves nothing staged for the old code to count."""
    engine = make_engine(f"sqlite:///{tmp_path}/staging.sqlite")
    config = migrations.alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0010")
        subject = uuid.uuid4().hex
        for recipient in ("public_service", "research"):
            connection.execute(
                text(
                    "INSERT INTO dp_staged_record (dataset_id, purpose, subject_id, month_index,"
                    " area, category, value, staged_at, valid_until, expires_at, recipient)"
                    " VALUES (:d, 'p', :s, 1, 'D01', '', 5, :t, NULL, :t, :r)"
                ),
                {"d": uuid.uuid4().hex, "s": subject, "t": "2030-01-01 00:00:00", "r": recipient},
            )
        command.downgrade(config, "0009")
        assert connection.scalar(text("SELECT count(*) FROM dp_staged_record")) == 0
    engine.dispose()
