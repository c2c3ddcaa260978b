"""The log's signed formats: C2SP signed notes, tlog-checkpoint bodies and tlog-proof receipts.

Ed25519 through `cryptography`, byte for byte as c2sp.org/signed-note, c2sp.org/tlog-checkpoint
and c2sp.org/tlog-proof write them, so an auditor checks our checkpoints and receipts with any
conforming tool (golang.org/x/mod/sumdb/note, transparency-dev) and none of our code.
Parsers are strict: anything malformed is refused, never repaired.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit import merkle

# signed-note §Signature types: the identifier byte of Ed25519, part of the key id and vkey.
ED25519 = b"\x01"
SIGNATURE_PREFIX = "\u2014 "  # em dash, space (signed-note §Format)
TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"
# signed-note asks verifiers to cap the signatures they read and to accept at least 16;
# golang.org/x/mod/sumdb/note stops at 100, and so do we.
MAX_SIGNATURES = 100

_DECIMAL = re.compile(r"0|[1-9][0-9]*")  # ASCII decimal without leading zeroes
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}")  # fixed-length lowercase hex (signed-note §Conventions)
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # every ASCII control character but newline


class NoteError(ValueError):
    """A note, key, checkpoint or proof that is malformed or carries no valid signature."""


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A parsed vkey: the (name, key id) pair selects the signature lines it checks."""

    name: str
    key_id: bytes
    public_key: Ed25519PublicKey


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The body of a tlog-checkpoint: which log, how many leaves, which root."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TlogProof:
    """A parsed tlog-proof. `extra` is unauthenticated (tlog-proof §Format): never trust it."""

    index: int
    proof: tuple[bytes, ...]
    checkpoint_note: str
    extra: bytes | None = None


# -- keys ----------------------------------------------------------------------------------------


def generate_log_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 log key."""
    return Ed25519PrivateKey.generate()


def dump_log_key(key: Ed25519PrivateKey) -> bytes:
    """PKCS #8 PEM, unencrypted: protecting it at rest is the keyring's job, not this format's."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_log_key(pem: bytes) -> Ed25519PrivateKey:
    """The Ed25519 key in a PKCS #8 PEM; NoteError for anything else (another algorithm too)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise NoteError("not an unencrypted PKCS #8 PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise NoteError("the log key must be Ed25519")
    return key


def key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """SHA-256(name || 0x0A || 0x01 || public key)[:4], the Ed25519 key id of signed-note."""
    _check_name(name)
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + _raw(public_key)).digest()[:4]


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """The vkey `<name>+<hex key id>+<base64(0x01 || public key)>` that auditors configure."""
    encoded = base64.b64encode(ED25519 + _raw(public_key)).decode()
    return f"{name}+{key_id(name, public_key).hex()}+{encoded}"


def parse_verifier_key(text: str) -> VerifierKey:
    """Parse a vkey, refusing any other algorithm and a key id that does not match the key."""
    parts = text.split("+", 2)  # the name has no '+'; the base64 key may
    if len(parts) != 3 or not _KEY_ID_HEX.fullmatch(parts[1]):
        raise NoteError("a verifier key is <name>+<8 hex digits>+<base64 key>")
    name, hex_id, encoded = parts
    _check_name(name)
    material = _b64decode(encoded)
    if len(material) != 33 or material[:1] != ED25519:
        raise NoteError("only Ed25519 verifier keys (type 0x01, 32 bytes) are supported")
    public_key = Ed25519PublicKey.from_public_bytes(material[1:])
    if key_id(name, public_key).hex() != hex_id:
        raise NoteError("the verifier key's id does not match its name and key")
    return VerifierKey(name=name, key_id=bytes.fromhex(hex_id), public_key=public_key)


# -- signed notes --------------------------------------------------------------------------------


def sign_note(body: str, name: str, private_key: Ed25519PrivateKey) -> str:
    """The signed note: body, a blank line, one signature line by `name`."""
    _check_text(body)
    if not body.endswith("\n"):
        raise NoteError("a note's text ends with a newline")
    signature = private_key.sign(body.encode())
    kid = key_id(name, private_key.public_key())
    return f"{body}\n{SIGNATURE_PREFIX}{name} {base64.b64encode(kid + signature).decode()}\n"


def open_note(note: str, verifier: str) -> str:
    """Verify `note` with the vkey `verifier` and return its text (the body).

    Per signed-note: signatures by other keys, even with the same name or key id (not both),
    are ignored; a signature line matching the key that fails to verify rejects the whole note;
    no valid signature by the key rejects it too.
    """
    key = parse_verifier_key(verifier)
    _check_text(note)
    # The text ends at the last blank line; what follows is only signature lines.
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise NoteError("a signed note is text, a blank line, then signature lines")
    text, lines = note[: split + 1], note[split + 2 : -1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"more than {MAX_SIGNATURES} signatures")
    verified = False
    for line in lines:
        name, kid, signature = _parse_signature_line(line)
        if name != key.name or kid != key.key_id:
            continue
        try:
            key.public_key.verify(signature, text.encode())
        except InvalidSignature as exc:
            raise NoteError(f"the signature by {key.name} does not verify") from exc
        verified = True
    if not verified:
        raise NoteError(f"the note carries no signature by {key.name}+{key.key_id.hex()}")
    return text


# -- checkpoints ---------------------------------------------------------------------------------


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    """The tlog-checkpoint text `<origin>\\n<size>\\n<base64 root>\\n`, ready for `sign_note`."""
    if not origin or "\n" in origin or _CONTROL.search(origin):
        raise NoteError("the origin is one non-empty line")
    if size < 0 or len(root) != merkle.HASH_SIZE:
        raise NoteError("a checkpoint has a size >= 0 and a 32-byte root")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def parse_checkpoint(body: str) -> Checkpoint:
    """Parse a checkpoint's text (an opened note's body: parse only what a signature covers)."""
    _check_text(body)
    if not body.endswith("\n"):
        raise NoteError("a checkpoint ends with a newline")
    lines = body[:-1].split("\n")
    if len(lines) < 3 or any(not line for line in lines):
        raise NoteError("a checkpoint is at least three non-empty lines")
    origin, size, encoded, *extensions = lines
    if not _DECIMAL.fullmatch(size):
        raise NoteError("the tree size is a decimal without leading zeroes")
    root = _b64decode(encoded)
    if len(root) != merkle.HASH_SIZE:
        raise NoteError("the root hash is 32 bytes")
    return Checkpoint(origin=origin, size=int(size), root=root, extensions=tuple(extensions))


# -- tlog-proof receipts -------------------------------------------------------------------------


def tlog_proof(
    index: int, proof: Sequence[bytes], checkpoint_note: str, extra: bytes | None = None
) -> str:
    """A c2sp.org/tlog-proof@v1 receipt: the inclusion proof of `index` and the signed checkpoint.

    `extra` is opaque application data, base64-encoded on its own line; it is not signed.
    """
    if index < 0 or any(len(h) != merkle.HASH_SIZE for h in proof):
        raise NoteError("a proof has an index >= 0 and 32-byte hashes")
    if not checkpoint_note.endswith("\n"):
        raise NoteError("the checkpoint is a signed note, included verbatim")
    lines = [TLOG_PROOF_HEADER]
    if extra is not None:
        lines.append(f"extra {base64.b64encode(extra).decode()}")
    lines.append(f"index {index}")
    lines.extend(base64.b64encode(h).decode() for h in proof)
    return "\n".join(lines) + "\n\n" + checkpoint_note


def parse_tlog_proof(text: str) -> TlogProof:
    """Parse a receipt; the checkpoint is returned verbatim, unverified."""
    head, blank, checkpoint_note = text.partition("\n\n")
    if not blank or not checkpoint_note:
        raise NoteError("a tlog-proof is header lines, a blank line, then the checkpoint")
    lines = head.split("\n")
    if lines[0] != TLOG_PROOF_HEADER:
        raise NoteError(f"a tlog-proof starts with {TLOG_PROOF_HEADER}")
    position, extra = 1, None
    if len(lines) > position and lines[position].startswith("extra "):
        extra = _b64decode(lines[position].removeprefix("extra "))
        position += 1
    if len(lines) <= position or not lines[position].startswith("index "):
        raise NoteError("a tlog-proof has an index line")
    index = lines[position].removeprefix("index ")
    if not _DECIMAL.fullmatch(index):
        raise NoteError("the index is a decimal without leading zeroes")
    hashes = tuple(_b64decode(line) for line in lines[position + 1 :])
    if any(len(h) != merkle.HASH_SIZE for h in hashes):
        raise NoteError("each proof line is one base64 SHA-256 hash")
    return TlogProof(index=int(index), proof=hashes, checkpoint_note=checkpoint_note, extra=extra)


def verify_tlog_proof(text: str, leaf: bytes, verifier: str, origin: str) -> bool:
    """Whether the receipt proves that the entry `leaf` (its bytes, not its hash) is logged.

    The steps of tlog-proof §Verifying: the checkpoint is signed by `verifier` and names
    `origin`, then the inclusion proof binds leaf_hash(leaf) to its root. A malformed receipt is
    False; a malformed `verifier` is the caller's configuration error and raises NoteError.
    """
    parse_verifier_key(verifier)
    try:
        receipt = parse_tlog_proof(text)
        checkpoint = parse_checkpoint(open_note(receipt.checkpoint_note, verifier))
    except NoteError:
        return False
    if checkpoint.origin != origin:
        return False
    return merkle.verify_inclusion(
        receipt.index, checkpoint.size, merkle.leaf_hash(leaf), receipt.proof, checkpoint.root
    )


# -- helpers -------------------------------------------------------------------------------------


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _check_name(name: str) -> None:
    """Key names are non-empty, without Unicode spaces or '+' (signed-note §Format)."""
    if not name or "+" in name or any(c.isspace() for c in name) or _CONTROL.search(name):
        raise NoteError(f"invalid key name {name!r}")


def _check_text(text: str) -> None:
    """Notes are UTF-8 with no ASCII control character but newline (signed-note §Format)."""
    try:
        text.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate has no UTF-8 form
        raise NoteError("a note is valid UTF-8") from exc
    if _CONTROL.search(text):
        raise NoteError("a note contains no control characters but newline")


def _parse_signature_line(line: str) -> tuple[str, bytes, bytes]:
    """`— <name> <base64(key id || signature)>` as (name, key id, signature)."""
    if not line.startswith(SIGNATURE_PREFIX):
        raise NoteError("a signature line starts with an em dash and a space")
    name, space, encoded = line.removeprefix(SIGNATURE_PREFIX).partition(" ")
    _check_name(name)
    raw = _b64decode(encoded) if space else b""
    if len(raw) < 5:
        raise NoteError("a signature is a 4-byte key id and a signature")
    return name, raw[:4], raw[4:]


def _b64decode(text: str) -> bytes:
    """Standard, padded base64 (RFC 4648 §4) in canonical form only: one encoding per value."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError("invalid base64") from exc
    if base64.b64encode(raw).decode() != text:
        raise NoteError("non-canonical base64")
    return raw
