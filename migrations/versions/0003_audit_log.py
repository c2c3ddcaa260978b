"""Access log: leaves, encrypted detail, subjects' keys, Merkle nodes, checkpoints, the app role

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 09:00:00.000000

Existing audit rows become leaves (RFC 8785, version 1) with their old global subject tag and
their detail, which was stored in clear, kept in clear; the integrator seals them first.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import rfc8785
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_POSITION = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Every column of a leaf row but seq: the trigger checks that none of them ever changes.
_FROZEN = (
    "pos",
    "id",
    "occurred_at",
    "event",
    "actor",
    "subject_tag",
    "purpose",
    "consent_id",
    "decision",
    "reason",
    "leaf",
    "leaf_hash",
)


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    _drop_old_guard(postgresql)

    op.create_table(
        "audit_subject",
        sa.Column("lookup", sa.String(length=64), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=True),
        sa.Column("tag_key", sa.LargeBinary(), nullable=True),
        sa.Column("data_key", sa.LargeBinary(), nullable=True),
        sa.Column("last_leaf_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("lookup", name=op.f("pk_audit_subject")),
        sa.UniqueConstraint("tag", name=op.f("uq_audit_subject_tag")),
    )
    op.create_table(
        "merkle_node",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_merkle_node")),
    )
    op.create_table(
        "audit_checkpoint",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("size", name=op.f("pk_audit_checkpoint")),
    )
    with op.batch_alter_table("audit_checkpoint", schema=None) as batch_op:
        batch_op.create_index(
            "ix_audit_checkpoint_unsigned",
            ["size"],
            unique=False,
            sqlite_where=sa.text("note IS NULL"),
            postgresql_where=sa.text("note IS NULL"),
        )

    # The insertion order becomes the key: the integrator follows it (never a clock).
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.drop_constraint("pk_audit_entry", type_="primary")
        batch_op.add_column(sa.Column("pos", _POSITION, sa.Identity(), nullable=False))
        batch_op.create_primary_key("pk_audit_entry", ["pos"])
        batch_op.create_unique_constraint(batch_op.f("uq_audit_entry_id"), ["id"])
        batch_op.add_column(sa.Column("leaf", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=True))
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))

    details = _backfill()

    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.alter_column("leaf", existing_type=sa.LargeBinary(), nullable=False)
        batch_op.alter_column("leaf_hash", existing_type=sa.LargeBinary(length=32), nullable=False)
        batch_op.drop_column("detail")
        batch_op.drop_column("created_at")
        batch_op.create_unique_constraint(batch_op.f("uq_audit_entry_seq"), ["seq"])
        batch_op.create_index(
            "ix_audit_entry_unsealed",
            ["pos"],
            unique=False,
            sqlite_where=sa.text("seq IS NULL"),
            postgresql_where=sa.text("seq IS NULL"),
        )

    detail_table = op.create_table(
        "audit_detail",
        sa.Column("entry_id", sa.Uuid(), nullable=False),
        sa.Column("encrypted", sa.Boolean(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["audit_entry.id"], name=op.f("fk_audit_detail_entry_id_audit_entry")
        ),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_audit_detail")),
    )
    if details:
        op.bulk_insert(detail_table, details)

    _guard(postgresql)
    if postgresql:
        _grant()


def _backfill() -> list[dict[str, Any]]:
    """Make a version-1 leaf of every existing row, in insertion order, chaining each old
    subject tag's leaves; returns their detail rows (canonical JSON, in clear as before)."""
    entry = sa.table(
        "audit_entry",
        sa.column("pos", sa.Integer()),
        sa.column("id", sa.Uuid()),
        sa.column("occurred_at", sa.DateTime(timezone=True)),
        sa.column("event", sa.String()),
        sa.column("actor", sa.String()),
        sa.column("subject_tag", sa.String()),
        sa.column("purpose", sa.String()),
        sa.column("consent_id", sa.Uuid()),
        sa.column("decision", sa.String()),
        sa.column("reason", sa.String()),
        sa.column("detail", sa.JSON()),
        sa.column("leaf", sa.LargeBinary()),
        sa.column("leaf_hash", sa.LargeBinary()),
    )
    bind = op.get_bind()
    rows = bind.execute(sa.select(entry).order_by(entry.c.pos)).all()
    last: dict[str, bytes] = {}
    updates, details = [], []
    for row in rows:
        at = row.occurred_at if row.occurred_at.tzinfo else row.occurred_at.replace(tzinfo=UTC)
        at = at.astimezone(UTC).replace(microsecond=row.occurred_at.microsecond // 1000 * 1000)
        body = rfc8785.dumps(dict(row.detail)) if row.detail else None
        prev = last.get(row.subject_tag) if row.subject_tag else None
        leaf = _leaf(row, at, prev, body)
        leaf_hash = hashlib.sha256(b"\x00" + leaf).digest()  # RFC 9162 §2.1.1
        if row.subject_tag:
            last[row.subject_tag] = leaf_hash
        updates.append({"b_pos": row.pos, "b_at": at, "b_leaf": leaf, "b_hash": leaf_hash})
        if body is not None:
            details.append({"entry_id": row.id, "encrypted": False, "body": body})
    if updates:
        bind.execute(
            entry.update()
            .where(entry.c.pos == sa.bindparam("b_pos"))
            .values(
                occurred_at=sa.bindparam("b_at"),
                leaf=sa.bindparam("b_leaf"),
                leaf_hash=sa.bindparam("b_hash"),
            ),
            updates,
        )
    return details


def _leaf(row: Any, at: datetime, prev: bytes | None, body: bytes | None) -> bytes:
    """The version-1 leaf, as audit.service.leaves writes it (frozen here, as migrations are)."""
    consent_id: uuid.UUID | None = row.consent_id
    return rfc8785.dumps(
        {
            "v": 1,
            "id": str(row.id),
            "time": f"{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond // 1000:03d}Z",
            "event": row.event,
            "actor": row.actor,
            "subject": row.subject_tag,
            "prev": prev.hex() if prev is not None else None,
            "purpose": row.purpose,
            "consent": str(consent_id) if consent_id is not None else None,
            "decision": row.decision,
            "reason": row.reason,
            "request": None,
            "detail": hashlib.sha256(body).hexdigest() if body is not None else None,
        }
    )


def _drop_old_guard(postgresql: bool) -> None:
    """0001's triggers refuse every UPDATE; the backfill needs one, the integrator too."""
    if postgresql:
        op.execute("DROP TRIGGER IF EXISTS audit_entry_no_update ON audit_entry")
        op.execute("DROP TRIGGER IF EXISTS audit_entry_no_truncate ON audit_entry")
        op.execute("DROP FUNCTION IF EXISTS audit_entry_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_entry_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_entry_no_delete")


def _guard(postgresql: bool) -> None:
    """Append-only, whatever the application does: a leaf gets its seq once, a checkpoint its
    note once; nodes and details never change; nothing is deleted or truncated."""
    if postgresql:
        op.execute(
            """
            CREATE OR REPLACE FUNCTION tiers_audit_append_only() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END; $$ LANGUAGE plpgsql;

            CREATE OR REPLACE FUNCTION audit_entry_seal_once() RETURNS trigger AS $$
            DECLARE expected audit_entry;
            BEGIN
                IF TG_OP = 'UPDATE' AND OLD.seq IS NULL AND NEW.seq >= 0 THEN
                    expected := OLD;
                    expected.seq := NEW.seq;
                    IF NEW IS NOT DISTINCT FROM expected THEN RETURN NEW; END IF;
                END IF;
                RAISE EXCEPTION 'audit_entry is append-only: only its seq may be set, once';
            END; $$ LANGUAGE plpgsql;

            CREATE OR REPLACE FUNCTION audit_checkpoint_sign_once() RETURNS trigger AS $$
            DECLARE expected audit_checkpoint;
            BEGIN
                IF TG_OP = 'UPDATE' AND OLD.note IS NULL AND NEW.note IS NOT NULL
                        AND OLD.signed_at IS NULL THEN
                    expected := OLD;
                    expected.note := NEW.note;
                    expected.signed_at := NEW.signed_at;
                    IF NEW IS NOT DISTINCT FROM expected THEN RETURN NEW; END IF;
                END IF;
                RAISE EXCEPTION 'audit_checkpoint is append-only: only its note may be set, once';
            END; $$ LANGUAGE plpgsql;

            CREATE TRIGGER audit_entry_seal_once BEFORE UPDATE OR DELETE ON audit_entry
                FOR EACH ROW EXECUTE FUNCTION audit_entry_seal_once();
            CREATE TRIGGER audit_checkpoint_sign_once BEFORE UPDATE OR DELETE ON audit_checkpoint
                FOR EACH ROW EXECUTE FUNCTION audit_checkpoint_sign_once();
            CREATE TRIGGER merkle_node_append_only BEFORE UPDATE OR DELETE ON merkle_node
                FOR EACH ROW EXECUTE FUNCTION tiers_audit_append_only();
            CREATE TRIGGER audit_detail_append_only BEFORE UPDATE OR DELETE ON audit_detail
                FOR EACH ROW EXECUTE FUNCTION tiers_audit_append_only();
            CREATE TRIGGER audit_subject_no_delete BEFORE DELETE ON audit_subject
                FOR EACH ROW EXECUTE FUNCTION tiers_audit_append_only();
            """
        )
        for table in ("audit_entry", "audit_checkpoint", "merkle_node", "audit_detail"):
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION tiers_audit_append_only()"
            )
        op.execute(
            "CREATE TRIGGER audit_subject_no_truncate BEFORE TRUNCATE ON audit_subject "
            "FOR EACH STATEMENT EXECUTE FUNCTION tiers_audit_append_only()"
        )
        return
    unchanged = " AND ".join(f"NEW.{c} IS OLD.{c}" for c in _FROZEN)
    op.execute(
        "CREATE TRIGGER audit_entry_seal_once BEFORE UPDATE ON audit_entry "
        f"WHEN NOT (OLD.seq IS NULL AND NEW.seq IS NOT NULL AND NEW.seq >= 0 AND {unchanged}) "
        "BEGIN "
        "SELECT RAISE(ABORT, 'audit_entry is append-only: only its seq may be set, once'); END;"
    )
    unchanged = " AND ".join(f"NEW.{c} IS OLD.{c}" for c in ("size", "root", "created_at"))
    op.execute(
        "CREATE TRIGGER audit_checkpoint_sign_once BEFORE UPDATE ON audit_checkpoint "
        "WHEN NOT (OLD.note IS NULL AND NEW.note IS NOT NULL AND OLD.signed_at IS NULL "
        f"AND {unchanged}) BEGIN "
        "SELECT RAISE(ABORT, 'audit_checkpoint is append-only: only its note may be set, once');"
        " END;"
    )
    for table, verbs in (
        ("audit_entry", ("DELETE",)),
        ("audit_checkpoint", ("DELETE",)),
        ("merkle_node", ("UPDATE", "DELETE")),
        ("audit_detail", ("UPDATE", "DELETE")),
        ("audit_subject", ("DELETE",)),
    ):
        for verb in verbs:
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;"
            )


def _grant() -> None:
    """The role the application runs as (its login role is a member, and owns nothing):
    everything on the other tables, but on the log only what appending and sealing need."""
    op.execute(
        """
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tiers_app') THEN
                BEGIN
                    CREATE ROLE tiers_app NOLOGIN;
                EXCEPTION
                    WHEN duplicate_object THEN NULL;  -- made meanwhile by another migration
                    WHEN insufficient_privilege THEN
                        RAISE WARNING 'role tiers_app not created (needs CREATEROLE): create it '
                            'and grant as migration 0003 does';
                        RETURN;
                END;
            END IF;
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO tiers_app', current_schema());
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I '
                           'TO tiers_app', current_schema());
            EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO tiers_app',
                           current_schema());
            EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, '
                           'DELETE ON TABLES TO tiers_app', current_schema());
            EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT '
                           'ON SEQUENCES TO tiers_app', current_schema());
            REVOKE ALL ON audit_entry, audit_detail, audit_subject, merkle_node, audit_checkpoint,
                consent_event, alembic_version FROM tiers_app;
            GRANT SELECT, INSERT ON audit_entry, audit_detail, audit_subject, merkle_node,
                audit_checkpoint, consent_event TO tiers_app;
            GRANT SELECT ON alembic_version TO tiers_app;
            GRANT UPDATE (seq) ON audit_entry TO tiers_app;
            GRANT UPDATE (note, signed_at) ON audit_checkpoint TO tiers_app;
            GRANT UPDATE (tag, tag_key, data_key, last_leaf_hash, erased_at)
                ON audit_subject TO tiers_app;
        END $$;
        """
    )


def downgrade() -> None:
    # Going back would drop the tree and the checkpoints already published: a log that can
    # be rewritten by a downgrade is not tamper-evident. Restore a backup instead.
    raise NotImplementedError("the access log cannot be downgraded; restore a backup")
