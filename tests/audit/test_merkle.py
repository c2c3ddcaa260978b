"""audit.merkle: RFC 9162 roots and proofs, against published vectors and a second implementation.

The conformance suite is transparency-dev/merkle's `testdata/` (copied in
`tests/data/merkle/`, a copy of `../shared/testdata/merkle/`); the cross-check is a naive implementation of RFC 9162's recursive
definitions written below, which shares no code with `audit.merkle`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from audit import merkle

ROOT = Path(__file__).resolve().parents[2]
VECTORS = Path(os.environ.get("TIERS_MERKLE_VECTORS", ROOT / "tests" / "data" / "merkle"))
# The files transparency-dev/merkle ships in testdata/inclusion and testdata/consistency, per
# folder: a missing or partial copy must fail the suite, not shrink it.
EXPECTED_VECTORS = {
    "consistency/0": 1,
    "consistency/1": 21,
    "consistency/2": 21,
    "consistency/3": 20,
    "consistency/4": 21,
    "consistency/additional": 14,
    "inclusion/0": 13,
    "inclusion/1": 18,
    "inclusion/2": 18,
    "inclusion/3": 15,
    "inclusion/4": 18,
    "inclusion/additional/0": 3,
    "inclusion/additional/1": 3,
    "inclusion/additional/2": 3,
    "inclusion/additional/3": 3,
    "inclusion/single-entry": 4,
}


def _vector_files(kind: str) -> list[Path]:
    return sorted((VECTORS / kind).rglob("*.json")) if (VECTORS / kind).is_dir() else []


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _proof(value: list[str] | None) -> list[bytes]:
    return [_b64(h) for h in value or []]


def _id(path: Path) -> str:
    return str(path.relative_to(VECTORS))


def test_every_vector_folder_is_present_and_complete() -> None:
    found: dict[str, int] = {}
    for path in _vector_files("inclusion") + _vector_files("consistency"):
        folder = str(path.parent.relative_to(VECTORS))
        found[folder] = found.get(folder, 0) + 1
    assert found == EXPECTED_VECTORS
    assert sum(found.values()) == 196


@pytest.mark.parametrize("path", _vector_files("inclusion"), ids=_id)
def test_inclusion_vectors_get_the_verdict_they_state(path: Path) -> None:
    v = _load(path)
    ok = merkle.verify_inclusion(
        v["leafIdx"], v["treeSize"], _b64(v["leafHash"]), _proof(v["proof"]), _b64(v["root"])
    )
    assert ok is not v["wantErr"], v["desc"]


@pytest.mark.parametrize("path", _vector_files("consistency"), ids=_id)
def test_consistency_vectors_get_the_verdict_they_state(path: Path) -> None:
    v = _load(path)
    ok = merkle.verify_consistency(
        v["size1"], v["size2"], _b64(v["root1"]), _b64(v["root2"]), _proof(v["proof"])
    )
    assert ok is not v["wantErr"], v["desc"]


# -- a second implementation: RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1 taken literally -------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class Reference:
    """MTH, PATH and PROOF/SUBPROOF as RFC 9162 writes them, recursing on slices of D."""

    def __init__(self, entries: Sequence[bytes]) -> None:
        self.entries = tuple(entries)
        self.memo: dict[tuple[int, int], bytes] = {}

    @staticmethod
    def _k(n: int) -> int:
        k = 1
        while k * 2 < n:
            k *= 2
        return k

    def mth(self, lo: int, hi: int) -> bytes:
        if (lo, hi) not in self.memo:
            n = hi - lo
            if n == 0:
                self.memo[lo, hi] = _h(b"")
            elif n == 1:
                self.memo[lo, hi] = _h(b"\x00" + self.entries[lo])
            else:
                k = self._k(n)
                self.memo[lo, hi] = _h(b"\x01" + self.mth(lo, lo + k) + self.mth(lo + k, hi))
        return self.memo[lo, hi]

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = self._k(n)
        if m < k:
            return [*self.path(m, lo, lo + k), self.mth(lo + k, hi)]
        return [*self.path(m - k, lo + k, hi), self.mth(lo, lo + k)]

    def subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if b else [self.mth(lo, hi)]
        k = self._k(n)
        if m <= k:
            return [*self.subproof(m, lo, lo + k, b), self.mth(lo + k, hi)]
        return [*self.subproof(m - k, lo + k, hi, False), self.mth(lo, lo + k)]


def _tree(entries: Sequence[bytes]) -> merkle.MemoryStore:
    store = merkle.MemoryStore()
    merkle.append(store.put, store.get, 0, [merkle.leaf_hash(e) for e in entries])
    return store


ENTRIES = [f"entry {i}".encode() for i in range(70)]
REFERENCE = Reference(ENTRIES)
STORE = _tree(ENTRIES)


@pytest.mark.parametrize("size", range(1, 71))
def test_roots_and_inclusion_proofs_match_rfc_9162_for_every_index(size: int) -> None:
    root = merkle.root(STORE, size)
    assert root == REFERENCE.mth(0, size)
    for index in range(size):
        proof = merkle.inclusion_proof(STORE, index, size)
        assert proof == REFERENCE.path(index, 0, size)
        assert merkle.verify_inclusion(index, size, merkle.leaf_hash(ENTRIES[index]), proof, root)
        assert not merkle.verify_inclusion(index, size, merkle.leaf_hash(b"other"), proof, root)


@pytest.mark.parametrize("new_size", range(1, 71))
def test_consistency_proofs_match_rfc_9162_for_every_pair(new_size: int) -> None:
    new_root = merkle.root(STORE, new_size)
    for old_size in range(1, new_size + 1):
        proof = merkle.consistency_proof(STORE, old_size, new_size)
        assert proof == REFERENCE.subproof(old_size, 0, new_size, True)
        old_root = merkle.root(STORE, old_size)
        assert merkle.verify_consistency(old_size, new_size, old_root, new_root, proof)
        if old_size < new_size:
            assert not merkle.verify_consistency(old_size, new_size, new_root, new_root, proof)


# -- the node store ------------------------------------------------------------------------------

# transparency-dev/merkle testonly/constants.go: LeafInputs, NodeHashes (every complete subtree,
# by level then index) and RootHashes (by tree size, from 0).
GO_LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243",
             "5051525354555657", "606162636465666768696a6b6c6d6e6f")]  # fmt: skip
GO_NODES = [
    ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
     "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
     "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
     "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
     "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
     "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
     "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
     "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"],
    ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
     "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
     "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
     "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"],
    ["d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
     "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]  # fmt: skip
GO_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_the_store_holds_exactly_the_complete_subtrees_of_the_go_reference_tree() -> None:
    store = _tree(GO_LEAVES)
    assert store.levels == [[bytes.fromhex(h) for h in level] for level in GO_NODES]
    assert [merkle.root(store, size).hex() for size in range(9)] == GO_ROOTS
    assert merkle.EMPTY_ROOT.hex() == GO_ROOTS[0]


class RecordingStore(merkle.MemoryStore):
    """Remembers every write, to show `append` writes each node exactly once."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[tuple[int, int]] = []

    def put(self, level: int, index: int, value: bytes) -> None:
        self.written.append((level, index))
        super().put(level, index, value)


def test_append_writes_each_complete_subtree_once_whatever_the_batches() -> None:
    hashes = [merkle.leaf_hash(e) for e in ENTRIES]
    whole = _tree(ENTRIES)
    rng = random.Random(9162)
    for _ in range(20):
        store = RecordingStore()
        size = 0
        while size < len(hashes):
            batch = hashes[size : size + rng.randint(0, 9)]
            assert merkle.append(store.put, store.get, size, batch) == size + len(batch)
            size += len(batch)
        assert store.levels == whole.levels
        assert len(store.written) == len(set(store.written)) == len(whole)


def test_append_refuses_what_is_not_a_leaf_hash() -> None:
    store = merkle.MemoryStore()
    with pytest.raises(ValueError, match="32-byte"):
        merkle.append(store.put, store.get, 0, [b"short"])
    with pytest.raises(ValueError, match="negative"):
        merkle.append(store.put, store.get, -1, [])


def test_the_memory_store_is_append_only() -> None:
    store = _tree(ENTRIES[:3])
    store.put(0, 1, merkle.leaf_hash(ENTRIES[1]))  # the same hash again changes nothing
    with pytest.raises(ValueError, match="change"):
        store.put(0, 1, merkle.leaf_hash(b"rewritten"))
    with pytest.raises(ValueError, match="gap"):
        store.put(0, 5, merkle.leaf_hash(b"far"))
    with pytest.raises(KeyError):
        store.get(1, 1)  # leaves 2..3: not complete at size 3


def test_proofs_refuse_impossible_arguments() -> None:
    with pytest.raises(ValueError, match="not in a tree"):
        merkle.inclusion_proof(STORE, 5, 5)
    with pytest.raises(ValueError, match="no consistency proof"):
        merkle.consistency_proof(STORE, 0, 5)
    with pytest.raises(ValueError, match="no consistency proof"):
        merkle.consistency_proof(STORE, 6, 5)
    with pytest.raises(ValueError, match="negative"):
        merkle.root(STORE, -1)
    assert merkle.root(STORE, 0) == merkle.EMPTY_ROOT
    assert merkle.consistency_proof(STORE, 7, 7) == []


def test_verifiers_refuse_wrong_shapes_without_raising() -> None:
    size, root = 5, merkle.root(STORE, 5)
    leaf = merkle.leaf_hash(ENTRIES[2])
    proof = merkle.inclusion_proof(STORE, 2, size)
    assert merkle.verify_inclusion(2, size, leaf, proof, root)
    assert not merkle.verify_inclusion(-1, size, leaf, proof, root)
    assert not merkle.verify_inclusion(2, size, leaf, [*proof[:-1], proof[-1][:31]], root)
    assert not merkle.verify_inclusion(2, size, leaf, [*proof, proof[0]], root)
    assert not merkle.verify_inclusion(2, size, leaf, proof[:-1], root)
    old_root = merkle.root(STORE, 3)
    consistency = merkle.consistency_proof(STORE, 3, size)
    assert merkle.verify_consistency(3, size, old_root, root, consistency)
    assert not merkle.verify_consistency(3, size, old_root, root, [*consistency, root])
    assert not merkle.verify_consistency(3, size, old_root, root, [consistency[0][:31]])
    assert not merkle.verify_consistency(3, size, old_root, root, [])


# -- O(log n) reads ------------------------------------------------------------------------------


class CountingStore:
    """Counts reads, so the tests can hold proofs to O(log n) of them."""

    def __init__(self, store: merkle.MemoryStore) -> None:
        self.store = store
        self.reads = 0

    def get(self, level: int, index: int) -> bytes:
        self.reads += 1
        return self.store.get(level, index)


MILLION = 1_000_000


@pytest.fixture(scope="module")
def big_tree() -> merkle.MemoryStore:
    # Any 32 bytes make a leaf hash; the big-endian index is the cheapest distinct one.
    store = merkle.MemoryStore()
    size = 0
    for start in range(0, MILLION, 1 << 16):
        batch = [i.to_bytes(32, "big") for i in range(start, min(start + (1 << 16), MILLION))]
        size = merkle.append(store.put, store.get, size, batch)
    assert size == MILLION
    return store


SIZES = [1, 2, 3, 1000, 65_537, (1 << 19) + 1, 777_777, MILLION - 1, MILLION]


@pytest.mark.parametrize("size", SIZES)
def test_root_and_proofs_read_a_logarithmic_number_of_nodes(
    big_tree: merkle.MemoryStore, size: int
) -> None:
    counting = CountingStore(big_tree)
    bound = 2 * math.ceil(math.log2(size)) + 2
    root = merkle.root(counting, size)
    assert counting.reads <= bound
    for index in sorted(i for i in {0, size // 3, size // 2, size - 2, size - 1} if i >= 0):
        counting.reads = 0
        proof = merkle.inclusion_proof(counting, index, size)
        assert counting.reads <= bound
        assert merkle.verify_inclusion(index, size, index.to_bytes(32, "big"), proof, root)
    for old_size in sorted(
        m for m in {1, 2, size // 3, size // 2 + 1, size - 1, size} if 0 < m <= size
    ):
        counting.reads = 0
        proof = merkle.consistency_proof(counting, old_size, size)
        assert counting.reads <= bound
        assert merkle.verify_consistency(
            old_size, size, merkle.root(big_tree, old_size), root, proof
        )


def test_appending_to_a_large_tree_reads_one_node_per_level_at_most(
    big_tree: merkle.MemoryStore,
) -> None:
    size = (1 << 19) - 1  # on every level, the last complete node is a left sibling to read
    store = merkle.MemoryStore()
    store.levels = [level[: size >> n] for n, level in enumerate(big_tree.levels)]
    counting = CountingStore(store)
    new = [b"\xff" * 32, b"\xfe" * 32]
    assert merkle.append(store.put, counting.get, size, new) == size + 2
    assert counting.reads <= 19
    old_root, new_root = merkle.root(big_tree, size), merkle.root(store, size + 2)
    proof = merkle.consistency_proof(store, size, size + 2)
    assert merkle.verify_consistency(size, size + 2, old_root, new_root, proof)
    for index, leaf in enumerate(new, start=size):
        proof = merkle.inclusion_proof(store, index, size + 2)
        assert merkle.verify_inclusion(index, size + 2, leaf, proof, new_root)
