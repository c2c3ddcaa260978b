"""Clients of observatories and city services that could ask for releases keep that right
under the new scope releases:write (asking spends privacy budget; reading does not)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23 17:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_ROLES = ("observatory", "city_service")
_client = sa.table(
    "oauth_client",
    sa.column("id", sa.Uuid()),
    sa.column("organisation_id", sa.Uuid()),
    sa.column("scope", sa.String(500)),
)
_organisation = sa.table("organisation", sa.column("id", sa.Uuid()), sa.column("role", sa.String))


def _rescope(add: bool) -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(_client.c.id, _client.c.scope)
        .join(_organisation, _organisation.c.id == _client.c.organisation_id)
        .where(_organisation.c.role.in_(_ROLES))
    ).all()
    for client_id, scope in rows:
        scopes = (scope or "").split()
        if add and "releases:read" in scopes and "releases:write" not in scopes:
            scopes.append("releases:write")
        elif not add and "releases:write" in scopes:
            scopes.remove("releases:write")
        else:
            continue
        connection.execute(
            _client.update().where(_client.c.id == client_id).values(scope=" ".join(scopes))
        )


def upgrade() -> None:
    _rescope(add=True)


def downgrade() -> None:
    _rescope(add=False)
