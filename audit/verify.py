"""Offline verification of an access-log export (`audit.export`): no database, no network.

An auditor runs it with the log's verifier key and, ideally, a checkpoint they saved earlier.
It recomputes every leaf hash, rebuilds the tree, checks every signed checkpoint against it and
against its predecessor, authenticates the exported node table against the signed roots (so a
leaf changed without its node is named exactly), checks the auditor's checkpoint, and follows
each citizen's hash chain. The report names the first bad index and what is wrong with it.

Only `audit.merkle`, `audit.notes` and the standard library: an auditor can read all of it.
"""

from __future__ import annotations

import binascii
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from audit import merkle, notes

ALTERED = "altered"
REMOVED = "removed"
REORDERED = "reordered"
TRUNCATED = "truncated"
BAD_SIGNATURE = "bad signature"
INCONSISTENT = "inconsistent checkpoints"
BROKEN_CHAIN = "broken chain"
MALFORMED = "malformed"

# At equal indices the more specific finding wins (a removed leaf also shifts every hash).
_PRIORITY = {
    MALFORMED: 0,
    BAD_SIGNATURE: 1,
    REMOVED: 2,
    REORDERED: 3,
    TRUNCATED: 4,
    ALTERED: 5,
    INCONSISTENT: 6,
    BROKEN_CHAIN: 7,
}
_BATCH = 8192  # leaf hashes appended to the rebuilt tree at a time
_MAX_NODE_DIFFS = 100_000  # beyond this, the exported node table is useless anyway
_NULL_SUBJECT = b'"subject":null'  # canonical JSON: a leaf about nobody says exactly this
_LEAF_PREFIX = b"\x00"
_sha256 = hashlib.sha256
_json = json.JSONDecoder().decode  # json.loads without its per-call dispatch


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding. `index` is the first bad leaf index (None: not tied to a leaf); when only a
    range is known, `end` is its exclusive end and `index` its start."""

    kind: str
    index: int | None
    detail: str
    end: int | None = None

    def sort_key(self) -> tuple[int, int, int]:
        return (
            -1 if self.index is None else self.index,
            0 if self.end is None else 1,
            _PRIORITY[self.kind],
        )


@dataclass(frozen=True, slots=True)
class Report:
    """The verdict: `ok`, the export's size, and when not ok the first problem (and all)."""

    ok: bool
    size: int
    checkpoints: int = 0
    first_bad_index: int | None = None
    problem: str | None = None
    detail: str = ""
    range_end: int | None = None
    problems: tuple[Problem, ...] = field(default=())

    def verdict(self) -> str:
        """One or two lines for a human: what was checked, or what is wrong and where."""
        if self.ok:
            return f"valid: {self.size} leaves, {self.checkpoints} signed checkpoints verified"
        if self.first_bad_index is None:
            where = f"not valid ({self.problem})"
        elif self.range_end is not None:
            where = (
                f"first bad index: {self.first_bad_index} ({self.problem}, somewhere in "
                f"[{self.first_bad_index}, {self.range_end}))"
            )
        else:
            where = f"first bad index: {self.first_bad_index} ({self.problem})"
        return f"{where}\n{self.detail}"


@dataclass(frozen=True, slots=True)
class _Head:
    size: int
    root: bytes


class _Overlay:
    """The exported node table seen as a NodeStore: the rebuilt tree plus the differences."""

    def __init__(self, rebuilt: merkle.MemoryStore, diffs: dict[tuple[int, int], bytes | None]):
        self.rebuilt = rebuilt
        self.diffs = diffs

    def get(self, level: int, index: int) -> bytes:
        if (level, index) in self.diffs:
            value = self.diffs[level, index]
            if value is None:
                raise KeyError((level, index))
            return value
        return self.rebuilt.get(level, index)

    def has(self, level: int, index: int) -> bool:
        try:
            self.get(level, index)
        except KeyError:
            return False
        return True


class _Verifier:
    def __init__(self, log_key: str) -> None:
        self.log_key = log_key
        self.origin: str | None = None
        self.problems: list[Problem] = []
        self.store = merkle.MemoryStore()
        self.size = 0
        self.pending: list[bytes] = []
        self.section = 0  # 0 log, 1 leaves, 2 nodes, 3 checkpoints
        # Index structure: the first leaf line whose index is not its position.
        self.index_break: tuple[int, int] | None = None  # (expected, declared)
        self.index_break_seen_later = False
        self.chains: dict[str, bytes] = {}
        self.chain_broken = False
        # The exported node table, as differences from the rebuilt tree.
        self.diffs: dict[tuple[int, int], bytes | None] = {}
        self.next_node: dict[int, int] = {}
        self.nodes_unusable = False
        self.heads: list[_Head] = []
        self.roots: dict[int, bytes] = {}

    def add(self, kind: str, index: int | None, detail: str, end: int | None = None) -> None:
        self.problems.append(Problem(kind, index, detail, end))

    # -- reading ---------------------------------------------------------------------------------

    def line(self, number: int, text: str) -> None:
        if not text.strip():
            return
        try:
            document = _json(text)
            kind = document["type"]
            if kind == "leaf":
                self.leaf(int(document["index"]), _decode(document["leaf"]))
            elif kind == "node":
                self.node(int(document["level"]), int(document["index"]), document["hash"])
            elif kind == "checkpoint":
                self.checkpoint(str(document["note"]))
            elif kind == "log":
                self.log(str(document["origin"]), str(document["log_key"]))
            else:
                raise ValueError(f"unknown line type {kind!r}")
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            self.add(MALFORMED, None, f"line {number}: {exc}")

    def enter(self, section: int) -> None:
        if section < self.section:
            raise ValueError("lines are out of order (log, leaves, nodes, checkpoints)")
        if section > 1 and self.section <= 1:
            self.flush()
        self.section = section

    def log(self, origin: str, key: str) -> None:
        if self.section != 0 or self.origin is not None:
            raise ValueError("the log line comes first, once")
        self.origin = origin
        if key != self.log_key:
            self.add(BAD_SIGNATURE, None, "the export names another log key than the one given")

    def leaf(self, index: int, data: bytes) -> None:
        self.enter(1)
        position = self.size + len(self.pending)
        if index != position and self.index_break is None:
            self.index_break = (position, index)
        elif self.index_break is not None and index == self.index_break[0]:
            self.index_break_seen_later = True
        value = _sha256(_LEAF_PREFIX + data).digest()
        self.pending.append(value)
        if len(self.pending) >= _BATCH:
            self.flush()
        if not self.chain_broken and _NULL_SUBJECT not in data:
            self.chain(position, data, value)

    def chain(self, position: int, data: bytes, value: bytes) -> None:
        try:
            document = _json(data.decode())
        except ValueError:  # not JSON (an altered leaf): its hash says so, not its chain
            return
        tag = document.get("subject") if isinstance(document, dict) else None
        if not isinstance(tag, str) or "prev" not in document:
            return
        previous = self.chains.get(tag)
        expected = previous.hex() if previous is not None else None
        if document["prev"] != expected:
            self.chain_broken = True
            self.add(
                BROKEN_CHAIN,
                position,
                f"leaf {position} does not chain to the previous leaf of its subject tag",
            )
        self.chains[tag] = value

    def flush(self) -> None:
        if self.pending:
            self.size = merkle.append(self.store.put, self.store.get, self.size, self.pending)
            self.pending = []

    def node(self, level: int, index: int, encoded: str) -> None:
        self.enter(2)
        value = _decode(encoded)
        if self.nodes_unusable:
            return
        expected = self.next_node.get(level, 0)
        if index < expected or level < 0:
            self.nodes_unusable = True
            self.add(ALTERED, None, f"the node table repeats or reorders node ({level}, {index})")
            return
        for missing in range(expected, index):
            self.node_diff(level, missing, None)
            if self.nodes_unusable:
                return
        if not _has(self.store, level, index) or self.store.levels[level][index] != value:
            self.node_diff(level, index, value)
        self.next_node[level] = index + 1

    def node_diff(self, level: int, index: int, value: bytes | None) -> None:
        if value is None and not _has(self.store, level, index):
            return  # absent from both
        self.diffs[level, index] = value
        if len(self.diffs) > _MAX_NODE_DIFFS:
            self.nodes_unusable = True

    def checkpoint(self, note: str) -> None:
        self.enter(3)
        head = self.open(note, "a checkpoint in the export")
        if head is not None:
            self.heads.append(head)

    def open(self, note: str, what: str) -> _Head | None:
        try:
            body = notes.parse_checkpoint(notes.open_note(note, self.log_key))
        except notes.NoteError as exc:
            self.add(BAD_SIGNATURE, None, f"{what} does not verify with the log key: {exc}")
            return None
        if self.origin is not None and body.origin != self.origin:
            self.add(BAD_SIGNATURE, None, f"{what} is for another log ({body.origin})")
            return None
        return _Head(body.size, body.root)

    # -- checking --------------------------------------------------------------------------------

    def root(self, size: int) -> bytes:
        """The rebuilt tree's root at `size` (<= the export's size), computed once."""
        if size not in self.roots:
            self.roots[size] = merkle.root(self.store, size)
        return self.roots[size]

    def finish(self, saved_checkpoint: str | None) -> Report:
        self.flush()
        if self.origin is None:
            self.add(MALFORMED, None, "the export has no log line")
        n = self.size
        if self.index_break is not None:
            expected, declared = self.index_break
            if declared > expected and not self.index_break_seen_later:
                self.add(REMOVED, expected, f"leaf {expected} is missing from the export")
            else:
                first = min(expected, declared)
                self.add(REORDERED, first, f"leaf {first} is not in its place in the export")
        if not self.nodes_unusable:
            for level, nodes in enumerate(self.store.levels):
                for missing in range(self.next_node.get(level, 0), len(nodes)):
                    self.node_diff(level, missing, None)
                    if self.nodes_unusable:
                        break
        exported = _Overlay(self.store, {} if self.nodes_unusable else self.diffs)
        bad_nodes = self.bad_nodes(exported)
        self.node_findings(exported, bad_nodes, n)
        previous: _Head | None = None
        for head in self.heads:
            self.check_head(head, exported, bad_nodes, f"the checkpoint of size {head.size}")
            if previous is not None:
                self.check_pair(previous, head, exported, narrow=True)
            previous = head
        if saved_checkpoint is not None:
            saved = self.open(saved_checkpoint, "the saved checkpoint")
            if saved is not None:
                self.check_head(saved, exported, bad_nodes, "the saved checkpoint")
                for head in self.heads:
                    if head.size >= saved.size:
                        self.check_pair(saved, head, exported, narrow=False)
                        break
        return self.report()

    def bad_nodes(self, exported: _Overlay) -> set[tuple[int, int]]:
        """Exported interior nodes that are not the hash of their exported children."""
        if self.nodes_unusable:
            return set()
        candidates: set[tuple[int, int]] = set()
        for level, index in self.diffs:
            if level > 0:
                candidates.add((level, index))
            candidates.add((level + 1, index >> 1))
        bad = set()
        for level, index in candidates:
            if not exported.has(level, index):
                continue
            try:
                left = exported.get(level - 1, 2 * index)
                right = exported.get(level - 1, 2 * index + 1)
            except KeyError:
                bad.add((level, index))
                continue
            if exported.get(level, index) != merkle.node_hash(left, right):
                bad.add((level, index))
        return bad

    def authentic(self, exported: _Overlay, bad: set[tuple[int, int]], head: _Head) -> bool:
        """Whether the exported nodes of the first `head.size` leaves are committed by it."""
        if self.nodes_unusable or head.size == 0:
            return False
        if any((index + 1) << level <= head.size for level, index in bad):
            return False
        try:
            return merkle.root(exported, head.size) == head.root
        except KeyError:
            return False

    def node_findings(self, exported: _Overlay, bad: set[tuple[int, int]], n: int) -> None:
        """Leaves that disagree with their exported level-0 node; nodes past the last leaf."""
        if self.nodes_unusable:
            return
        moved = {v for (level, _), v in self.diffs.items() if level == 0 and v is not None}
        for (level, index), value in sorted(self.diffs.items()):
            if level == 0 and index < n and value is not None:
                kind = REORDERED if self.store.levels[0][index] in moved else ALTERED
                self.add(kind, index, f"leaf {index} does not hash to its stored node")
                break
        beyond = [index for (level, index), v in self.diffs.items() if level == 0 and index >= n]
        if beyond:
            self.add(TRUNCATED, n, f"the node table has leaves up to {max(beyond)}, the export {n}")
        for level, index in sorted(bad):
            self.add(
                ALTERED,
                index << level,
                f"stored node ({level}, {index}) is not the hash of its children",
                (index + 1) << level,
            )
            break

    def check_head(
        self, head: _Head, exported: _Overlay, bad: set[tuple[int, int]], what: str
    ) -> None:
        if head.size > self.size:
            self.add(TRUNCATED, self.size, f"{what} has {head.size} leaves, the export {self.size}")
            return
        if self.root(head.size) == head.root:
            return
        if self.authentic(exported, bad, head):
            for (level, index), value in sorted(self.diffs.items()):
                if level == 0 and index < head.size and value is not None:
                    self.add(ALTERED, index, f"{what}'s root commits to another leaf {index}")
                    return
        # The nodes were changed too: narrow to the signed heads around it.
        start = self.last_good_head(head.size)
        self.add(
            ALTERED,
            start,
            f"{what}'s root does not match the leaves (nor does the node table prove where)",
            head.size,
        )

    def last_good_head(self, size: int) -> int:
        """The largest signed size below `size` whose root the leaves still match (or 0)."""
        return max(
            (h.size for h in self.heads if h.size < size and self.root(h.size) == h.root),
            default=0,
        )

    def check_pair(self, old: _Head, new: _Head, exported: _Overlay, *, narrow: bool) -> None:
        """The log signed `new` after `old`: it must extend it (RFC 9162 consistency)."""
        if old.size > new.size or (old.size == new.size and old.root != new.root):
            self.add(INCONSISTENT, None, f"checkpoints of sizes {old.size} and {new.size} fork")
            return
        if old.size == 0 or new.size > self.size:
            return
        for store in (exported, self.store):
            try:
                proof = merkle.consistency_proof(store, old.size, new.size)
            except KeyError:
                continue
            if merkle.verify_consistency(old.size, new.size, old.root, new.root, proof):
                return
        # Between two of the export's heads, the last good one before them bounds the range;
        # against the auditor's checkpoint nothing the export signed can be trusted to.
        bad = old.size if self.root(old.size) != old.root else new.size
        self.add(
            INCONSISTENT,
            self.last_good_head(bad) if narrow else 0,
            f"checkpoints of sizes {old.size} and {new.size} do not describe one append-only log",
            bad if narrow else old.size,
        )

    def report(self) -> Report:
        problems = tuple(sorted(self.problems, key=Problem.sort_key))
        if not problems:
            return Report(ok=True, size=self.size, checkpoints=len(self.heads))
        first = problems[0]
        return Report(
            ok=False,
            size=self.size,
            checkpoints=len(self.heads),
            first_bad_index=first.index,
            problem=first.kind,
            detail=first.detail,
            range_end=first.end,
            problems=problems,
        )


def verify(lines: Iterable[str], *, log_key: str, saved_checkpoint: str | None = None) -> Report:
    """Check an export line by line (constant memory but for the rebuilt tree)."""
    notes.parse_verifier_key(log_key)  # a malformed key is the caller's error: NoteError
    verifier = _Verifier(log_key)
    for number, text in enumerate(lines, 1):
        verifier.line(number, text)
    return verifier.finish(saved_checkpoint)


def _has(store: merkle.MemoryStore, level: int, index: int) -> bool:
    return level < len(store.levels) and 0 <= index < len(store.levels[level])


def _decode(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("base64 text expected")
    return binascii.a2b_base64(text, strict_mode=True)  # base64.b64decode(validate=True)
