"""Holders' datasets (with their endpoint health), pairing codes and links to holder accounts

Links and codes name organisations and datasets without foreign keys: consent's tables do not
depend on broker's (shared/DESIGN.md, the packages' arrows).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 09:16:28.933959
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "holder_link",
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("holder_id", sa.Uuid(), nullable=False),
        sa.Column("dataset_id", sa.Uuid(), nullable=True),
        sa.Column("ref_tag", sa.String(length=64), nullable=False),
        sa.Column("ref_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("ref_last4", sa.String(length=4), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_holder_link")),
        sa.UniqueConstraint("holder_id", "ref_tag", name=op.f("uq_holder_link_holder_id")),
    )
    with op.batch_alter_table("holder_link", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_holder_link_holder_id"), ["holder_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_holder_link_subject_id"), ["subject_id"], unique=False)

    op.create_table(
        "pairing_code",
        sa.Column("code_tag", sa.String(length=64), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("holder_id", sa.Uuid(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_reason", sa.String(length=16), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pairing_code")),
        sa.UniqueConstraint("code_tag", name=op.f("uq_pairing_code_code_tag")),
    )
    with op.batch_alter_table("pairing_code", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pairing_code_holder_id"), ["holder_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_pairing_code_subject_id"), ["subject_id"], unique=False
        )

    op.create_table(
        "pairing_failure",
        sa.Column("holder_id", sa.Uuid(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pairing_failure")),
    )
    with op.batch_alter_table("pairing_failure", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pairing_failure_holder_id"), ["holder_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_pairing_failure_occurred_at"), ["occurred_at"], unique=False
        )

    op.create_table(
        "dataset",
        sa.Column("holder_id", sa.Uuid(), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("title", sa.JSON(), nullable=False),
        sa.Column("description", sa.JSON(), nullable=False),
        sa.Column("data_category", sa.String(length=64), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("subject_field", sa.String(length=64), nullable=True),
        sa.Column("time_field", sa.String(length=64), nullable=True),
        sa.Column("personal", sa.Boolean(), nullable=False),
        sa.Column("endpoint_url", sa.String(length=500), nullable=False),
        sa.Column(
            "auth",
            sa.Enum("tiers_token", "none", name="datasetauth", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("refresh", sa.String(length=32), nullable=False),
        sa.Column("licence", sa.String(length=500), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "health",
            sa.Enum("unknown", "up", "down", name="health", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("health_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("health_detail", sa.String(length=200), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["holder_id"], ["organisation.id"], name=op.f("fk_dataset_holder_id_organisation")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset")),
        sa.UniqueConstraint("holder_id", "slug", name=op.f("uq_dataset_holder_id")),
    )
    with op.batch_alter_table("dataset", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dataset_data_category"), ["data_category"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_dataset_holder_id"), ["holder_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("dataset", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dataset_holder_id"))
        batch_op.drop_index(batch_op.f("ix_dataset_data_category"))

    op.drop_table("dataset")
    with op.batch_alter_table("pairing_failure", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pairing_failure_occurred_at"))
        batch_op.drop_index(batch_op.f("ix_pairing_failure_holder_id"))

    op.drop_table("pairing_failure")
    with op.batch_alter_table("pairing_code", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pairing_code_subject_id"))
        batch_op.drop_index(batch_op.f("ix_pairing_code_holder_id"))

    op.drop_table("pairing_code")
    with op.batch_alter_table("holder_link", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_holder_link_subject_id"))
        batch_op.drop_index(batch_op.f("ix_holder_link_holder_id"))

    op.drop_table("holder_link")
