"""Auditor portal accounts (issue #4)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 11:45:00

Portal accounts that may read the whole access log on the auditor pages. The citizen and the
auditing organisation are named by value, without foreign keys: audit imports nothing of ours.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auditor_account",
        sa.Column("citizen_id", sa.Uuid(), nullable=False),
        sa.Column("organisation", sa.String(length=64), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auditor_account")),
        sa.UniqueConstraint("citizen_id", name=op.f("uq_auditor_account_citizen_id")),
    )


def downgrade() -> None:
    op.drop_table("auditor_account")
