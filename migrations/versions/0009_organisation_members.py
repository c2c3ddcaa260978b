"""Portal accounts acting for an organisation, e.g. an observatory's statistics (issue #6)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 16:25:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "organisation_member",
        sa.Column("citizen_id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["citizen_id"],
            ["citizen.id"],
            name=op.f("fk_organisation_member_citizen_id_citizen"),
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_organisation_member_organisation_id_organisation"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organisation_member")),
        sa.UniqueConstraint("citizen_id", name=op.f("uq_organisation_member_citizen_id")),
    )
    op.create_index(
        op.f("ix_organisation_member_organisation_id"), "organisation_member", ["organisation_id"]
    )


def downgrade() -> None:
    op.drop_table("organisation_member")
