"""The access log's tables: leaves, their detail, the tree's nodes, checkpoints, subjects' keys.

Append-only by trigger and by grants (migration 0003): a leaf may only get its log index `seq`
once, a checkpoint its signed note once; nodes and details are insert-only. Only the subject
keys change, and only to be destroyed (crypto-shredding, shared/DESIGN.md "Audit").
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base, HasId

# SQLite only auto-numbers an INTEGER PRIMARY KEY (the rowid); PostgreSQL gets a bigint identity.
_POSITION = BigInteger().with_variant(Integer(), "sqlite")


class AuditEntry(Base):
    """One event: a leaf of the log. The columns beside `leaf` repeat what it says, for filters.

    No names, e-mails, tokens or holder identifiers: subjects appear as per-subject tags.
    `pos` is the insertion order the integrator follows; `seq` is the log index it assigns
    (gapless, never from a sequence: RFC 9162 indices have no holes, sequences do).
    """

    __tablename__ = "audit_entry"
    pos: Mapped[int] = mapped_column(_POSITION, Identity(), primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(unique=True)
    occurred_at: Mapped[datetime] = mapped_column(index=True)
    event: Mapped[str] = mapped_column(String(64), index=True)  # package:subject:action
    actor: Mapped[str] = mapped_column(String(128))
    subject_tag: Mapped[str | None] = mapped_column(String(64), index=True)
    purpose: Mapped[str | None] = mapped_column(String(64))
    consent_id: Mapped[uuid.UUID | None]
    decision: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(200))
    leaf: Mapped[bytes] = mapped_column(LargeBinary)  # RFC 8785 canonical JSON
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))  # SHA-256(0x00 || leaf)
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)

    __table_args__ = (
        # What the integrator and the fail-closed guard read: the unsealed rows, in order.
        Index(
            "ix_audit_entry_unsealed",
            "pos",
            postgresql_where=text("seq IS NULL"),
            sqlite_where=text("seq IS NULL"),
        ),
    )


class AuditDetail(Base):
    """The detail of one entry, kept off the leaf (which commits to SHA-256 of `body`).

    `encrypted`: AES-256-GCM under the subject's data key (nonce || ciphertext), unreadable
    once that key is destroyed; otherwise canonical JSON of non-personal facts.
    """

    __tablename__ = "audit_detail"
    entry_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("audit_entry.id"), primary_key=True)
    encrypted: Mapped[bool]
    body: Mapped[bytes] = mapped_column(LargeBinary)


class AuditSubject(Base):
    """A citizen as the log knows them, found by a global keyed lookup of their id.

    Holds their own keys (wrapped with the audit KEK): the tag key makes their leaves' tag,
    the data key encrypts their detail. Erasure sets both (and `tag`, `last_leaf_hash`) to
    NULL: the tag is then unlinkable and the detail unreadable, while the tree still verifies.
    The row is locked while a leaf is chained to `last_leaf_hash`, so a chain never forks.
    """

    __tablename__ = "audit_subject"
    lookup: Mapped[str] = mapped_column(String(64), primary_key=True)
    tag: Mapped[str | None] = mapped_column(String(64), unique=True)
    tag_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    data_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    last_leaf_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime]
    erased_at: Mapped[datetime | None]


class MerkleNode(Base):
    """A complete subtree of the log (level 0: the leaf hashes); written once, never changed."""

    __tablename__ = "merkle_node"
    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditCheckpoint(Base):
    """The tree head after one integration, kept forever; `note` is its C2SP signed note,
    written after the integration committed (never before: a rolled-back head is never signed).
    """

    __tablename__ = "audit_checkpoint"
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime]
    note: Mapped[str | None] = mapped_column(Text)
    signed_at: Mapped[datetime | None]

    __table_args__ = (
        Index(
            "ix_audit_checkpoint_unsigned",
            "size",
            postgresql_where=text("note IS NULL"),
            sqlite_where=text("note IS NULL"),
        ),
    )


class AuditorAccount(HasId, Base):
    """A portal account that may read the whole log on the auditor pages (`tiers auditor add`).

    `citizen_id` and `organisation` name rows of other packages by value, without foreign
    keys: audit depends on nothing of ours (shared/DESIGN.md). `organisation` is the slug of
    the auditing body, when there is one.
    """

    __tablename__ = "auditor_account"
    citizen_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    organisation: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text, default="")
