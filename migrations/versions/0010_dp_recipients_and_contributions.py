"""Staged rows carry their consent's recipient; per-citizen release counters (issue #6)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 16:40:00

Rows staged before this revision do not say which recipient their consent named, so no
release may use them: they are deleted (staging is a copy of the holders' data), every
dataset is marked as never staged so that the next ingestion beat restages it at once, and
the column is then added NOT NULL. `dp_contribution` counts, per
citizen and charter period, the releases their rows entered and the rho (in integer units
of 1e-12) those releases spent.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _restage() -> None:
    """Empty the staging table and make every dataset due, so the next ingestion restages:
    rows staged under one schema are never read under the other (after 0010 a citizen has one
    copy of their rows per recipient, which the code before it would count twice)."""
    op.execute("DELETE FROM dp_staged_record")
    never = sa.bindparam("never", datetime(1970, 1, 1, tzinfo=UTC), type_=_TS)
    op.execute(sa.text("UPDATE dp_dataset SET updated_at = :never").bindparams(never))


def upgrade() -> None:
    _restage()
    with op.batch_alter_table("dp_staged_record", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recipient", sa.String(length=64), nullable=False))
    op.create_table(
        "dp_contribution",
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("releases", sa.Integer(), nullable=False),
        sa.Column("rho_units", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("subject_id", "period", name=op.f("pk_dp_contribution")),
    )


def downgrade() -> None:
    _restage()
    op.drop_table("dp_contribution")  # the per-citizen counters go with their table
    with op.batch_alter_table("dp_staged_record", schema=None) as batch_op:
        batch_op.drop_column("recipient")
