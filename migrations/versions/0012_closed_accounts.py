"""A citizen may close their account: `closed_at` when they did (credentials scrubbed, every
consent withdrawn), `erased_at` when the erasure sweep crypto-shredded their log afterwards

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-23 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("citizen", schema=None) as batch_op:
        batch_op.add_column(sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_citizen_closed_at", ["closed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("citizen", schema=None) as batch_op:
        batch_op.drop_index("ix_citizen_closed_at")
        batch_op.drop_column("erased_at")
        batch_op.drop_column("closed_at")
