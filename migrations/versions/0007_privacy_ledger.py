"""The privacy-budget ledger, releases and staged records (issue #6)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 11:45:00

Staged values are integers (fixed point); rho is NUMERIC(24, 12) on PostgreSQL and a decimal
string on SQLite (no float ever holds a budget). On PostgreSQL a trigger refuses any UPDATE or
DELETE of a release or a ledger line: both are append-only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_RHO = sa.Numeric(24, 12).with_variant(sa.String(40), "sqlite")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dp_dataset",
        sa.Column("dataset_id", sa.Uuid(), nullable=False),
        sa.Column("data_category", sa.String(64), nullable=False),
        sa.Column("measure", sa.String(64), nullable=False),
        sa.Column("unit", sa.String(32), nullable=False),
        sa.Column("scale", sa.BigInteger(), nullable=False),
        sa.Column("lower", sa.BigInteger(), nullable=False),
        sa.Column("upper", sa.BigInteger(), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("dataset_id", name=op.f("pk_dp_dataset")),
    )
    op.create_table(
        "dp_staged_record",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("dataset_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("month_index", sa.Integer(), nullable=False),
        sa.Column("area", sa.String(64), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("staged_at", _TIME, nullable=False),
        sa.Column("valid_until", _TIME, nullable=True),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dp_staged_record")),
    )
    op.create_index(
        "ix_dp_staged_record_subject",
        "dp_staged_record",
        ["dataset_id", "purpose", "subject_id"],
    )
    op.create_index(
        "ix_dp_staged_record_cells", "dp_staged_record", ["dataset_id", "purpose", "month_index"]
    )
    op.create_table(
        "dp_budget_account",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("cap", _RHO, nullable=False),
        sa.Column("spent", _RHO, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dp_budget_account")),
        sa.UniqueConstraint("kind", "holder", "period", name=op.f("uq_dp_budget_account_kind")),
    )
    op.create_table(
        "dp_release",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("dataset_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("mechanism", sa.String(32), nullable=False),
        sa.Column("rho", _RHO, nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=False),
        sa.Column("delta", sa.Float(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dp_release")),
        sa.UniqueConstraint(
            "organisation_id", "request_hash", name=op.f("uq_dp_release_organisation_id")
        ),
    )
    op.create_index("ix_dp_release_organisation_id", "dp_release", ["organisation_id"])
    op.create_table(
        "dp_budget_charge",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("release_id", sa.Uuid(), nullable=False),
        sa.Column("rho", _RHO, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["dp_budget_account.id"],
            name=op.f("fk_dp_budget_charge_account_id_dp_budget_account"),
        ),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["dp_release.id"],
            name=op.f("fk_dp_budget_charge_release_id_dp_release"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dp_budget_charge")),
    )
    op.create_index("ix_dp_budget_charge_account_id", "dp_budget_charge", ["account_id"])
    op.create_index("ix_dp_budget_charge_release_id", "dp_budget_charge", ["release_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION dp_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              RAISE EXCEPTION '% rows are append-only', TG_TABLE_NAME;
            END $$;
            """
        )
        for table in ("dp_release", "dp_budget_charge"):
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION dp_append_only()"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("dp_release", "dp_budget_charge"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute("DROP FUNCTION IF EXISTS dp_append_only()")
    op.drop_table("dp_budget_charge")
    op.drop_table("dp_release")
    op.drop_table("dp_budget_account")
    op.drop_index("ix_dp_staged_record_cells", table_name="dp_staged_record")
    op.drop_index("ix_dp_staged_record_subject", table_name="dp_staged_record")
    op.drop_table("dp_staged_record")
    op.drop_table("dp_dataset")
