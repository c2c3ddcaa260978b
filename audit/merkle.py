"""The access log's Merkle tree: RFC 9162 (RFC 6962) hashing, proofs and their verification.

Pure and database-free. The tree lives in a node store that holds only *complete* subtrees, so a
node once written never changes (the integrator persists exactly what `append` writes, DESIGN.md
"Audit"); every root and proof is computed from O(log n) of those nodes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Protocol

HASH_SIZE = 32
# RFC 9162 §2.1.1: MTH({}) = HASH(), the hash of the empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()

# The 0x00 / 0x01 prefixes keep leaves and interior nodes in separate domains, so no interior
# node can be passed off as a leaf (RFC 9162 §2.1.1, second-preimage resistance).
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_sha256 = hashlib.sha256

NodePut = Callable[[int, int, bytes], None]
NodeGet = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one log entry (RFC 9162 §2.1.1)."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node (RFC 9162 §2.1.1)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


class NodeStore(Protocol):
    """Where the complete subtrees live, addressed by (level, index).

    Level 0 holds the leaf hashes; the node (level, index) covers leaves
    [index * 2**level, (index + 1) * 2**level). Only complete subtrees are ever stored, which is
    why they are immutable: appending leaves adds nodes and never rewrites one.
    """

    def get(self, level: int, index: int) -> bytes:
        """The hash of the complete subtree at (level, index); raises KeyError if absent."""
        ...


class MemoryStore:
    """An in-memory `NodeStore`, for tests and for the offline verifier rebuilding an export.

    One list per level: complete subtrees are written in index order and never change, so a list
    is enough, and it is several times faster than a dict of (level, index) for a million leaves.
    """

    def __init__(self) -> None:
        self.levels: list[list[bytes]] = []

    def get(self, level: int, index: int) -> bytes:
        """The stored hash; KeyError if absent (asking for an incomplete subtree is a bug)."""
        if 0 <= level < len(self.levels) and 0 <= index < len(self.levels[level]):
            return self.levels[level][index]
        raise KeyError((level, index))

    def put(self, level: int, index: int, value: bytes) -> None:
        """Record a complete subtree (the signature of `append`'s `store_put`).

        Refuses gaps and changes: the store is append-only, as the `merkle_node` table is.
        """
        while len(self.levels) <= level:
            self.levels.append([])
        nodes = self.levels[level]
        if index == len(nodes):
            nodes.append(value)
        elif index > len(nodes) or nodes[index] != value:
            raise ValueError(f"node ({level}, {index}) would leave a gap or change a stored hash")

    def __len__(self) -> int:
        return sum(len(nodes) for nodes in self.levels)


def append(store_put: NodePut, store_get: NodeGet, size: int, leaf_hashes: Sequence[bytes]) -> int:
    """Extend a tree of `size` leaves with `leaf_hashes`; return the new size.

    Writes every complete subtree that the new leaves complete, level by level, and nothing else.
    Reads at most one stored node per level (the left sibling of the first new node, when that
    node is a right child), so a batch of k leaves costs O(k + log n) work.
    """
    if size < 0:
        raise ValueError("tree size cannot be negative")
    if any(len(h) != HASH_SIZE for h in leaf_hashes):
        raise ValueError("leaf hashes are 32-byte SHA-256 digests")
    new_size = size + len(leaf_hashes)
    level = 0
    # At each level the complete nodes before the batch are [0, size >> level); the batch adds
    # [size >> level, new_size >> level).
    nodes = list(leaf_hashes)
    while nodes:
        first = size >> level
        for index, value in enumerate(nodes, first):
            store_put(level, index, value)
        pairs = (new_size >> (level + 1)) - (size >> (level + 1))
        if not pairs:
            break
        if first & 1:  # the first new node is a right child: its left sibling is already stored
            nodes.insert(0, store_get(level, first - 1))
        # node_hash inlined: this comprehension is most of the cost of building a large tree.
        nodes = [
            _sha256(_NODE_PREFIX + left + right).digest()
            for left, right in zip(nodes[0 : 2 * pairs : 2], nodes[1 : 2 * pairs : 2], strict=True)
        ]
        level += 1
    return new_size


def root(store: NodeStore, size: int) -> bytes:
    """The RFC 9162 Merkle tree hash of the first `size` leaves (popcount(size) reads)."""
    if size < 0:
        raise ValueError("tree size cannot be negative")
    if size == 0:
        return EMPTY_ROOT
    return _range_hash(store, 0, size)


def inclusion_proof(store: NodeStore, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1, from the leaf's sibling up to the root.

    Each sibling is a complete stored subtree except at most one right-edge subtree, which is
    folded from popcount stored nodes: at most about 2·log2(size) reads.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    path: list[bytes] = []
    low, high = 0, size
    # Walk down from the root: RFC 9162 splits D[low:high] at the largest power of two below its
    # length, and the sibling of the half holding `index` joins the path (top-down here).
    while high - low > 1:
        split = low + _largest_power_of_two_below(high - low)
        if index < split:
            path.append(_range_hash(store, split, high))
            high = split
        else:
            path.append(_range_hash(store, low, split))
            low = split
    path.reverse()
    return path


def consistency_proof(store: NodeStore, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) of RFC 9162 §2.1.4.1 (SUBPROOF), bottom-up.

    Requires 0 < old_size <= new_size: a proof from the empty tree proves nothing (RFC 9162
    verifiers reject it). Equal sizes give the empty proof.
    """
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    path: list[bytes] = []
    low, high = 0, new_size
    # `whole` is SUBPROOF's boolean b: true while D[low:high]'s old part is the whole old tree
    # seen from the root's left edge, whose hash the verifier already has.
    whole = True
    while old_size != high:
        split = low + _largest_power_of_two_below(high - low)
        if old_size <= split:
            path.append(_range_hash(store, split, high))
            high = split
        else:
            path.append(_range_hash(store, low, split))
            low = split
            whole = False
    if not whole:
        path.append(_range_hash(store, low, high))
    path.reverse()
    return path


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether `proof` puts `leaf_hash` at `index` of the tree of `size` whose hash is `root`.

    RFC 9162 §2.1.3.2, step by step; every malformed input is simply a failed verification.
    """
    if not 0 <= index < size or len(leaf_hash) != HASH_SIZE:
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0 or len(p) != HASH_SIZE:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # Past the right edge there is no right sibling: climb the levels that have none.
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether `proof` shows the tree (new_size, new_root) extends the tree (old_size, old_root).

    RFC 9162 §2.1.4.2. Equal sizes need an empty proof and equal roots; a proof from the empty
    tree is refused, as transparency-dev/merkle and its test vectors do.
    """
    if not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof or any(len(c) != HASH_SIZE for c in proof):
        return False
    path = list(proof)
    # A power-of-two old tree is itself a node of the new tree, so the proof leaves it out.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162 §2.1.1: the largest power of two strictly smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _range_hash(store: NodeStore, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a node of the tree: a complete subtree or a right-edge one.

    `start` is aligned on the power of two covering the range, so the range splits, largest
    first, into complete stored subtrees; RFC 9162's recursion folds them right to left.
    """
    parts: list[bytes] = []
    position, remaining = start, end - start
    while remaining:
        level = remaining.bit_length() - 1
        parts.append(store.get(level, position >> level))
        position += 1 << level
        remaining -= 1 << level
    value = parts.pop()
    while parts:
        value = node_hash(parts.pop(), value)
    return value
