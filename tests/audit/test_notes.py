"""audit.notes: signed notes, checkpoints and tlog-proof receipts, byte for byte as C2SP writes them.

Published vectors come from the specs and the Go reference, read at the source:
C2SP/C2SP `signed-note.md` (example.com/foo), `tlog-checkpoint.md`, `tlog-proof.md`, and
golang/mod `sumdb/note/note.go` + `note_test.go` (PeterNeumann, EnochRoot).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import merkle, notes
from audit.notes import NoteError

# golang/mod sumdb/note: the signer key "PRIVATE+KEY+PeterNeumann+c74f20a3+<base64(0x01 || seed)>",
# its verifier key, and the note TestSign expects (Ed25519 is deterministic: same bytes here).
PETER_SEED = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
PETER_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotp"
    "RZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33W"
    "Wd1RvMc+QQ=\n"
)
# C2SP signed-note.md §Verifier keys, Example.
C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = (
    "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2O"
    "NncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)

ORIGIN = "tiers.test/access-log/v1"
# Fixed seeds: a failure reproduces with the same keys (a random key once hid a '+' bug).
LOG_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"tiers test log key").digest())
LOG_VKEY = notes.verifier_key(ORIGIN, LOG_KEY.public_key())
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"another key").digest())


# -- keys and signed notes -----------------------------------------------------------------------


def test_the_go_reference_signature_is_reproduced_byte_for_byte() -> None:
    key = Ed25519PrivateKey.from_private_bytes(PETER_SEED)
    assert notes.verifier_key("PeterNeumann", key.public_key()) == PETER_VKEY
    assert notes.key_id("PeterNeumann", key.public_key()).hex() == "c74f20a3"
    assert notes.sign_note(PETER_TEXT, "PeterNeumann", key) == PETER_TEXT + "\n" + PETER_SIG


def test_published_notes_open_with_their_published_keys() -> None:
    assert notes.open_note(C2SP_NOTE, C2SP_VKEY) == "This is an example message.\n"
    both = PETER_TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert notes.open_note(both, PETER_VKEY) == PETER_TEXT  # Enoch's line: unknown, ignored
    assert notes.open_note(both, ENOCH_VKEY) == PETER_TEXT  # and the other way round
    parsed = notes.parse_verifier_key(ENOCH_VKEY)
    assert (parsed.name, parsed.key_id.hex()) == ("EnochRoot", "af0cfe78")


def test_a_signed_note_opens_to_its_body() -> None:
    body = notes.checkpoint_body(ORIGIN, 7, bytes(32))
    note = notes.sign_note(body, ORIGIN, LOG_KEY)
    assert note.startswith(body + "\n— " + ORIGIN + " ")
    assert notes.open_note(note, LOG_VKEY) == body


def test_a_body_changed_by_one_character_does_not_open() -> None:
    body = notes.checkpoint_body(ORIGIN, 7, bytes(32))
    note = notes.sign_note(body, ORIGIN, LOG_KEY)
    for position, character in enumerate(body):
        changed = note[:position] + ("x" if character != "x" else "y") + note[position + 1 :]
        with pytest.raises(NoteError):
            notes.open_note(changed, LOG_VKEY)


def test_a_signature_by_another_key_under_the_same_name_does_not_open() -> None:
    body = notes.checkpoint_body(ORIGIN, 7, bytes(32))
    with pytest.raises(NoteError, match="no signature"):
        notes.open_note(notes.sign_note(body, ORIGIN, OTHER_KEY), LOG_VKEY)


def test_signatures_by_unknown_keys_are_ignored_wherever_they_stand() -> None:
    body = notes.checkpoint_body(ORIGIN, 7, bytes(32))
    ours = notes.sign_note(body, ORIGIN, LOG_KEY).removeprefix(body + "\n")
    witness = notes.sign_note(body, "witness.example", OTHER_KEY).removeprefix(body + "\n")
    impostor = notes.sign_note(body, ORIGIN, OTHER_KEY).removeprefix(body + "\n")
    for lines in (ours + witness, witness + ours, impostor + ours + impostor + witness):
        assert notes.open_note(body + "\n" + lines, LOG_VKEY) == body
    with pytest.raises(NoteError, match="no signature"):
        notes.open_note(body + "\n" + witness + impostor, LOG_VKEY)


def test_a_bad_signature_under_the_right_key_id_rejects_the_whole_note() -> None:
    body = notes.checkpoint_body(ORIGIN, 7, bytes(32))
    good = notes.sign_note(body, ORIGIN, LOG_KEY)
    kid = notes.key_id(ORIGIN, LOG_KEY.public_key())
    forged = f"— {ORIGIN} {base64.b64encode(kid + bytes(64)).decode()}\n"
    with pytest.raises(NoteError, match="does not verify"):
        notes.open_note(good + forged, LOG_VKEY)


@pytest.mark.parametrize(
    "note",
    [
        PETER_TEXT,  # no signatures
        PETER_TEXT + "\n",  # a blank line, then nothing
        PETER_TEXT + "\n" + PETER_SIG[:-1],  # no final newline
        "\x01" + PETER_TEXT + "\n" + PETER_SIG,  # a control character
        "\udcff" + PETER_TEXT + "\n" + PETER_SIG,  # not UTF-8
        PETER_TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Peter Neumann"),  # name with space
        PETER_TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        PETER_TEXT + "\n" + PETER_SIG.replace("— ", "- "),  # hyphen, not em dash
        PETER_TEXT + "\n" + PETER_SIG.replace("x08go/", "x08go%"),  # not base64
        PETER_TEXT + "\n" + PETER_SIG.replace("x08go", "x08go\t"),
        PETER_TEXT + "\n— PeterNeumann x08goA==\n",  # shorter than a key id and one byte
        PETER_TEXT + "\n— PeterNeumann\n",
        PETER_TEXT + "\n" + PETER_SIG * 101,  # more signatures than any verifier must read
    ],
)
def test_malformed_notes_are_refused(note: str) -> None:
    with pytest.raises(NoteError):
        notes.open_note(note, PETER_VKEY)


def test_signing_refuses_text_a_verifier_would_refuse() -> None:
    with pytest.raises(NoteError, match="newline"):
        notes.sign_note("no final newline", ORIGIN, LOG_KEY)
    with pytest.raises(NoteError, match="control"):
        notes.sign_note("tab\there\n", ORIGIN, LOG_KEY)
    for name in ("", "a+b", "a b", "a\u00a0b"):
        with pytest.raises(NoteError, match="key name"):
            notes.sign_note("text\n", name, LOG_KEY)


def test_verifier_keys_round_trip_whatever_characters_their_base64_holds() -> None:
    with_plus = 0
    for n in range(64):
        key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"%d" % n).digest())
        vkey = notes.verifier_key(ORIGIN, key.public_key())
        parsed = notes.parse_verifier_key(vkey)
        assert (parsed.name, parsed.key_id) == (ORIGIN, notes.key_id(ORIGIN, key.public_key()))
        assert notes.verifier_key(ORIGIN, parsed.public_key) == vkey
        with_plus += "+" in vkey.split("+", 2)[2]
    assert with_plus  # base64 keys holding '+' (the separator) are among them


def test_mangled_verifier_keys_are_refused() -> None:
    # golang/mod note_test.go TestNewVerifier: every proper substring, every character bumped.
    manglings = [
        PETER_VKEY[i:j]
        for i in range(len(PETER_VKEY) + 1)
        for j in range(i + 1, len(PETER_VKEY) + 1)
        if (i, j) != (0, len(PETER_VKEY))
    ]
    manglings += [
        PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1 :]
        for i in range(len(PETER_VKEY))
    ]
    manglings += [
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        PETER_VKEY.replace("c74f20a3", "C74F20A3"),
    ]
    for mangled in manglings:
        with pytest.raises(NoteError):
            notes.parse_verifier_key(mangled)


def test_log_keys_round_trip_through_pkcs8_pem() -> None:
    pem = notes.dump_log_key(LOG_KEY)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = notes.load_log_key(pem)
    assert notes.verifier_key(ORIGIN, loaded.public_key()) == LOG_VKEY
    fresh = notes.generate_log_key()
    assert notes.verifier_key(ORIGIN, fresh.public_key()) != LOG_VKEY


def test_only_ed25519_pem_keys_load() -> None:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(NoteError, match="Ed25519"):
        notes.load_log_key(ec_pem)
    with pytest.raises(NoteError, match="PEM"):
        notes.load_log_key(b"not a key")


# -- checkpoints ---------------------------------------------------------------------------------


def test_a_checkpoint_body_is_origin_size_and_base64_root() -> None:
    root = bytes(range(32))
    body = notes.checkpoint_body(ORIGIN, 20852163, root)
    assert body == f"{ORIGIN}\n20852163\n{base64.b64encode(root).decode()}\n"
    assert notes.parse_checkpoint(body) == notes.Checkpoint(ORIGIN, 20852163, root, ())


def test_the_spec_example_checkpoint_parses_with_its_extensions() -> None:
    body = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    checkpoint = notes.parse_checkpoint(body + "ext one\next two\n")
    assert (checkpoint.origin, checkpoint.size) == ("example.com/behind-the-sofa", 20852163)
    assert base64.b64encode(checkpoint.root).decode() == body.split("\n")[2]
    assert checkpoint.extensions == ("ext one", "ext two")


ROOT_B64 = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    "body",
    [
        f"{ORIGIN}\n7\n{ROOT_B64}",  # no final newline
        f"{ORIGIN}\n7\n",  # no root
        f"\n7\n{ROOT_B64}\n",  # empty origin
        f"{ORIGIN}\n07\n{ROOT_B64}\n",  # leading zero
        f"{ORIGIN}\n-7\n{ROOT_B64}\n",
        f"{ORIGIN}\n+7\n{ROOT_B64}\n",
        f"{ORIGIN}\n7\n{base64.b64encode(bytes(31)).decode()}\n",  # not a SHA-256 root
        f"{ORIGIN}\n7\n{ROOT_B64.rstrip('=')}\n",  # unpadded
        f"{ORIGIN}\n7\n{ROOT_B64[:-2]}B=\n",  # non-canonical trailing bits
        f"{ORIGIN}\n7\n{ROOT_B64}\n\nextension\n",  # empty extension line
    ],
)
def test_malformed_checkpoints_are_refused(body: str) -> None:
    with pytest.raises(NoteError):
        notes.parse_checkpoint(body)


def test_checkpoint_bodies_cannot_be_built_wrong() -> None:
    for origin, size, root in ((ORIGIN, -1, bytes(32)), ("", 1, bytes(32)), ("a\nb", 1, bytes(32))):
        with pytest.raises(NoteError):
            notes.checkpoint_body(origin, size, root)
    with pytest.raises(NoteError):
        notes.checkpoint_body(ORIGIN, 1, bytes(31))


# -- tlog-proof receipts -------------------------------------------------------------------------

ENTRIES = [f'{{"event":"access","n":{i}}}'.encode() for i in range(11)]
STORE = merkle.MemoryStore()
SIZE = merkle.append(STORE.put, STORE.get, 0, [merkle.leaf_hash(e) for e in ENTRIES])


def _checkpoint(key: Ed25519PrivateKey = LOG_KEY, origin: str = ORIGIN) -> str:
    return notes.sign_note(
        notes.checkpoint_body(origin, SIZE, merkle.root(STORE, SIZE)), origin, key
    )


def _receipt(index: int, checkpoint: str | None = None, extra: bytes | None = None) -> str:
    proof = merkle.inclusion_proof(STORE, index, SIZE)
    return notes.tlog_proof(index, proof, checkpoint or _checkpoint(), extra)


def test_a_receipt_is_laid_out_as_the_spec_says() -> None:
    checkpoint = _checkpoint()
    proof = merkle.inclusion_proof(STORE, 6, SIZE)
    receipt = notes.tlog_proof(6, proof, checkpoint, extra=b"v1")
    expected = ["c2sp.org/tlog-proof@v1", "extra djE=", "index 6"]
    expected += [base64.b64encode(h).decode() for h in proof]
    assert receipt == "\n".join(expected) + "\n\n" + checkpoint
    assert notes.parse_tlog_proof(receipt) == notes.TlogProof(6, tuple(proof), checkpoint, b"v1")
    assert notes.tlog_proof(6, proof, checkpoint).startswith("c2sp.org/tlog-proof@v1\nindex 6\n")


def test_the_spec_example_receipt_parses() -> None:
    example = (
        "c2sp.org/tlog-proof@v1\n"
        "extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ\n"
        "index 73894\n"
        "gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n"
        "B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\n"
        "EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=\n"
        "RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=\n"
        "AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=\n"
        "\n"
        "example.com/fancylog\n"
        "109482\n"
        "sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n"
        "\n"
        "— example.com/fancylog hI2DJw[...]1roloI=\n"
    )
    parsed = notes.parse_tlog_proof(example)
    assert parsed.index == 73894
    assert len(parsed.proof) == 5
    assert parsed.extra is not None
    assert parsed.extra.startswith(b"age-v1.2.1-darwin-arm64.tar.gz")
    assert parsed.checkpoint_note.startswith("example.com/fancylog\n109482\n")


@pytest.mark.parametrize("index", range(SIZE))
def test_every_receipt_verifies_for_its_entry(index: int) -> None:
    receipt = _receipt(index, extra=b"context")
    assert notes.verify_tlog_proof(receipt, ENTRIES[index], LOG_VKEY, ORIGIN)


def test_a_receipt_does_not_verify_another_entry() -> None:
    receipt = _receipt(3)
    assert not notes.verify_tlog_proof(receipt, ENTRIES[4], LOG_VKEY, ORIGIN)
    assert not notes.verify_tlog_proof(receipt, ENTRIES[3] + b" ", LOG_VKEY, ORIGIN)
    assert not notes.verify_tlog_proof(receipt, merkle.leaf_hash(ENTRIES[3]), LOG_VKEY, ORIGIN)


def test_a_receipt_with_another_index_does_not_verify() -> None:
    for wrong in (2, 4, 10, 11, 12, 1 << 40):
        receipt = _receipt(3).replace("\nindex 3\n", f"\nindex {wrong}\n")
        assert not notes.verify_tlog_proof(receipt, ENTRIES[3], LOG_VKEY, ORIGIN)


def test_a_tampered_proof_hash_does_not_verify() -> None:
    proof = merkle.inclusion_proof(STORE, 3, SIZE)
    for position in range(len(proof)):
        for bit in (0, 7, 255):
            tampered = list(proof)
            flipped = bytearray(tampered[position])
            flipped[bit // 8] ^= 1 << (bit % 8)
            tampered[position] = bytes(flipped)
            receipt = notes.tlog_proof(3, tampered, _checkpoint())
            assert not notes.verify_tlog_proof(receipt, ENTRIES[3], LOG_VKEY, ORIGIN)
    for shortened in (proof[:-1], [*proof, proof[0]], proof[::-1]):
        receipt = notes.tlog_proof(3, shortened, _checkpoint())
        assert not notes.verify_tlog_proof(receipt, ENTRIES[3], LOG_VKEY, ORIGIN)


def test_a_checkpoint_signed_by_another_key_does_not_verify() -> None:
    receipt = _receipt(3, checkpoint=_checkpoint(key=OTHER_KEY))
    assert not notes.verify_tlog_proof(receipt, ENTRIES[3], LOG_VKEY, ORIGIN)
    other_vkey = notes.verifier_key(ORIGIN, OTHER_KEY.public_key())
    assert notes.verify_tlog_proof(receipt, ENTRIES[3], other_vkey, ORIGIN)


def test_a_checkpoint_of_another_log_does_not_verify() -> None:
    other = "tiers.test/another-log"
    receipt = _receipt(3, checkpoint=_checkpoint(origin=other))
    other_vkey = notes.verifier_key(other, LOG_KEY.public_key())
    assert notes.verify_tlog_proof(receipt, ENTRIES[3], other_vkey, other)
    assert not notes.verify_tlog_proof(receipt, ENTRIES[3], other_vkey, ORIGIN)
    assert not notes.verify_tlog_proof(_receipt(3), ENTRIES[3], LOG_VKEY, other)


def test_a_checkpoint_edited_inside_a_receipt_does_not_verify() -> None:
    receipt = _receipt(3)
    edited = receipt.replace(f"\n{ORIGIN}\n{SIZE}\n", f"\n{ORIGIN}\n{SIZE + 1}\n")
    assert edited != receipt
    assert not notes.verify_tlog_proof(edited, ENTRIES[3], LOG_VKEY, ORIGIN)


EDITS: list[Callable[[str], str]] = [
    lambda r: r.replace("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2"),
    lambda r: r.replace("\nindex 3\n", "\nindex 03\n"),
    lambda r: r.replace("\nindex 3\n", "\nindex -3\n"),
    lambda r: r.replace("\nindex 3\n", "\n"),
    lambda r: r.replace("\nindex 3\n", "\nindex 3\nextra djE=\n"),  # extra after the index
    lambda r: r.replace("\n\n", "\n", 1),  # no blank line before the checkpoint
    lambda r: r.split("\n\n", 1)[0] + "\n\n",  # no checkpoint
    lambda r: r.replace("=\n", "\n", 1),  # an unpadded hash
    lambda r: r.replace("\nindex 3\n", "\nindex 3\nAAAA\n"),  # a 3-byte hash
    lambda r: r.replace("\nindex 3\n", "\nindex 3\n\n"),  # an empty proof line
]


@pytest.mark.parametrize("edit", EDITS)
def test_malformed_receipts_are_refused_and_do_not_verify(edit: Callable[[str], str]) -> None:
    receipt = edit(_receipt(3))
    assert receipt != _receipt(3)
    assert not notes.verify_tlog_proof(receipt, ENTRIES[3], LOG_VKEY, ORIGIN)


def test_receipts_cannot_be_built_wrong_and_a_bad_verifier_key_is_an_error() -> None:
    with pytest.raises(NoteError):
        notes.tlog_proof(-1, [], _checkpoint())
    with pytest.raises(NoteError):
        notes.tlog_proof(0, [bytes(31)], _checkpoint())
    with pytest.raises(NoteError):
        notes.tlog_proof(0, [], "not a note")
    with pytest.raises(NoteError):
        notes.parse_tlog_proof("c2sp.org/tlog-proof@v1\nindex 0\n")
    with pytest.raises(NoteError):
        notes.verify_tlog_proof(_receipt(3), ENTRIES[3], "not+a+key", ORIGIN)
