"""Leaves: `append`, the one door into the access log, and the keys that protect each citizen.

A leaf is RFC 8785 canonical JSON with nothing personal in clear (shared/DESIGN.md "Audit"):
a citizen appears as a tag made with their own key, their detail is encrypted with their own
key, and destroying both keys (erasure) leaves every proof valid. Callers pass their session;
the row is written in their transaction, so it exists iff the action it records does.
Nothing commits here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

import rfc8785
import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Insert, Select, Table, Update, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from audit import merkle
from audit.models import AuditDetail, AuditEntry, AuditSubject
from common.clock import utcnow
from common.settings import derived_key, keyed_tag

LEAF_VERSION = 1
MAX_LEAF_BYTES = 4096  # a leaf is a commitment, not a payload (T38: bounded, whatever comes in)
MAX_DETAIL_KEYS = 16
MAX_DETAIL_BYTES = 16 * 1024
APPENDED = "audit_appended"  # session.info flag: audit.tasks kicks the integrator after commit
ERASE_EVENT = "audit:subject:erase"
# The global lookup only finds a subject's row; it never appears in a leaf.
LOOKUP_PURPOSE = "audit-subject-lookup"
# Before migration 0003, tags were keyed_tag("audit-subject", id): such leaves stay as they are.
LEGACY_TAG_PURPOSE = "audit-subject"
_NONCE = 12  # AES-GCM's 96-bit nonce, random per encryption (NIST SP 800-38D §8.2.2)
_LIMITS = {"event": 64, "actor": 128, "purpose": 64, "decision": 32, "reason": 200}

# RFC 8785 for what a leaf holds (ASCII keys; strings, null and the integer 1) is exactly
# Python's sorted, compact JSON without ASCII escaping: same member order, same string escapes
# (ECMAScript's JSON.stringify and CPython both write \b \f \n \r \t and \u00xx), and lone
# surrogates refused when encoding to UTF-8. The C encoder does it several times faster than
# the `rfc8785` package, on the hot path; tests/audit/test_log.py checks both agree. Detail,
# which may hold anything JSON, goes through `rfc8785` itself.
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode

_ENTRY = cast(Table, AuditEntry.__table__)
_DETAIL = cast(Table, AuditDetail.__table__)
_SUBJECT = cast(Table, AuditSubject.__table__)

# Built once: `append` is on the hot path of token introspection; Core, no unit of work.
# `inline()`: nobody needs the new row's `pos` back, so PostgreSQL gets no RETURNING to parse.
_INSERT_ENTRY = insert(_ENTRY).inline()
_INSERT_DETAIL = insert(_DETAIL).inline()
_LOCK_SUBJECT = (
    select(_SUBJECT.c.tag, _SUBJECT.c.tag_key, _SUBJECT.c.data_key, _SUBJECT.c.last_leaf_hash)
    .where(_SUBJECT.c.lookup == bindparam("lookup"))
    .with_for_update()  # one chain per subject: concurrent appends wait here (§5.3)
)
_NEW_SUBJECT: dict[str, Insert] = {
    "postgresql": postgresql.insert(_SUBJECT).on_conflict_do_nothing(index_elements=["lookup"]),
    "sqlite": sqlite.insert(_SUBJECT).on_conflict_do_nothing(index_elements=["lookup"]),
}
_CHAIN = (
    update(_SUBJECT)
    .where(_SUBJECT.c.lookup == bindparam("b_lookup"))
    .values(
        tag=bindparam("b_tag"),
        tag_key=bindparam("b_tag_key"),
        data_key=bindparam("b_data_key"),
        last_leaf_hash=bindparam("b_last"),
    )
)
# PostgreSQL: the entry, its detail and the new end of the subject's chain in one statement
# (data-modifying CTEs), one round trip instead of three on the hot path. The foreign key of
# the detail is checked at the end of the statement, when the entry exists.
_ENTRY_FIELDS = (
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


def _chained_append(with_detail: bool) -> Update:
    statement = _CHAIN.add_cte(
        insert(_ENTRY)
        .values({name: bindparam(name, type_=_ENTRY.c[name].type) for name in _ENTRY_FIELDS})
        .cte("new_entry")
    )
    if with_detail:
        statement = statement.add_cte(
            insert(_DETAIL)
            .values(
                entry_id=bindparam("id", type_=_DETAIL.c.entry_id.type),
                encrypted=bindparam("d_encrypted", type_=_DETAIL.c.encrypted.type),
                body=bindparam("d_body", type_=_DETAIL.c.body.type),
            )
            .cte("new_detail")
        )
    return statement


_CHAINED_APPEND = {True: _chained_append(True), False: _chained_append(False)}


def _swap_append(with_detail: bool) -> Select[int]:
    """PostgreSQL, when this process knows the end of the subject's chain: move the end from
    `b_expected` to the new leaf only if it is still there and the subject's keys are the same,
    and insert the entry (and its detail) only if it moved. One round trip, no lock read
    first; the UPDATE locks the row until commit, so the chain cannot fork. Answers 1 when
    the entry was written, 0 when the chain had moved on (the caller then locks and reads)."""
    chain = (
        update(_SUBJECT)
        .where(
            _SUBJECT.c.lookup == bindparam("b_lookup"),
            _SUBJECT.c.tag == bindparam("b_tag"),
            _SUBJECT.c.last_leaf_hash.is_not_distinct_from(
                bindparam("b_expected", type_=_SUBJECT.c.last_leaf_hash.type)
            ),
        )
        .values(last_leaf_hash=bindparam("b_last"))
        .returning(_SUBJECT.c.lookup)
        .cte("chain")
    )
    values = [sa.cast(bindparam(name), _ENTRY.c[name].type) for name in _ENTRY_FIELDS]
    entry = insert(_ENTRY).from_select(list(_ENTRY_FIELDS), select(*values).select_from(chain))
    statement = select(func.count()).select_from(chain).add_cte(entry.cte("new_entry"))
    if with_detail:
        detail = insert(_DETAIL).from_select(
            ["entry_id", "encrypted", "body"],
            select(
                sa.cast(bindparam("id"), _DETAIL.c.entry_id.type),
                sa.cast(bindparam("d_encrypted"), _DETAIL.c.encrypted.type),
                sa.cast(bindparam("d_body"), _DETAIL.c.body.type),
            ).select_from(chain),
        )
        statement = statement.add_cte(detail.cte("new_detail"))
    return statement


_SWAP_APPEND = {True: _swap_append(True), False: _swap_append(False)}


class _KnownEnds:
    """The end of each subject's chain as this process last wrote it (PostgreSQL only): the
    next append about them tries `_SWAP_APPEND` first.

    A stale end (another process appended, a transaction rolled back, an erasure) only costs
    the fallback: the swap finds the chain moved, and the append locks and reads as without
    it. What is kept holds the subject's keys, still wrapped. So an erasure in another
    process leaves no copy behind for long: ends are forgotten `KEEP` seconds after they were
    written, and the oldest go first when `LIMIT` are kept.
    """

    KEEP = 10.0  # seconds; a citizen's writes in one request, or one burst, come within it
    LIMIT = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._ends: OrderedDict[str, tuple[float, _Keys]] = OrderedDict()
        self._lock = threading.Lock()
        self._clock = clock

    def get(self, lookup: str) -> _Keys | None:
        with self._lock:
            self._forget_old(self._clock())
            found = self._ends.get(lookup)
            return replace(found[1]) if found is not None else None

    def put(self, keys: _Keys) -> None:
        """Remember `keys`, which the caller hands over (it keeps no reference to them)."""
        with self._lock:
            now = self._clock()
            self._ends.pop(keys.lookup, None)
            self._ends[keys.lookup] = (now, keys)
            self._forget_old(now)

    def forget(self, lookup: str) -> None:
        with self._lock:
            self._ends.pop(lookup, None)

    def _forget_old(self, now: float) -> None:
        while self._ends:
            lookup, (written, _) = next(iter(self._ends.items()))
            if now - written < self.KEEP and len(self._ends) <= self.LIMIT:
                return
            del self._ends[lookup]


_ENDS = _KnownEnds()
_ERASE = (
    update(_SUBJECT)
    .where(_SUBJECT.c.lookup == bindparam("b_lookup"))
    .values(tag=None, tag_key=None, data_key=None, last_leaf_hash=None, erased_at=bindparam("b_at"))
)


@dataclass(frozen=True, slots=True)
class SubjectEntry:
    """One entry of a citizen's own log, detail decrypted (their "who accessed my data")."""

    id: uuid.UUID
    index: int | None  # the log index; None until the integrator sealed it
    occurred_at: datetime
    event: str
    actor: str
    purpose: str | None
    consent_id: uuid.UUID | None
    decision: str | None
    reason: str | None
    detail: dict[str, Any] | None
    leaf: bytes

    @property
    def sealed(self) -> bool:
        return self.index is not None


@dataclass(slots=True)
class _Keys:
    """A subject's row, locked for this transaction: wrapped keys and the end of its chain."""

    lookup: str
    tag: str
    wrapped_tag_key: bytes
    wrapped_data_key: bytes
    last: bytes | None

    def data_key(self) -> bytes:
        return _unwrap(self.lookup, "data", self.wrapped_data_key)


def append(
    session: Session,
    *,
    event: str,
    actor: str,
    subject_id: uuid.UUID | None = None,
    purpose: str | None = None,
    consent_id: uuid.UUID | None = None,
    decision: str | None = None,
    reason: str | None = None,
    detail: Mapping[str, Any] | None = None,
    request_hash: str | None = None,
) -> uuid.UUID:
    """Append one entry in the caller's transaction: it exists iff the action it records does.

    Returns the entry's id (for `receipt` once sealed). ValueError for anything unbounded: a
    field longer than its column, more than 16 detail keys or 16 KiB, a leaf over 4 KiB.
    Events about a citizen lock that citizen's row until commit, so their chain never forks.
    """
    fields = {"event": event, "actor": actor, "purpose": purpose, "decision": decision}
    fields["reason"] = reason
    for name, value in fields.items():
        if value is not None and len(value) > _LIMITS[name]:
            raise ValueError(f"audit {name} is longer than {_LIMITS[name]} characters")
    body = None
    if detail:
        if len(detail) > MAX_DETAIL_KEYS:
            raise ValueError("audit detail is bounded; put large data elsewhere")
        body = rfc8785.dumps(dict(detail))
        if len(body) > MAX_DETAIL_BYTES:
            raise ValueError("audit detail is bounded; put large data elsewhere")
    what: dict[str, Any] = {"event": event, "actor": actor, "purpose": purpose}
    what |= {"consent_id": consent_id, "decision": decision, "reason": reason}
    what |= {"body": body, "request_hash": request_hash}
    if subject_id is None:
        written = _write(session, None, **what)
        assert written is not None  # noqa: S101 (no chain: nothing to swap)
        return written
    lookup = keyed_tag(LOOKUP_PURPOSE, str(subject_id))
    known = _ENDS.get(lookup) if session.connection().dialect.name == "postgresql" else None
    if known is not None:
        written = _write(session, known, swap=True, **what)
        if written is not None:
            return written
    keys = _lock_subject(session, lookup, subject_id)
    if keys is None:  # erased: nothing about them becomes linkable or readable again
        what["body"] = None
    written = _write(session, keys, **what)
    assert written is not None  # noqa: S101 (a locked chain, or none, is always written)
    return written


def _write(
    session: Session,
    keys: _Keys | None,
    *,
    event: str,
    actor: str,
    purpose: str | None,
    consent_id: uuid.UUID | None,
    decision: str | None,
    reason: str | None,
    body: bytes | None,
    request_hash: str | None,
    swap: bool = False,
) -> uuid.UUID | None:
    """Write the leaf; with `swap`, only if `keys.last` is still the end of the chain (None
    otherwise, and nothing written)."""
    entry_id = uuid.uuid4()
    # Read after the subject's lock, or for a swap after this process wrote the end it knows
    # (a swap succeeds only if no one wrote after it): a chain's times never go backwards.
    now = utcnow()
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # the leaf says milliseconds
    stored = None
    if body is not None:
        if keys is None:
            stored = body  # non-personal (a charter version, an organisation's slug)
        else:
            nonce = os.urandom(_NONCE)
            # The entry id as associated data: a ciphertext moved to another entry won't open.
            stored = nonce + AESGCM(keys.data_key()).encrypt(nonce, body, entry_id.bytes)
    tag = keys.tag if keys is not None else None
    leaf = _canonical(
        {
            "v": LEAF_VERSION,
            "id": str(entry_id),
            "time": f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond // 1000:03d}Z",
            "event": event,
            "actor": actor,
            "subject": tag,
            "prev": keys.last.hex() if keys is not None and keys.last is not None else None,
            "purpose": purpose,
            "consent": str(consent_id) if consent_id is not None else None,
            "decision": decision,
            "reason": reason,
            "request": request_hash,
            "detail": hashlib.sha256(stored).hexdigest() if stored is not None else None,
        }
    ).encode()
    if len(leaf) > MAX_LEAF_BYTES:
        raise ValueError(f"an audit leaf is at most {MAX_LEAF_BYTES} bytes")
    leaf_hash = merkle.leaf_hash(leaf)
    # The session's connection, not session.execute: no autoflush of the caller's pending
    # objects (their flush, and its errors, stay where the caller put them).
    connection = session.connection()
    entry = {
        "id": entry_id,
        "occurred_at": now,
        "event": event,
        "actor": actor,
        "subject_tag": tag,
        "purpose": purpose,
        "consent_id": consent_id,
        "decision": decision,
        "reason": reason,
        "leaf": leaf,
        "leaf_hash": leaf_hash,
    }
    chain = None
    if keys is not None:
        chain = {
            "b_lookup": keys.lookup,
            "b_tag": keys.tag,
            "b_tag_key": keys.wrapped_tag_key,
            "b_data_key": keys.wrapped_data_key,
            "b_last": leaf_hash,
        }
    if chain is not None and connection.dialect.name == "postgresql":
        assert keys is not None  # noqa: S101 (a chain has keys)
        detail = {} if stored is None else {"d_encrypted": True, "d_body": stored}
        if swap:
            moved = connection.execute(
                _SWAP_APPEND[stored is not None], entry | detail | chain | {"b_expected": keys.last}
            ).scalar_one()
            if not moved:
                _ENDS.forget(keys.lookup)
                return None
        else:
            connection.execute(_CHAINED_APPEND[stored is not None], entry | detail | chain)
        _ENDS.put(replace(keys, last=leaf_hash))
    else:
        connection.execute(_INSERT_ENTRY, entry)
        if stored is not None:
            connection.execute(
                _INSERT_DETAIL,
                {"entry_id": entry_id, "encrypted": keys is not None, "body": stored},
            )
        if chain is not None:
            connection.execute(_CHAIN, chain)
    if keys is not None:
        keys.last = leaf_hash
    session.info[APPENDED] = True
    return entry_id


def _lock_subject(session: Session, lookup: str, subject_id: uuid.UUID) -> _Keys | None:
    """The subject's keys and chain end, row locked until commit; created on first use.

    None for an erased subject: what is still logged about them after their erasure (a late
    task, a reuser introspecting a revoked token) is written with no subject tag and no
    detail, so their erasure is never undone by a new key.
    """
    connection = session.connection()
    row = connection.execute(_LOCK_SUBJECT, {"lookup": lookup}).first()
    if row is None:
        keys = _new_keys(lookup, subject_id)
        created = connection.execute(
            _NEW_SUBJECT[connection.dialect.name],
            {
                "lookup": lookup,
                "tag": keys.tag,
                "tag_key": keys.wrapped_tag_key,
                "data_key": keys.wrapped_data_key,
                "last_leaf_hash": None,
                "created_at": utcnow(),
                "erased_at": None,
            },
        )
        if created.rowcount == 1:
            return keys
        # Another transaction made it first (and holds it until it commits): wait for it.
        row = connection.execute(_LOCK_SUBJECT, {"lookup": lookup}).one()
    if row.tag is None or row.tag_key is None or row.data_key is None:
        return None  # erased (erase_subject clears the three together)
    return _Keys(lookup, row.tag, row.tag_key, row.data_key, row.last_leaf_hash)


def _new_keys(lookup: str, subject_id: uuid.UUID) -> _Keys:
    tag_key, data_key = os.urandom(32), AESGCM.generate_key(bit_length=256)
    tag = hmac.new(tag_key, str(subject_id).encode(), hashlib.sha256).hexdigest()
    return _Keys(
        lookup, tag, _wrap(lookup, "tag", tag_key), _wrap(lookup, "data", data_key), last=None
    )


def _aad(lookup: str, which: str) -> bytes:
    return f"tiers/audit-subject/{lookup}/{which}".encode()


def _wrap(lookup: str, which: str, key: bytes) -> bytes:
    """A subject key encrypted with the KEK, bound to its row and role by associated data."""
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(derived_key("audit-kek")).encrypt(nonce, key, _aad(lookup, which))


def _unwrap(lookup: str, which: str, wrapped: bytes) -> bytes:
    kek = AESGCM(derived_key("audit-kek"))
    return kek.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], _aad(lookup, which))


def _open(data_key: bytes, entry_id: uuid.UUID, stored: bytes) -> dict[str, Any]:
    clear = AESGCM(data_key).decrypt(stored[:_NONCE], stored[_NONCE:], entry_id.bytes)
    opened: dict[str, Any] = json.loads(clear)
    return opened


# -- a citizen's view, and erasure ------------------------------------------------------------


def subject_tag(session: Session, subject_id: uuid.UUID) -> str | None:
    """The tag that stands for this citizen in the leaves; None if never logged, or erased."""
    lookup = keyed_tag(LOOKUP_PURPOSE, str(subject_id))
    tag: str | None = session.connection().scalar(
        select(_SUBJECT.c.tag).where(_SUBJECT.c.lookup == lookup)
    )
    return tag


def erase_subject(session: Session, subject_id: uuid.UUID, *, actor: str = "system") -> bool:
    """Crypto-shred a citizen's log: destroy their tag key and data key.

    Their detail no longer decrypts and their tag can no longer be tied to them, while every
    leaf, proof and checkpoint still verifies. A last leaf (`audit:subject:erase`) closes
    their chain, so an auditor sees why that tag's detail is unreadable. True if there was
    something to erase; idempotent. Effective at commit.
    """
    lookup = keyed_tag(LOOKUP_PURPOSE, str(subject_id))
    row = session.connection().execute(_LOCK_SUBJECT, {"lookup": lookup}).first()
    if row is None or row.tag is None or row.tag_key is None or row.data_key is None:
        return False
    keys = _Keys(lookup, row.tag, row.tag_key, row.data_key, row.last_leaf_hash)
    _write(
        session,
        keys,
        event=ERASE_EVENT,
        actor=actor,
        purpose=None,
        consent_id=None,
        decision=None,
        reason="erasure",
        body=None,
        request_hash=None,
    )
    session.connection().execute(_ERASE, {"b_lookup": lookup, "b_at": utcnow()})
    _ENDS.forget(lookup)
    return True


def entries_for_subject(session: Session, subject_id: uuid.UUID) -> list[SubjectEntry]:
    """Every entry about this citizen, sealed or not, oldest first, with detail decrypted.

    Empty once they are erased. Entries written before migration 0003 carry the old global
    tag and are listed too (their detail was never encrypted).
    """
    lookup = keyed_tag(LOOKUP_PURPOSE, str(subject_id))
    row = (
        session.connection()
        .execute(
            select(_SUBJECT.c.tag, _SUBJECT.c.data_key, _SUBJECT.c.erased_at).where(
                _SUBJECT.c.lookup == lookup
            )
        )
        .first()
    )
    if row is not None and row.data_key is None:
        return []  # erased
    tags = [row.tag] if row is not None else []
    if row is None or row.erased_at is None:
        tags.append(keyed_tag(LEGACY_TAG_PURPOSE, str(subject_id)))
    data_key = _unwrap(lookup, "data", row.data_key) if row is not None else None
    found = (
        session.connection()
        .execute(
            select(_ENTRY, _DETAIL.c.encrypted, _DETAIL.c.body)
            .outerjoin(_DETAIL, _DETAIL.c.entry_id == _ENTRY.c.id)
            .where(_ENTRY.c.subject_tag.in_(tags))
            .order_by(_ENTRY.c.pos)
        )
        .all()
    )
    entries = []
    for r in found:
        detail = None
        if r.body is not None:
            if not r.encrypted:
                detail = json.loads(r.body)
            elif data_key is not None:
                detail = _open(data_key, r.id, r.body)
        entries.append(
            SubjectEntry(
                id=r.id,
                index=r.seq,
                occurred_at=r.occurred_at,
                event=r.event,
                actor=r.actor,
                purpose=r.purpose,
                consent_id=r.consent_id,
                decision=r.decision,
                reason=r.reason,
                detail=detail,
                leaf=r.leaf,
            )
        )
    return entries


def detail(session: Session, entry_id: uuid.UUID) -> dict[str, Any] | None:
    """The detail of one entry, decrypted if it is a citizen's; None if it has none or its
    citizen was erased."""
    row = (
        session.connection()
        .execute(
            select(_ENTRY.c.subject_tag, _DETAIL.c.encrypted, _DETAIL.c.body)
            .join(_DETAIL, _DETAIL.c.entry_id == _ENTRY.c.id)
            .where(_ENTRY.c.id == entry_id)
        )
        .first()
    )
    if row is None:
        return None
    if not row.encrypted:
        clear: dict[str, Any] = json.loads(row.body)
        return clear
    subject = (
        session.connection()
        .execute(
            select(_SUBJECT.c.lookup, _SUBJECT.c.data_key).where(_SUBJECT.c.tag == row.subject_tag)
        )
        .first()
    )
    if subject is None or subject.data_key is None:
        return None
    return _open(_unwrap(subject.lookup, "data", subject.data_key), entry_id, row.body)
