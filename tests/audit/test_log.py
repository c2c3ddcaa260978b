"""The access log as a service: leaves, chains, the integrator, signing, proofs, erasure, guard.

Every root and proof is checked twice: with `audit.merkle`'s verifiers and against RFC 9162's
recursive definitions written out below (MTH, PATH, SUBPROOF), which share no code with it.
Runs on SQLite (the default) and on PostgreSQL (TIERS_TEST_DATABASE_URL).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import Connection, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from audit import merkle, notes
from audit import service as audit
from audit.models import AuditCheckpoint, AuditDetail, AuditEntry, AuditSubject, MerkleNode
from audit.service import leaves as leaves_module
from common import migrations
from common.clock import frozen, utcnow
from common.db import make_engine
from common.errors import InvalidInputError, ServiceUnavailableError
from common.settings import derived_key, keyed_tag
from consent import accounts
from tests.conftest import PASSWORD, database_url, sql_statements

# -- RFC 9162 §2.1, written from the text (no audit.merkle) ------------------------------------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hash_leaf(leaf: bytes) -> bytes:
    return sha256(b"\x00" + leaf)


def hash_children(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def split(n: int) -> int:
    """k: the largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf hashes."""
    if not hashes:
        return sha256(b"")
    if len(hashes) == 1:
        return hashes[0]
    k = split(len(hashes))
    return hash_children(mth(hashes[:k]), mth(hashes[k:]))


def path(m: int, hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) (§2.1.3.1)."""
    if len(hashes) == 1:
        return []
    k = split(len(hashes))
    if m < k:
        return [*path(m, hashes[:k]), mth(hashes[k:])]
    return [*path(m - k, hashes[k:]), mth(hashes[:k])]


def subproof(m: int, hashes: Sequence[bytes], whole: bool = True) -> list[bytes]:
    """SUBPROOF(m, D[n], b) (§2.1.4.1)."""
    n = len(hashes)
    if m == n:
        return [] if whole else [mth(hashes)]
    k = split(n)
    if m <= k:
        return [*subproof(m, hashes[:k], whole), mth(hashes[k:])]
    return [*subproof(m - k, hashes[k:], False), mth(hashes[:k])]


def root_from_path(index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to, following PATH's recursion backwards."""
    if size == 1:
        assert not proof
        return leaf_hash
    k = split(size)
    *rest, sibling = proof
    if index < k:
        return hash_children(root_from_path(index, k, leaf_hash, rest), sibling)
    return hash_children(sibling, root_from_path(index - k, size - k, leaf_hash, rest))


def roots_from_subproof(
    m: int, n: int, proof: list[bytes], old_root: bytes, whole: bool = True
) -> tuple[bytes, bytes]:
    """(old root, new root) a consistency proof leads to, following SUBPROOF backwards."""
    if m == n:
        if whole:
            return old_root, old_root
        node = proof.pop()
        return node, node
    k = split(n)
    last = proof.pop()
    if m <= k:
        old, new = roots_from_subproof(m, k, proof, old_root, whole)
        return old, hash_children(new, last)
    old, new = roots_from_subproof(m - k, n - k, proof, old_root, False)
    return hash_children(last, old), hash_children(last, new)


def path_length(index: int, size: int) -> int:
    if size == 1:
        return 0
    k = split(size)
    return 1 + (path_length(index, k) if index < k else path_length(index - k, size - k))


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    if not 0 <= index < size or len(proof) != path_length(index, size):
        return False
    return root_from_path(index, size, leaf_hash, proof) == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    remaining = list(proof)
    try:
        old, new = roots_from_subproof(old_size, new_size, remaining, old_root)
    except IndexError:
        return False
    return not remaining and old == old_root and new == new_root


# -- helpers -------------------------------------------------------------------------------------


def sealed_leaves(session: Session) -> list[bytes]:
    rows = session.execute(
        select(AuditEntry.leaf).where(AuditEntry.seq.is_not(None)).order_by(AuditEntry.seq)
    )
    return [bytes(r.leaf) for r in rows]


def entry(session: Session, entry_id: uuid.UUID) -> AuditEntry:
    found = session.scalar(select(AuditEntry).where(AuditEntry.id == entry_id))
    assert found is not None
    return found


def open_checkpoint(note: str) -> notes.Checkpoint:
    return notes.parse_checkpoint(notes.open_note(note, audit.log_key()))


def seal(session: Session, *, batch: int = 1000) -> int:
    """What the task does, in the test's transaction: integrate, then sign."""
    done = audit.integrate(session, batch=batch)
    audit.sign_pending(session)
    return done


def append_some(session: Session, count: int, **kwargs: Any) -> list[uuid.UUID]:
    return [
        audit.append(session, event="test:log:append", actor="test", reason=str(i), **kwargs)
        for i in range(count)
    ]


# -- leaves ----------------------------------------------------------------------------------------


def test_a_leaf_is_canonical_json_hashed_as_rfc_9162_says(session):
    entry_id = audit.append(
        session,
        event="charter:version:publish",
        actor="committee",
        purpose="energy-coaching",
        consent_id=uuid.UUID(int=7),
        decision="permit",
        reason="published",
        detail={"version": "2026.1", "sha256": "ab" * 32},
        request_hash="cd" * 32,
    )
    row = entry(session, entry_id)
    document = json.loads(row.leaf)
    assert row.leaf == rfc8785.dumps(document)  # already canonical: re-encoding changes nothing
    assert row.leaf_hash == hash_leaf(row.leaf) == merkle.leaf_hash(row.leaf)
    stored = session.get(AuditDetail, entry_id)
    assert stored is not None
    assert not stored.encrypted
    assert document == {
        "v": 1,
        "id": str(entry_id),
        "time": row.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{row.occurred_at.microsecond // 1000:03d}Z",
        "event": "charter:version:publish",
        "actor": "committee",
        "subject": None,
        "prev": None,
        "purpose": "energy-coaching",
        "consent": str(uuid.UUID(int=7)),
        "decision": "permit",
        "reason": "published",
        "request": "cd" * 32,
        "detail": hashlib.sha256(stored.body).hexdigest(),
    }
    assert json.loads(stored.body) == {"version": "2026.1", "sha256": "ab" * 32}
    assert audit.detail(session, entry_id) == {"version": "2026.1", "sha256": "ab" * 32}
    assert row.seq is None  # sealed later, by the integrator


_TEXT = st.text(max_size=40)


@hypothesis_settings(max_examples=300, deadline=None)
@given(actor=_TEXT, reason=_TEXT, purpose=st.none() | _TEXT, event=_TEXT)
def test_the_fast_canonical_form_is_byte_for_byte_rfc_8785(actor, reason, purpose, event):
    leaf = {"v": 1, "actor": actor, "reason": reason, "purpose": purpose, "event": event}
    leaf |= {"subject": None, "prev": "ab" * 32, "time": "2026-11-24T10:00:00.000Z"}
    assert leaf_module_canonical(leaf) == rfc8785.dumps(leaf)


def leaf_module_canonical(leaf: dict[str, Any]) -> bytes:
    return leaves_module._canonical(leaf).encode()


def test_hostile_text_is_stored_escaped_and_bounded(session):
    hostile = 'line\nbreak\u2028sep\x1b[31m"quote"\\ é'
    entry_id = audit.append(session, event="test:log:inject", actor="test", reason=hostile)
    row = entry(session, entry_id)
    assert b"\n" not in row.leaf
    assert b"\x1b" not in row.leaf
    assert json.loads(row.leaf)["reason"] == hostile
    with pytest.raises(ValueError, match="4096"):
        audit.append(session, event="test:log:big", actor="test", request_hash="x" * 5000)
    with pytest.raises(ValueError, match="reason"):
        audit.append(session, event="test:log:big", actor="test", reason="x" * 1_000_000)
    with pytest.raises(ValueError, match="bounded"):
        audit.append(session, event="t", actor="t", detail={str(i): i for i in range(17)})
    with pytest.raises(ValueError, match="bounded"):
        audit.append(session, event="t", actor="t", detail={"big": "x" * 20_000})
    with pytest.raises(ValueError, match="surrogate"):
        audit.append(session, event="t", actor="t", reason="lone \ud800 surrogate")


def test_no_personal_data_appears_in_a_leaf(session, charter):
    email = "camille.martin@example.org"
    citizen = accounts.sign_up(session, email=email, password=PASSWORD)
    subject = citizen.subject_id
    entry_id = audit.append(
        session,
        event="test:log:personal",
        actor="citizen",
        subject_id=subject,
        detail={"email": email, "meter": "PDL-0912"},
    )
    everything = b"".join(
        bytes(r.leaf) + (r.subject_tag or "").encode() for r in session.scalars(select(AuditEntry))
    )
    lookup = keyed_tag(leaves_module.LOOKUP_PURPOSE, str(subject))
    for secret in (str(subject), subject.hex, email, "PDL-0912", lookup):
        assert secret.encode() not in everything
    assert keyed_tag("audit-subject", str(subject)).encode() not in everything  # the old tag
    assert subject.bytes not in everything
    stored = session.get(AuditDetail, entry_id)
    assert stored is not None
    assert stored.encrypted
    assert email.encode() not in stored.body
    assert b"PDL-0912" not in stored.body
    assert json.loads(entry(session, entry_id).leaf)["detail"] == (
        hashlib.sha256(stored.body).hexdigest()
    )
    # The citizen (and only through their keys) reads it back.
    assert audit.detail(session, entry_id) == {"email": email, "meter": "PDL-0912"}
    mine = audit.entries_for_subject(session, subject)
    assert [e.event for e in mine] == ["consent:citizen:sign_up", "test:log:personal"]
    assert mine[1].detail == {"email": email, "meter": "PDL-0912"}
    assert not mine[1].sealed


def test_each_citizen_has_a_chain_of_their_own_under_a_tag_of_their_own(session):
    alice, bob = uuid.uuid4(), uuid.uuid4()
    a1 = audit.append(session, event="t:a", actor="t", subject_id=alice)
    audit.append(session, event="t:none", actor="t")
    b1 = audit.append(session, event="t:b", actor="t", subject_id=bob)
    a2 = audit.append(session, event="t:a", actor="t", subject_id=alice, detail={"n": 2})
    a3 = audit.append(session, event="t:a", actor="t", subject_id=alice)
    b2 = audit.append(session, event="t:b", actor="t", subject_id=bob)

    def leaf(entry_id: uuid.UUID) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(entry(session, entry_id).leaf)
        return document

    assert leaf(a1)["prev"] is None
    assert leaf(b1)["prev"] is None
    assert leaf(a2)["prev"] == entry(session, a1).leaf_hash.hex()
    assert leaf(a3)["prev"] == entry(session, a2).leaf_hash.hex()
    assert leaf(b2)["prev"] == entry(session, b1).leaf_hash.hex()
    tags = {leaf(e)["subject"] for e in (a1, a2, a3)}
    assert tags == {audit.subject_tag(session, alice)}
    assert leaf(b1)["subject"] == audit.subject_tag(session, bob) != leaf(a1)["subject"]
    # The tag is HMAC-SHA256 with the citizen's own key, which the audit KEK wraps.
    row = session.get(AuditSubject, keyed_tag(leaves_module.LOOKUP_PURPOSE, str(alice)))
    assert row is not None
    assert row.last_leaf_hash == entry(session, a3).leaf_hash
    tag_key = AESGCM(derived_key("audit-kek")).decrypt(
        row.tag_key[:12], row.tag_key[12:], f"tiers/audit-subject/{row.lookup}/tag".encode()
    )
    assert hmac.new(tag_key, str(alice).encode(), hashlib.sha256).hexdigest() == row.tag
    assert row.tag != keyed_tag("audit-subject", str(alice))  # not the global tag of old


def _postgresql_only(session: Session) -> None:
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("the known chain end is PostgreSQL's path (SQLite always locks and reads)")


def test_a_chain_end_this_process_knows_is_checked_never_trusted(session):
    _postgresql_only(session)
    alice = uuid.uuid4()
    lookup = keyed_tag(leaves_module.LOOKUP_PURPOSE, str(alice))
    a1 = audit.append(session, event="t:a", actor="t", subject_id=alice)
    stale = leaves_module._ENDS.get(lookup)
    assert stale is not None
    a2 = audit.append(session, event="t:a", actor="t", subject_id=alice, detail={"n": 2})
    leaves_module._ENDS.put(stale)  # as another process, which last saw a1, knows it
    a3 = audit.append(session, event="t:a", actor="t", subject_id=alice, detail={"n": 3})

    assert json.loads(entry(session, a2).leaf)["prev"] == entry(session, a1).leaf_hash.hex()
    assert json.loads(entry(session, a3).leaf)["prev"] == entry(session, a2).leaf_hash.hex()
    row = session.get(AuditSubject, lookup)
    assert row is not None
    session.refresh(row)
    assert row.last_leaf_hash == entry(session, a3).leaf_hash
    # The refused attempt wrote nothing: three entries, three details.
    mine = audit.entries_for_subject(session, alice)
    assert [e.id for e in mine] == [a1, a2, a3]
    assert [e.detail for e in mine] == [None, {"n": 2}, {"n": 3}]


def test_a_chain_end_known_from_before_an_erasure_is_not_used(session):
    _postgresql_only(session)
    alice = uuid.uuid4()
    lookup = keyed_tag(leaves_module.LOOKUP_PURPOSE, str(alice))
    audit.append(session, event="t:a", actor="t", subject_id=alice)
    old_tag = audit.subject_tag(session, alice)
    stale = leaves_module._ENDS.get(lookup)
    assert stale is not None
    assert audit.erase_subject(session, alice) is True
    assert leaves_module._ENDS.get(lookup) is None  # this process forgets at once
    leaves_module._ENDS.put(stale)  # another process saw the chain before the erasure

    again = audit.append(session, event="t:a", actor="t", subject_id=alice)

    # Neither under the old tag nor under a new one: an erased subject stays erased.
    assert old_tag is not None
    assert json.loads(entry(session, again).leaf)["prev"] is None
    assert entry(session, again).subject_tag is None
    assert audit.subject_tag(session, alice) is None
    assert audit.entries_for_subject(session, alice) == []


def test_known_chain_ends_are_forgotten_after_a_few_seconds_and_beyond_the_limit():
    now = [0.0]
    ends = leaves_module._KnownEnds(clock=lambda: now[0])

    def keys(lookup: str) -> Any:
        return leaves_module._Keys(lookup, "tag", b"wrapped-tag", b"wrapped-data", b"last")

    ends.put(keys("a"))
    now[0] = ends.KEEP - 0.1
    assert ends.get("a") is not None
    now[0] = ends.KEEP + 0.1
    assert ends.get("a") is None  # no wrapped key outlives KEEP in this process
    ends.LIMIT = 2
    for lookup in ("b", "c", "d"):
        ends.put(keys(lookup))
    assert [ends.get(x) is not None for x in "bcd"] == [False, True, True]  # oldest first
    got = ends.get("d")
    assert got is not None
    got.last = b"changed"
    assert ends.get("d").last == b"last"  # callers get copies


# -- the integrator and checkpoints ----------------------------------------------------------------


def test_the_integrator_numbers_leaves_from_zero_and_signs_the_root_of_exactly_them(session):
    first = append_some(session, 5)
    assert seal(session) == 5
    append_some(session, 8, subject_id=uuid.uuid4())
    assert seal(session, batch=3) == 3  # a batch at a time; the rest waits for the next run
    assert seal(session) == 5
    assert seal(session) == 0
    seqs = session.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)).all()
    assert seqs == list(range(13))
    assert entry(session, first[0]).seq == 0
    leaves = sealed_leaves(session)
    note = audit.checkpoint(session)
    assert note is not None
    head = open_checkpoint(note)
    assert head.origin == audit.log_origin() == "tiers.test/tiers/audit-log"
    assert head.size == 13
    assert head.root == mth([hash_leaf(leaf) for leaf in leaves])
    # Every head is kept, and each was signed over exactly the leaves it covers.
    history = session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.size)).all()
    assert [c.size for c in history] == [5, 8, 13]
    for kept in history:
        assert kept.note is not None
        assert kept.signed_at is not None
        assert open_checkpoint(kept.note).root == mth([hash_leaf(x) for x in leaves[: kept.size]])
    # The node table holds complete subtrees only: 13 leaves, 6 + 3 + 1 above them.
    assert session.scalar(select(func.count()).select_from(MerkleNode)) == 13 + 6 + 3 + 1


def test_the_empty_log_has_a_signed_checkpoint_too(session):
    assert audit.checkpoint(session) is None
    assert seal(session) == 0
    note = audit.checkpoint(session)
    assert note is not None
    assert open_checkpoint(note).size == 0
    assert open_checkpoint(note).root == sha256(b"")


def test_an_integration_that_rolls_back_leaves_nothing_to_sign(session):
    append_some(session, 3)
    seal(session)
    append_some(session, 2)
    integration = session.begin_nested()
    assert audit.integrate(session) == 2
    integration.rollback()  # the integration's transaction never commits
    assert audit.sign_pending(session) == 0
    assert open_checkpoint(audit.checkpoint(session) or "").size == 3
    assert session.scalar(select(AuditCheckpoint).where(AuditCheckpoint.size == 5)) is None
    # The next run redoes the work over what is there then.
    assert seal(session) == 2
    assert open_checkpoint(audit.checkpoint(session) or "").size == 5


def test_a_head_the_log_did_not_build_is_never_signed(session):
    append_some(session, 3)
    seal(session)
    session.add(AuditCheckpoint(size=4, root=bytes(32), created_at=utcnow()))
    session.flush()
    with pytest.raises(RuntimeError, match="not the stored tree"):
        audit.sign_pending(session)


def test_a_commit_that_appended_is_sealed_and_signed_right_after_it(session):
    """Eager mode (tests, the demo): the after-commit kick runs the integrator task."""
    entry_id = audit.append(session, event="test:log:kick", actor="test")
    assert audit.receipt(session, entry_id) is None  # not sealed yet
    session.commit()
    sealed = entry(session, entry_id)
    assert sealed.seq is not None
    receipt = audit.receipt(session, entry_id)
    assert receipt is not None
    assert notes.verify_tlog_proof(receipt, sealed.leaf, audit.log_key(), audit.log_origin())
    assert not notes.verify_tlog_proof(
        receipt, sealed.leaf.replace(b"kick", b"kack"), audit.log_key(), audit.log_origin()
    )


# -- proofs ----------------------------------------------------------------------------------------


def test_proofs_from_stored_nodes_verify_both_ways(session):
    heads = []
    for count in (1, 1, 2, 3, 5, 8, 13):
        append_some(session, count)
        seal(session)
        heads.append(open_checkpoint(audit.checkpoint(session) or ""))
    hashes = [hash_leaf(leaf) for leaf in sealed_leaves(session)]
    for head in heads:
        assert head.root == mth(hashes[: head.size])
        for index in range(head.size):
            found = audit.inclusion(session, index, head.size)
            assert found.root == head.root
            assert found.leaf_hash == hashes[index]
            assert found.proof == path(index, hashes[: head.size])
            assert merkle.verify_inclusion(index, head.size, hashes[index], found.proof, head.root)
            assert verify_inclusion(index, head.size, hashes[index], found.proof, head.root)
            assert not verify_inclusion(index, head.size, hashes[index - 1], found.proof, head.root)
    for old in heads:
        for new in heads:
            if old.size > new.size:
                continue
            proof = audit.consistency(session, old.size, new.size)
            assert (proof.first_root, proof.second_root) == (old.root, new.root)
            assert proof.proof == subproof(old.size, hashes[: new.size])
            args = (old.size, new.size, old.root, new.root, proof.proof)
            assert merkle.verify_consistency(*args)
            assert verify_consistency(*args)
            if old.size < new.size:
                swapped = (old.size, new.size, new.root, old.root, proof.proof)
                assert not verify_consistency(*swapped)
                assert not merkle.verify_consistency(*swapped)


def test_out_of_range_proofs_are_refused_field_by_field(session):
    append_some(session, 4)
    seal(session)
    cases = {
        (0, 5): {"size"},
        (4, 4): {"index"},
        (-1, 2): {"index"},
        (0, 0): {"size"},
        (7, 3): {"index"},
    }
    for (index, size), fields in cases.items():
        with pytest.raises(InvalidInputError) as caught:
            audit.inclusion(session, index, size)
        assert set(caught.value.fields) == fields
    for (first, second), fields in {(0, 2): {"from"}, (3, 2): {"from"}, (1, 9): {"to"}}.items():
        with pytest.raises(InvalidInputError) as caught:
            audit.consistency(session, first, second)
        assert set(caught.value.fields) == fields


def test_a_proof_reads_a_logarithmic_number_of_nodes(session, connection: Connection):
    append_some(session, 300)
    seal(session)
    with sql_statements(connection) as seen:
        proof = audit.inclusion(session, 123, 300)
    reads = [s for s in seen if "merkle_node" in s]
    assert len(reads) == 1  # every node it needs, in one query
    assert len(proof.proof) <= 2 * 9


# -- erasure ----------------------------------------------------------------------------------------


def test_erasure_shreds_a_citizens_detail_and_tag_while_the_log_still_verifies(session):
    citizen, other = uuid.uuid4(), uuid.uuid4()
    mine = [
        audit.append(session, event="t:read", actor="reuser", subject_id=citizen, detail={"n": i})
        for i in range(3)
    ]
    theirs = audit.append(
        session, event="t:read", actor="reuser", subject_id=other, detail={"n": 9}
    )
    seal(session)
    before = open_checkpoint(audit.checkpoint(session) or "")
    receipt = audit.receipt(session, mine[0])
    assert len(audit.entries_for_subject(session, citizen)) == 3
    tag = audit.subject_tag(session, citizen)

    assert audit.erase_subject(session, citizen, actor="committee") is True
    assert audit.erase_subject(session, citizen) is False  # idempotent
    seal(session)

    assert audit.entries_for_subject(session, citizen) == []
    assert audit.subject_tag(session, citizen) is None
    assert all(audit.detail(session, e) is None for e in mine)
    assert audit.detail(session, theirs) == {"n": 9}
    row = session.get(AuditSubject, keyed_tag(leaves_module.LOOKUP_PURPOSE, str(citizen)))
    assert row is not None
    assert row.erased_at is not None
    assert (row.tag, row.tag_key, row.data_key, row.last_leaf_hash) == (None, None, None, None)
    # The ciphertext is still there, and no key opens it any more.
    stored = session.get(AuditDetail, mine[0])
    assert stored is not None
    with pytest.raises(InvalidTag):
        AESGCM(derived_key("audit-kek")).decrypt(stored.body[:12], stored.body[12:], None)
    # A last leaf closes the chain; the tree, old receipts and consistency all still verify.
    closing = session.scalar(select(AuditEntry).where(AuditEntry.event == audit.ERASE_EVENT))
    assert closing is not None
    assert closing.subject_tag == tag
    assert json.loads(closing.leaf)["prev"] == entry(session, mine[-1]).leaf_hash.hex()
    after = open_checkpoint(audit.checkpoint(session) or "")
    assert after.root == mth([hash_leaf(leaf) for leaf in sealed_leaves(session)])
    proof = audit.consistency(session, before.size, after.size)
    assert verify_consistency(before.size, after.size, before.root, after.root, proof.proof)
    assert receipt is not None
    assert notes.verify_tlog_proof(
        receipt, entry(session, mine[0]).leaf, audit.log_key(), audit.log_origin()
    )
    # Should the same id appear again (a late task, a reuser introspecting a revoked token),
    # the entry names no subject and keeps no detail: the erasure is not undone by a new key.
    again = audit.append(
        session, event="t:read", actor="reuser", subject_id=citizen, detail={"n": 10}
    )
    leaf = json.loads(entry(session, again).leaf)
    assert (leaf["subject"], leaf["prev"], leaf["detail"]) == (None, None, None)
    assert session.get(AuditDetail, again) is None
    assert audit.subject_tag(session, citizen) is None
    assert audit.entries_for_subject(session, citizen) == []


# -- fail closed -----------------------------------------------------------------------------------


def test_releases_fail_closed_while_sealing_lags_and_reopen_once_it_caught_up(session):
    start = utcnow()
    with frozen(start) as move_to:
        audit.require_sealed(session, max_lag=timedelta(seconds=60))  # nothing pending
        audit.append(session, event="test:log:lag", actor="test")
        move_to(start + timedelta(seconds=59))
        audit.require_sealed(session, max_lag=timedelta(seconds=60))
        move_to(start + timedelta(seconds=61))
        with pytest.raises(ServiceUnavailableError) as caught:
            audit.require_sealed(session, max_lag=timedelta(seconds=60))
        assert caught.value.retry_after > 0
        with pytest.raises(ServiceUnavailableError):
            audit.require_sealed(session)  # AUDIT_MAX_SEAL_LAG, 60 s by default
        assert audit.integrate(session) == 1
        audit.require_sealed(session, max_lag=timedelta(seconds=60))
        # A head left unsigned (the signer is down) is a lag too.
        move_to(start + timedelta(seconds=200))
        with pytest.raises(ServiceUnavailableError):
            audit.require_sealed(session, max_lag=timedelta(seconds=60))
        audit.sign_pending(session)
        audit.require_sealed(session, max_lag=timedelta(seconds=60))


# -- the log key ------------------------------------------------------------------------------------


def test_the_log_key_is_made_once_private_and_published_as_a_note_verifier(app, arranging_app):
    key_file = Path(app.config["KEYS_DIR"]) / "audit-log-ed25519.pem"
    vkey = audit.log_key()
    assert key_file.exists()
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    parsed = notes.parse_verifier_key(vkey)
    assert parsed.name == audit.log_origin()
    assert audit.log_key() == vkey
    arranging_app.config["AUDIT_LOG_ORIGIN"] = "city.example/access-log"
    assert audit.log_key().startswith("city.example/access-log+")


# -- append-only, whatever the application does ----------------------------------------------------


def test_audit_rows_cannot_be_rewritten_only_sealed_once(session):
    entry_id = append_some(session, 1)[0]
    seal(session)
    key = {"id": entry_id.hex if session.bind.dialect.name == "sqlite" else entry_id}
    forbidden = [
        ("UPDATE audit_entry SET reason = 'forged' WHERE id = :id", key),
        ("UPDATE audit_entry SET seq = 7 WHERE id = :id", key),
        ("UPDATE audit_entry SET seq = NULL WHERE id = :id", key),
        ("DELETE FROM audit_entry WHERE id = :id", key),
        ("UPDATE merkle_node SET hash = hash", {}),
        ("DELETE FROM merkle_node", {}),
        ("UPDATE audit_checkpoint SET note = 'forged'", {}),
        ("UPDATE audit_checkpoint SET root = root", {}),
        ("DELETE FROM audit_checkpoint", {}),
    ]
    audit.append(session, event="t", actor="t", detail={"a": 1})
    forbidden.append(("UPDATE audit_detail SET body = body", {}))
    forbidden.append(("DELETE FROM audit_detail", {}))
    audit.append(session, event="t", actor="t", subject_id=uuid.uuid4())
    forbidden.append(("DELETE FROM audit_subject", {}))
    if session.bind.dialect.name == "postgresql":
        forbidden += [(f"TRUNCATE {t} CASCADE", {}) for t in ("audit_entry", "merkle_node")]
    for statement, params in forbidden:
        with pytest.raises(DBAPIError), session.begin_nested():
            session.execute(text(statement), params)
    # What the integrator does, it may do: set seq, once, on an unsealed row.
    fresh = append_some(session, 1)[0]
    fresh_key = {"id": fresh.hex if session.bind.dialect.name == "sqlite" else fresh}
    with session.begin_nested():
        session.execute(text("UPDATE audit_entry SET seq = 1 WHERE id = :id"), fresh_key)


def test_the_application_role_cannot_rewrite_the_log(session, connection: Connection):
    """PostgreSQL: the app runs as a member of tiers_app, which may append and seal only."""
    if connection.dialect.name != "postgresql":
        assert connection.dialect.name == "sqlite"  # no roles: the triggers above are the guard
        return
    entry_id = append_some(session, 2)[0]
    seal(session)
    session.flush()
    forbidden = [
        "UPDATE audit_entry SET reason = 'forged'",
        "UPDATE audit_entry SET leaf = leaf",
        "DELETE FROM audit_entry",
        "TRUNCATE audit_entry",
        "UPDATE merkle_node SET hash = hash",
        "DELETE FROM merkle_node",
        "TRUNCATE merkle_node",
        "UPDATE audit_checkpoint SET root = root",
        "DELETE FROM audit_checkpoint",
        "TRUNCATE audit_checkpoint, audit_detail, audit_subject",
        "DELETE FROM audit_detail",
        "DELETE FROM audit_subject",
        "UPDATE consent_event SET method = 'forged'",
        "DELETE FROM alembic_version",
    ]
    for statement in forbidden:
        savepoint = session.begin_nested()
        session.execute(text("SET LOCAL ROLE tiers_app"))
        with pytest.raises(DBAPIError, match="permission denied"):
            session.execute(text(statement))
        savepoint.rollback()  # and with it, the role
    # ... and everything the application itself does works under that role.
    with session.begin_nested():
        session.execute(text("SET LOCAL ROLE tiers_app"))
        subject = uuid.uuid4()
        audit.append(session, event="t:role", actor="t", subject_id=subject, detail={"a": 1})
        audit.append(session, event="t:role", actor="t", detail={"a": 1})
        assert seal(session) == 2
        assert audit.receipt(session, entry_id) is not None
        assert audit.erase_subject(session, subject)
        assert session.scalar(text("SELECT current_user")) == "tiers_app"
        session.execute(text("RESET ROLE"))


# -- the migration ---------------------------------------------------------------------------------


def test_an_old_database_upgrades_and_its_rows_become_leaves(tmp_path, arranging_app):
    """0002 rows (detail in a JSON column, a global tag) get version-1 leaves and are sealed."""
    url, schema, cleanup = _scratch_database(tmp_path)
    engine = make_engine(url)
    try:
        tag = keyed_tag("audit-subject", "someone")
        with engine.begin() as connection:
            _search_path(connection, schema)
            config = migrations.alembic_config()
            config.attributes["connection"] = connection
            from alembic import command

            command.upgrade(config, "0002")
            for i, (subject_tag, detail) in enumerate(
                [(tag, {"grant": "g1"}), (None, {}), (tag, {}), (None, {"version": "1"})]
            ):
                connection.execute(
                    text(
                        "INSERT INTO audit_entry (occurred_at, event, actor, subject_tag, "
                        "detail, id, created_at) VALUES (:at, 'old:event', 'test', :tag, "
                        ":detail, :id, :at)"
                    ),
                    {
                        "at": utcnow() - timedelta(days=10 - i),
                        "tag": subject_tag,
                        "detail": json.dumps(detail),
                        "id": uuid.uuid4().hex if url.startswith("sqlite") else uuid.uuid4(),
                    },
                )
            command.upgrade(config, "head")
        with engine.connect() as connection:
            _search_path(connection, schema)
            with Session(bind=connection) as session:
                rows = session.scalars(select(AuditEntry).order_by(AuditEntry.pos)).all()
                assert len(rows) == 4
                documents = [json.loads(r.leaf) for r in rows]
                assert all(r.leaf_hash == hash_leaf(r.leaf) for r in rows)
                assert [d["subject"] for d in documents] == [tag, None, tag, None]
                assert documents[2]["prev"] == rows[0].leaf_hash.hex()
                assert audit.detail(session, rows[0].id) == {"grant": "g1"}
                assert audit.detail(session, rows[3].id) == {"version": "1"}
                assert audit.detail(session, rows[1].id) is None
                assert seal(session) == 4
                head = open_checkpoint(audit.checkpoint(session) or "")
                assert head.root == mth([hash_leaf(bytes(r.leaf)) for r in rows])
                session.rollback()
    finally:
        engine.dispose()
        cleanup()


def _scratch_database(tmp_path: Path) -> tuple[str, str | None, Any]:
    """A database of its own: a SQLite file, or a PostgreSQL schema of the test database."""
    url = database_url()
    if url.startswith("sqlite"):
        return f"sqlite:///{tmp_path}/old.sqlite", None, lambda: None
    schema = f"upgrade_{uuid.uuid4().hex[:8]}"
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))

    def cleanup() -> None:
        with engine.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()

    return url, schema, cleanup


def _search_path(connection: Connection, schema: str | None) -> None:
    if schema is not None:
        connection.execute(text(f"SET search_path TO {schema}"))
