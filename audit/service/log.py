"""The log itself: the integrator, checkpoint signing, proofs, receipts and the fail-closed guard.

One integrator at a time (a PostgreSQL advisory lock; SQLite's write lock) gives each unsealed
leaf the next index, in its own order, stores the complete subtrees it makes and records the
tree head. Signing is a separate step that only sees committed heads: a log must never sign a
head that a rollback could replace by another of the same size (C2SP tlog-checkpoint).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar, cast
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Table, bindparam, func, insert, select, text, tuple_, update
from sqlalchemy.orm import Session

from audit import merkle, notes
from audit.models import AuditCheckpoint, AuditEntry, MerkleNode
from common.clock import as_utc, utcnow
from common.errors import InvalidInputError, ServiceUnavailableError
from common.settings import setting

# pg_try_advisory_xact_lock key of the integrator: any constant the application owns.
INTEGRATOR_LOCK = 0x7469657273_0A0D17  # "tiers", "audit"
LOG_KEY_FILE = "audit-log-ed25519.pem"
RETRY_AFTER_SECONDS = 5  # a few integrator periods (broker/config.py runs it every 2 s)
MAX_ENTRIES_PAGE = 1000

_ENTRY = cast(Table, AuditEntry.__table__)
_NODE = cast(Table, MerkleNode.__table__)
_CHECKPOINT = cast(Table, AuditCheckpoint.__table__)
_SEAL = (
    update(_ENTRY)
    .where(_ENTRY.c.pos == bindparam("b_pos"))
    .values(seq=bindparam("b_seq"))  # executemany by key; the trigger lets only this through
)
_SIGN = (
    update(_CHECKPOINT)
    .where(_CHECKPOINT.c.size == bindparam("b_size"), _CHECKPOINT.c.note.is_(None))
    .values(note=bindparam("b_note"), signed_at=bindparam("b_at"))
)
_KEYS: dict[str, Ed25519PrivateKey] = {}  # log key per file: it never changes once made
T = TypeVar("T")


# -- the tree's nodes, in the merkle_node table --------------------------------------------------


class _Nodes:
    """A merkle.NodeStore over merkle_node, with the nodes of this integration kept pending."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.known: dict[tuple[int, int], bytes] = {}
        self.pending: list[dict[str, object]] = []

    def get(self, level: int, index: int) -> bytes:
        if (level, index) not in self.known:
            found = self.session.connection().scalar(
                select(_NODE.c.hash).where(_NODE.c.level == level, _NODE.c.idx == index)
            )
            if found is None:
                raise KeyError((level, index))
            self.known[level, index] = found
        return self.known[level, index]

    def prefetch(self, wanted: Iterable[tuple[int, int]]) -> None:
        keys = sorted(set(wanted) - self.known.keys())
        if keys:
            rows = self.session.connection().execute(
                select(_NODE.c.level, _NODE.c.idx, _NODE.c.hash).where(
                    tuple_(_NODE.c.level, _NODE.c.idx).in_(keys)
                )
            )
            self.known.update(((r.level, r.idx), r.hash) for r in rows)

    def put(self, level: int, index: int, value: bytes) -> None:
        self.known[level, index] = value
        self.pending.append({"level": level, "idx": index, "hash": value})

    def flush(self) -> None:
        if self.pending:
            self.session.connection().execute(insert(_NODE), self.pending)
            self.pending = []


class _Recorder:
    """A NodeStore that only notes what is asked: a first pass names every node a proof needs."""

    def __init__(self) -> None:
        self.wanted: set[tuple[int, int]] = set()

    def get(self, level: int, index: int) -> bytes:
        self.wanted.add((level, index))
        return bytes(merkle.HASH_SIZE)


class _Fetched:
    def __init__(self, nodes: dict[tuple[int, int], bytes]) -> None:
        self.nodes = nodes

    def get(self, level: int, index: int) -> bytes:
        return self.nodes[level, index]


def _from_nodes(session: Session, compute: Callable[[merkle.NodeStore], T]) -> T:
    """Run `compute` over stored nodes with one read: the O(log n) nodes it needs, together."""
    recorder = _Recorder()
    compute(recorder)
    nodes: dict[tuple[int, int], bytes] = {}
    if recorder.wanted:
        rows = session.connection().execute(
            select(_NODE.c.level, _NODE.c.idx, _NODE.c.hash).where(
                tuple_(_NODE.c.level, _NODE.c.idx).in_(sorted(recorder.wanted))
            )
        )
        nodes = {(r.level, r.idx): r.hash for r in rows}
    return compute(_Fetched(nodes))


# -- integrating and signing ---------------------------------------------------------------------


def integrate(session: Session, *, batch: int = 1000) -> int:
    """Seal up to `batch` unsealed leaves: indices size, size+1, … and the new tree head.

    Returns how many were sealed (0 when another integrator holds the lock). Gapless and
    never skipping: it takes `seq IS NULL` rows, not rows past a watermark, so a transaction
    that commits late is sealed by a later run. The head is recorded unsigned; `sign_pending`
    signs it after this transaction commits.
    """
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # Held until commit or rollback. SQLite: BEGIN IMMEDIATE already serialises writers.
        locked = connection.scalar(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": INTEGRATOR_LOCK}
        )
        if not locked:
            return 0
    size, head = connection.execute(
        select(
            select(func.coalesce(func.max(_ENTRY.c.seq) + 1, 0)).scalar_subquery(),
            select(func.max(_CHECKPOINT.c.size)).scalar_subquery(),
        )
    ).one()
    if (head or 0) != size:
        # Every integration records its head; a mismatch means someone wrote around us.
        raise RuntimeError(f"the log has {size} sealed leaves but its last head has {head}")
    rows = connection.execute(
        select(_ENTRY.c.pos, _ENTRY.c.leaf_hash)
        .where(_ENTRY.c.seq.is_(None))
        .order_by(_ENTRY.c.pos)
        .limit(batch)
    ).all()
    if not rows:
        if head is None:  # the empty log has a head too, so a checkpoint exists from the start
            _record_head(session, 0, merkle.EMPTY_ROOT)
        return 0
    connection.execute(_SEAL, [{"b_pos": r.pos, "b_seq": size + i} for i, r in enumerate(rows)])
    nodes = _Nodes(session)
    # The only stored nodes appending reads are the current tree's maximal complete subtrees
    # (popcount(size) of them), and the new root needs no others: fetch them in one query.
    nodes.prefetch(
        (level, (size >> level) - 1) for level in range(size.bit_length()) if size >> level & 1
    )
    new_size = merkle.append(nodes.put, nodes.get, size, [r.leaf_hash for r in rows])
    nodes.flush()
    _record_head(session, new_size, merkle.root(nodes, new_size))
    return len(rows)


def _record_head(session: Session, size: int, root: bytes) -> None:
    session.connection().execute(
        insert(_CHECKPOINT),
        {"size": size, "root": root, "created_at": utcnow(), "note": None, "signed_at": None},
    )


def sign_pending(session: Session) -> int:
    """Sign every committed, unsigned tree head as a C2SP checkpoint; returns how many.

    Call it in a transaction after the integration's has committed. Before signing, each head
    is checked against the stored tree (its root, and its consistency with the last signed
    head), so a head the log never built is refused, never signed.
    """
    pending = (
        session.connection()
        .execute(
            select(_CHECKPOINT.c.size, _CHECKPOINT.c.root)
            .where(_CHECKPOINT.c.note.is_(None))
            .order_by(_CHECKPOINT.c.size)
        )
        .all()
    )
    if not pending:
        return 0
    key, origin = _log_private_key(), log_origin()
    last = _latest_signed(session)
    signed = 0
    for size, root in pending:
        _check_head(session, last, size, root)
        note = notes.sign_note(notes.checkpoint_body(origin, size, root), origin, key)
        done = session.connection().execute(
            _SIGN, {"b_size": size, "b_note": note, "b_at": utcnow()}
        )
        signed += done.rowcount
        last = _Head(size, root, note)
    return signed


def _check_head(session: Session, last: _Head | None, size: int, root: bytes) -> None:
    def built(store: merkle.NodeStore) -> tuple[bytes, list[bytes]]:
        proof = []
        if last is not None and 0 < last.size <= size:
            proof = merkle.consistency_proof(store, last.size, size)
        return merkle.root(store, size), proof

    try:
        stored_root, proof = _from_nodes(session, built)
    except KeyError:  # a node it would need was never built
        stored_root, proof = b"", []
    consistent = (
        last is None
        or last.size == 0
        or merkle.verify_consistency(last.size, size, last.root, root, proof)
    )
    if stored_root != root or not consistent or (last is not None and last.size > size):
        raise RuntimeError(f"refusing to sign the head of size {size}: it is not the stored tree")


# -- the log key and origin -----------------------------------------------------------------------


def log_origin() -> str:
    """The checkpoint origin (also the key name): AUDIT_LOG_ORIGIN, else `<issuer host>/tiers/
    audit-log`. Set it explicitly in production: an origin names a log for ever."""
    configured: str | None = setting("AUDIT_LOG_ORIGIN")
    if configured:
        return configured
    host = urlsplit(setting("ISSUER")).netloc or "localhost"
    return f"{host}/tiers/audit-log"


def log_key() -> str:
    """The verifier key of the log in C2SP note form (`<origin>+<key id>+<base64 key>`)."""
    return notes.verifier_key(log_origin(), _log_private_key().public_key())


def _log_private_key() -> Ed25519PrivateKey:
    """The Ed25519 log key in KEYS_DIR, made on first use.

    Written to a private temporary file, then linked into place: link fails if the file
    exists, so two processes starting together agree on one key (never a half-written one).
    """
    path = Path(setting("KEYS_DIR")) / LOG_KEY_FILE
    cached = _KEYS.get(str(path))
    if cached is not None:
        return cached
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.parent / f".{LOG_KEY_FILE}.{uuid.uuid4().hex}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(notes.dump_log_key(notes.generate_log_key()))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    key = notes.load_log_key(path.read_bytes())
    _KEYS[str(path)] = key
    return key


# -- checkpoints, proofs and receipts ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Head:
    size: int
    root: bytes
    note: str


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """RFC 9162 §2.1.3 audit path of leaf `index` in the tree of `size` leaves."""

    index: int
    size: int
    leaf_hash: bytes
    root: bytes
    proof: list[bytes]


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """RFC 9162 §2.1.4 proof that the tree of `second` leaves extends the one of `first`."""

    first: int
    second: int
    first_root: bytes
    second_root: bytes
    proof: list[bytes]


@dataclass(frozen=True, slots=True)
class Leaf:
    index: int
    leaf: bytes


def _latest_signed(session: Session) -> _Head | None:
    row = (
        session.connection()
        .execute(
            select(_CHECKPOINT.c.size, _CHECKPOINT.c.root, _CHECKPOINT.c.note)
            .where(_CHECKPOINT.c.note.is_not(None))
            .order_by(_CHECKPOINT.c.size.desc())
            .limit(1)
        )
        .first()
    )
    return _Head(row.size, row.root, row.note) if row is not None else None


def checkpoint(session: Session) -> str | None:
    """The latest signed checkpoint (a C2SP signed note), or None before the first one."""
    head = _latest_signed(session)
    return head.note if head is not None else None


def signed_size(session: Session) -> int:
    """How many leaves the latest signed checkpoint covers (0 before the first)."""
    head = _latest_signed(session)
    return head.size if head is not None else 0


def inclusion(session: Session, index: int, size: int) -> InclusionProof:
    """The inclusion proof of leaf `index` in the tree of `size` leaves, from stored nodes.

    InvalidInputError (per field) unless 0 <= index < size <= the latest signed size.
    """
    limit = signed_size(session)
    errors: dict[str, list[str]] = {}
    if size < 1 or size > limit:
        errors["size"] = [f"Must be between 1 and {limit}, the latest signed checkpoint's size."]
    if not 0 <= index < max(size, 1):
        errors["index"] = ["Must be at least 0 and less than size."]
    if errors:
        raise InvalidInputError("No such proof in this log.", fields=errors)

    def build(store: merkle.NodeStore) -> tuple[bytes, bytes, list[bytes]]:
        return (
            store.get(0, index),
            merkle.root(store, size),
            merkle.inclusion_proof(store, index, size),
        )

    leaf_hash, root, proof = _from_nodes(session, build)
    return InclusionProof(index, size, leaf_hash, root, proof)


def consistency(session: Session, first: int, second: int) -> ConsistencyProof:
    """The consistency proof between two tree sizes, from stored nodes.

    InvalidInputError (per field) unless 1 <= first <= second <= the latest signed size.
    """
    limit = signed_size(session)
    errors: dict[str, list[str]] = {}
    if first < 1 or first > second:
        errors["from"] = ["Must be at least 1 and at most to."]
    if second < 1 or second > limit:
        errors["to"] = [f"Must be between 1 and {limit}, the latest signed checkpoint's size."]
    if errors:
        raise InvalidInputError("No such proof in this log.", fields=errors)

    def build(store: merkle.NodeStore) -> tuple[bytes, bytes, list[bytes]]:
        return (
            merkle.root(store, first),
            merkle.root(store, second),
            merkle.consistency_proof(store, first, second),
        )

    first_root, second_root, proof = _from_nodes(session, build)
    return ConsistencyProof(first, second, first_root, second_root, proof)


def receipt(session: Session, entry_id: uuid.UUID) -> str | None:
    """A C2SP tlog-proof of the entry against the latest signed checkpoint: offline proof that
    it is in the log. None while it is not yet covered by a signed checkpoint."""
    seq = session.connection().scalar(select(_ENTRY.c.seq).where(_ENTRY.c.id == entry_id))
    head = _latest_signed(session)
    if seq is None or head is None or seq >= head.size:
        return None
    proof = _from_nodes(session, lambda store: merkle.inclusion_proof(store, seq, head.size))
    return notes.tlog_proof(seq, proof, head.note)


def sealed_leaves(session: Session, *, start: int, limit: int) -> tuple[int, list[Leaf]]:
    """Sealed leaves from index `start` (at most `limit`), within the latest signed checkpoint;
    returns that checkpoint's size too, so an auditor knows which head they belong to."""
    size = signed_size(session)
    limit = max(0, min(limit, MAX_ENTRIES_PAGE, size - start))
    if limit == 0:
        return size, []
    rows = (
        session.connection()
        .execute(
            select(_ENTRY.c.seq, _ENTRY.c.leaf)
            .where(_ENTRY.c.seq >= start, _ENTRY.c.seq < start + limit)
            .order_by(_ENTRY.c.seq)
        )
        .all()
    )
    return size, [Leaf(r.seq, r.leaf) for r in rows]


# -- fail closed -----------------------------------------------------------------------------------


def require_sealed(session: Session, *, max_lag: timedelta | None = None) -> None:
    """Refuse (ServiceUnavailableError, with Retry-After) when sealing lags behind: the oldest
    unsealed leaf, or the oldest unsigned head, is older than `max_lag` (AUDIT_MAX_SEAL_LAG).

    Data releases call it before releasing anything (shared/DESIGN.md "Fail closed"); nothing
    else does, so the authorization server and the portal stay up.
    """
    bound = utcnow() - (max_lag if max_lag is not None else setting("AUDIT_MAX_SEAL_LAG"))
    # The integrator's own order: the first unsealed row is the oldest one (pos follows time).
    unsealed = session.connection().scalar(
        select(_ENTRY.c.occurred_at).where(_ENTRY.c.seq.is_(None)).order_by(_ENTRY.c.pos).limit(1)
    )
    unsigned = session.connection().scalar(
        select(_CHECKPOINT.c.created_at)
        .where(_CHECKPOINT.c.note.is_(None))
        .order_by(_CHECKPOINT.c.size)
        .limit(1)
    )
    late = [as_utc(t) for t in (unsealed, unsigned) if t is not None and as_utc(t) < bound]
    if late:
        raise ServiceUnavailableError(
            "The access log is not sealing in time; nothing is released until it catches up.",
            retry_after=RETRY_AFTER_SECONDS,
        )
