"""Offline verification of an export: a clean log verifies; each tampering is named, with the
first bad index. The log is built through the service (integrate, sign) in the test's
transaction; a few forks need two histories under one key, built with audit.merkle directly."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.cli import ScriptInfo
from sqlalchemy.orm import Session

from audit import merkle, notes, verify
from audit import service as audit
from audit.export import export
from broker.cli import main

ORIGIN = "tiers.test/tiers/audit-log"


def seal(session: Session) -> None:
    audit.integrate(session)
    audit.sign_pending(session)


def build_log(session: Session) -> list[str]:
    """Four sealed batches with two citizens' chains interleaved; returns the export."""
    alice, bob = uuid.uuid4(), uuid.uuid4()
    for batch in range(4):
        for i in range(5):
            subject = (alice, None, bob, alice, None)[i]
            audit.append(
                session, event="test:verify:append", actor="test", subject_id=subject,
                reason=f"{batch}-{i}",
            )  # fmt: skip
        seal(session)
    return list(export(session))


def saved_checkpoint(session: Session) -> str:
    note = audit.checkpoint(session)
    assert note is not None
    return note


def leaf_positions(lines: Sequence[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if json.loads(line)["type"] == "leaf"]


def leaf_at(lines: Sequence[str], index: int) -> int:
    """The line number of the leaf with this index."""
    for i, line in enumerate(lines):
        document = json.loads(line)
        if document["type"] == "leaf" and document["index"] == index:
            return i
    raise AssertionError(f"no leaf {index}")


def set_leaf(lines: list[str], index: int, data: bytes) -> None:
    position = leaf_at(lines, index)
    document = json.loads(lines[position])
    document["leaf"] = base64.b64encode(data).decode()
    lines[position] = json.dumps(document) + "\n"


def get_leaf(lines: Sequence[str], index: int) -> bytes:
    return base64.b64decode(json.loads(lines[leaf_at(lines, index)])["leaf"])


def run(lines: Sequence[str], saved: str | None = None, key: str | None = None) -> verify.Report:
    return verify.verify(lines, log_key=key or audit.log_key(), saved_checkpoint=saved)


def size_of(lines: Sequence[str]) -> int:
    return len(leaf_positions(lines))


# -- through the service -----------------------------------------------------------------------


def test_the_export_is_json_lines_in_the_documented_order(session):
    lines = build_log(session)
    types = [json.loads(line)["type"] for line in lines]
    assert types[0] == "log"
    assert types == sorted(types, key=["log", "leaf", "node", "checkpoint"].index)
    head = json.loads(lines[0])
    assert head == {"type": "log", "origin": audit.log_origin(), "log_key": audit.log_key()}
    leaves = [json.loads(lines[i]) for i in leaf_positions(lines)]
    assert [leaf["index"] for leaf in leaves] == list(range(len(leaves)))
    assert len(leaves) >= 20
    assert all(line.endswith("\n") and "\n" not in line[:-1] for line in lines)
    checkpoints = [json.loads(line)["note"] for line in lines if '"checkpoint"' in line]
    sizes = [notes.parse_checkpoint(notes.open_note(n, audit.log_key())).size for n in checkpoints]
    assert sizes == sorted(sizes)
    assert sizes[-1] == len(leaves)


def test_a_clean_export_verifies(session):
    lines = build_log(session)
    report = run(lines, saved=saved_checkpoint(session))
    assert report.ok, report.problems
    assert report.size == size_of(lines)
    assert report.first_bad_index is None
    assert report.verdict().startswith("valid: ")


def test_a_changed_leaf_is_named_altered(session):
    lines = build_log(session)
    target = size_of(lines) - 12
    set_leaf(lines, target, get_leaf(lines, target).replace(b'"reason":"', b'"reason":"x'))
    report = run(lines)
    assert not report.ok
    assert (report.first_bad_index, report.problem) == (target, "altered")
    assert report.range_end is None
    assert f"first bad index: {target} (altered)" in report.verdict()


def test_a_deleted_leaf_line_is_named_removed(session):
    lines = build_log(session)
    target = size_of(lines) - 9
    del lines[leaf_at(lines, target)]
    report = run(lines)
    assert (report.ok, report.first_bad_index, report.problem) == (False, target, "removed")


def test_swapped_leaves_are_named_at_the_first_of_them(session):
    lines = build_log(session)
    first, second = size_of(lines) - 15, size_of(lines) - 3
    one, other = get_leaf(lines, first), get_leaf(lines, second)
    set_leaf(lines, first, other)
    set_leaf(lines, second, one)
    report = run(lines)
    assert (report.ok, report.first_bad_index, report.problem) == (False, first, "reordered")


def test_swapped_lines_with_their_indices_are_reordered(session):
    lines = build_log(session)
    a, b = leaf_at(lines, 4), leaf_at(lines, 5)
    lines[a], lines[b] = lines[b], lines[a]
    report = run(lines)
    assert (report.ok, report.first_bad_index, report.problem) == (False, 4, "reordered")


def test_a_truncated_tail_is_named_truncated(session):
    lines = build_log(session)
    size = size_of(lines)
    kept = [line for line in lines if not (leaf_positions([line]) and _index(line) >= size - 7)]
    report = run(kept)
    assert (report.ok, report.first_bad_index, report.problem) == (False, size - 7, "truncated")


def test_an_export_cut_short_is_truncated_against_a_saved_checkpoint(session):
    lines = build_log(session)
    saved = saved_checkpoint(session)
    size = size_of(lines)
    cut = lines[: leaf_at(lines, size - 4)]  # the file ends early: no nodes, no checkpoints
    assert run(cut).ok  # nothing in it says it is short…
    report = run(cut, saved=saved)  # …but the auditor's checkpoint does
    assert (report.ok, report.first_bad_index, report.problem) == (False, size - 4, "truncated")


def test_a_checkpoint_signed_by_another_key_is_a_bad_signature(session):
    lines = build_log(session)
    last = max(i for i, line in enumerate(lines) if '"checkpoint"' in line)
    body = notes.open_note(json.loads(lines[last])["note"], audit.log_key())
    forged = notes.sign_note(body, audit.log_origin(), notes.generate_log_key())
    lines[last] = json.dumps({"type": "checkpoint", "note": forged}) + "\n"
    report = run(lines)
    assert (report.ok, report.problem, report.first_bad_index) == (False, "bad signature", None)
    assert "not valid (bad signature)" in report.verdict()


def test_a_saved_checkpoint_from_earlier_still_verifies(session):
    build_log(session)
    earlier = saved_checkpoint(session)
    for i in range(7):
        audit.append(session, event="test:verify:later", actor="test", reason=str(i))
    seal(session)
    report = run(list(export(session)), saved=earlier)
    assert report.ok, report.problems


def test_a_saved_checkpoint_the_log_no_longer_matches_names_the_index(session):
    lines = build_log(session)
    saved = saved_checkpoint(session)
    target = 3 + size_of(lines) - 20
    set_leaf(lines, target, get_leaf(lines, target).replace(b'"actor":"test"', b'"actor":"tset"'))
    # The operator also dropped every checkpoint: only the auditor's checkpoint is left.
    lines = [line for line in lines if '"checkpoint"' not in line]
    report = run(lines, saved=saved)
    assert (report.ok, report.first_bad_index, report.problem) == (False, target, "altered")


def test_a_broken_chain_is_named(session):
    lines = build_log(session)
    chained = [
        i
        for i in range(size_of(lines))
        if json.loads(get_leaf(lines, i))["prev"] is not None
        and i >= size_of(lines) - 20  # this test's leaves
    ]
    target = chained[1]
    document = json.loads(get_leaf(lines, target))
    document["prev"] = "00" * 32
    forged = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    # A consistent forgery of the whole log (rebuilt nodes and checkpoints under the same
    # key) still cannot hide a chain that skips a leaf.
    leaves = [get_leaf(lines, i) for i in range(size_of(lines))]
    leaves[target] = forged
    key = notes.generate_log_key()
    forged_lines = synthetic_export(leaves, key, [len(leaves)])
    vkey = notes.verifier_key(ORIGIN, key.public_key())
    report = verify.verify(forged_lines, log_key=vkey, saved_checkpoint=None)
    assert (report.ok, report.first_bad_index, report.problem) == (False, target, "broken chain")


def test_the_cli_verifies_without_an_app_and_exports_with_one(app: Flask, session, tmp_path):
    lines = build_log(session)
    path = tmp_path / "log.jsonl"
    exported = CliRunner().invoke(
        main, ["audit", "export", "-o", str(path)], obj=ScriptInfo(create_app=lambda: app)
    )
    assert exported.exit_code == 0, exported.output
    assert path.read_text(encoding="utf-8") == "".join(lines)
    to_stdout = CliRunner().invoke(
        main, ["audit", "export"], obj=ScriptInfo(create_app=lambda: app)
    )
    assert to_stdout.output == "".join(lines)

    key_file = tmp_path / "log.vkey"
    key_file.write_text(audit.log_key() + "\n", encoding="utf-8")
    saved = tmp_path / "saved.note"
    saved.write_text(saved_checkpoint(session), encoding="utf-8")

    def no_app() -> Flask:
        raise AssertionError("verify must not build the app")

    def cli(*args: str) -> Any:
        return CliRunner().invoke(main, ["audit", "verify", *args], obj=ScriptInfo(no_app))

    ok = cli(str(path), "--log-key", str(key_file), "--checkpoint", str(saved))
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith(f"valid: {size_of(lines)} leaves")
    target = size_of(lines) - 5
    set_leaf(lines, target, get_leaf(lines, target).replace(b'"v":1', b'"v":2'))
    path.write_text("".join(lines), encoding="utf-8")
    bad = cli(str(path), "--log-key", audit.log_key())
    assert bad.exit_code == 1
    assert f"first bad index: {target} (altered)" in bad.output


def test_the_verifier_imports_no_database_or_web_code():
    source = Path(verify.__file__).read_text(encoding="utf-8")
    imports = {
        line.split()[1] for line in source.splitlines() if line.startswith(("import", "from"))
    }
    assert imports <= {"__future__", "base64", "binascii", "hashlib", "json", "collections.abc",
                       "dataclasses", "audit"}  # fmt: skip


# -- synthetic logs (audit.merkle directly): forks under one key -------------------------------


def synthetic_export(
    leaves: Sequence[bytes], key: Any, sizes: Sequence[int], origin: str = ORIGIN
) -> list[str]:
    """An export as audit.export writes it, for a log built in memory and signed with `key`."""
    store = merkle.MemoryStore()
    size, heads = 0, []
    for target in sizes:
        size = merkle.append(
            store.put, store.get, size, [merkle.leaf_hash(leaf) for leaf in leaves[size:target]]
        )
        body = notes.checkpoint_body(origin, size, merkle.root(store, size))
        heads.append(notes.sign_note(body, origin, key))
    vkey = notes.verifier_key(origin, key.public_key())
    lines = [{"type": "log", "origin": origin, "log_key": vkey}]
    lines += [
        {"type": "leaf", "index": i, "leaf": base64.b64encode(leaf).decode()}
        for i, leaf in enumerate(leaves[:size])
    ]
    lines += [
        {"type": "node", "level": level, "index": index, "hash": base64.b64encode(h).decode()}
        for level, nodes in enumerate(store.levels)
        for index, h in enumerate(nodes)
    ]
    lines += [{"type": "checkpoint", "note": note} for note in heads]
    return [json.dumps(line, separators=(",", ":")) + "\n" for line in lines]


def plain_leaves(count: int) -> list[bytes]:
    return [b'{"n":%d,"subject":null}' % i for i in range(count)]


def test_a_history_rewritten_and_resigned_contradicts_the_saved_checkpoint():
    key = notes.generate_log_key()
    vkey = notes.verifier_key(ORIGIN, key.public_key())
    original = plain_leaves(40)
    saved = synthetic_export(original, key, [9, 20])[-1]
    saved_note = json.loads(saved)["note"]
    rewritten = list(original)
    rewritten[6] = b'{"n":"six","subject":null}'
    lines = synthetic_export(rewritten, key, [12, 30, 40])
    assert verify.verify(lines, log_key=vkey).ok  # self-consistent: only the auditor can tell
    report = verify.verify(lines, log_key=vkey, saved_checkpoint=saved_note)
    assert not report.ok
    assert report.problem == "inconsistent checkpoints"
    assert (report.first_bad_index, report.range_end) == (0, 20)  # only a root: no finer


def test_a_forked_checkpoint_left_in_the_export_is_inconsistent():
    key = notes.generate_log_key()
    vkey = notes.verifier_key(ORIGIN, key.public_key())
    old_head = json.loads(synthetic_export(plain_leaves(40), key, [16])[-1])["note"]
    rewritten = plain_leaves(40)
    rewritten[21] = b'{"n":"x","subject":null}'
    lines = synthetic_export(rewritten, key, [8, 24, 40])
    lines.insert(-2, json.dumps({"type": "checkpoint", "note": old_head}) + "\n")  # size 16
    report = verify.verify(lines, log_key=vkey)
    assert report.ok, report.problems  # 16 was signed over the same first 16 leaves: fine
    other = plain_leaves(40)
    other[10] = b'{"n":"y","subject":null}'
    forked_head = json.loads(synthetic_export(other, key, [16])[-1])["note"]
    lines[-3] = json.dumps({"type": "checkpoint", "note": forked_head}) + "\n"
    report = verify.verify(lines, log_key=vkey)
    assert not report.ok
    assert report.problem == "altered"
    assert (report.first_bad_index, report.range_end) == (8, 16)  # between two signed heads
    assert "inconsistent checkpoints" in {p.kind for p in report.problems}


def test_nodes_changed_with_the_leaf_fall_back_to_a_signed_range():
    key = notes.generate_log_key()
    vkey = notes.verifier_key(ORIGIN, key.public_key())
    honest = synthetic_export(plain_leaves(64), key, [16, 32, 48, 64])
    rewritten = plain_leaves(64)
    rewritten[37] = b'{"n":"z","subject":null}'
    forged = synthetic_export(rewritten, key, [64])
    body = [line for line in forged if '"checkpoint"' not in line]
    lines = body + [line for line in honest if '"checkpoint"' in line]
    report = verify.verify(lines, log_key=vkey)
    assert not report.ok
    assert (report.first_bad_index, report.problem, report.range_end) == (32, "altered", 48)


@pytest.mark.parametrize("line", ["not json\n", '{"type":"leaf"}\n', '{"type":"what"}\n'])
def test_malformed_lines_are_reported_not_raised(line):
    key = notes.generate_log_key()
    vkey = notes.verifier_key(ORIGIN, key.public_key())
    lines = synthetic_export(plain_leaves(5), key, [5])
    lines.insert(3, line)
    report = verify.verify(lines, log_key=vkey)
    assert (report.ok, report.problem) == (False, "malformed")


def _index(line: str) -> int:
    index: int = json.loads(line)["index"]
    return index
