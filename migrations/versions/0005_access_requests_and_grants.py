"""Access requests, grants and what the gateway served (issue #5)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 11:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=16, create_constraint=False)


def upgrade() -> None:
    op.create_table(
        "access_request",
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("client_pk", sa.Uuid(), nullable=True),
        sa.Column("purpose_id", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("dataset_ids", sa.JSON(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("period_start", _TS, nullable=False),
        sa.Column("period_end", _TS, nullable=False),
        sa.Column("charter_version", sa.String(length=32), nullable=False),
        sa.Column(
            "decision", _enum("decision", "permit", "deny", "needs_approval"), nullable=False
        ),
        sa.Column("obligations", sa.JSON(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column(
            "status",
            _enum("requeststatus", "pending", "approved", "rejected", "denied"),
            nullable=False,
        ),
        sa.Column("decided_at", _TS, nullable=True),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decision_note", sa.Text(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_access_request_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["client_pk"],
            ["oauth_client.id"],
            name=op.f("fk_access_request_client_pk_oauth_client"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_request")),
    )
    op.create_index(
        op.f("ix_access_request_organisation_id"), "access_request", ["organisation_id"]
    )
    op.create_index(op.f("ix_access_request_status"), "access_request", ["status"])

    op.create_table(
        "access_grant",
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("purpose_id", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("recipient_id", sa.String(length=64), nullable=False),
        sa.Column("dataset_ids", sa.JSON(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("obligations", sa.JSON(), nullable=False),
        sa.Column("starts_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("suspended_at", _TS, nullable=True),
        sa.Column("suspended_reason", sa.Text(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["access_request.id"],
            name=op.f("fk_access_grant_request_id_access_request"),
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_access_grant_organisation_id_organisation"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_grant")),
        sa.UniqueConstraint("request_id", name=op.f("uq_access_grant_request_id")),
    )
    op.create_index(op.f("ix_access_grant_organisation_id"), "access_grant", ["organisation_id"])
    op.create_index(op.f("ix_access_grant_expires_at"), "access_grant", ["expires_at"])

    op.create_table(
        "grant_delivery",
        sa.Column("grant_id", sa.Uuid(), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("first_served_at", _TS, nullable=False),
        sa.Column("last_served_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["grant_id"], ["access_grant.id"], name=op.f("fk_grant_delivery_grant_id_access_grant")
        ),
        sa.PrimaryKeyConstraint("grant_id", "subject_id", name=op.f("pk_grant_delivery")),
    )
    op.create_index(op.f("ix_grant_delivery_subject_id"), "grant_delivery", ["subject_id"])


def downgrade() -> None:
    op.drop_table("grant_delivery")
    op.drop_table("access_grant")
    op.drop_table("access_request")
