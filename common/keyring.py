"""Signing keys for receipts (ES256 JWS), kept under instance/keys/, rotated, published as JWKS.

Verification never takes a key from the token header: the `kid` only selects among ours.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from common.clock import utcnow

ALGORITHM = "ES256"
_INDEX = "keyring.json"
# directory -> ((directory, index mtime), active key): see Keyring.active
_ACTIVE: dict[str, tuple[tuple[str, int], SigningKey]] = {}


@dataclass(frozen=True)
class KeyInfo:
    """One key's metadata; the private half stays in `<kid>.pem` beside the index."""

    kid: str
    created_at: datetime
    retired_at: datetime | None


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The public key as a JWK with its RFC 7638 thumbprint as `kid`."""
    jwk: dict[str, str] = ECAlgorithm.to_jwk(public_key, as_dict=True)
    members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return {
        **members,
        "kid": _b64(hashlib.sha256(canonical).digest()),
        "use": "sig",
        "alg": "ES256",
    }


_PUBLIC: dict[tuple[str, str], dict[str, Any]] = {}
_KID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class Keyring:
    """The keys in one directory; every process reads the same files, so rotation is shared."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def _read_index(self) -> list[KeyInfo]:
        path = self.directory / _INDEX
        if not path.exists():
            return []
        return [
            KeyInfo(
                kid=row["kid"],
                created_at=datetime.fromisoformat(row["created_at"]),
                retired_at=datetime.fromisoformat(row["retired_at"]) if row["retired_at"] else None,
            )
            for row in json.loads(path.read_text())
        ]

    def _write_index(self, keys: list[KeyInfo]) -> None:
        rows = [
            {
                "kid": k.kid,
                "created_at": k.created_at.isoformat(),
                "retired_at": k.retired_at.isoformat() if k.retired_at else None,
            }
            for k in keys
        ]
        tmp = self.directory / f".{_INDEX}.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps(rows, indent=2))
        tmp.replace(self.directory / _INDEX)  # atomic: readers see the old or the new index

    def all(self) -> list[KeyInfo]:
        """Every key ever made here, oldest first."""
        return self._read_index()

    def rotate(self) -> KeyInfo:
        """Make a new active key and retire the current one (it keeps verifying)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        private_key = ec.generate_private_key(ec.SECP256R1())
        kid = public_jwk(private_key.public_key())["kid"]
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(self.directory / f"{kid}.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        now = utcnow()
        keys = [KeyInfo(k.kid, k.created_at, k.retired_at or now) for k in self._read_index()] + [
            KeyInfo(kid, now, None)
        ]
        self._write_index(keys)
        return keys[-1]

    def active(self) -> SigningKey:
        """The key that signs now; one is made on first use.

        Kept in memory until the index file changes, so a rotation by any process (they all
        share the directory) is picked up at the next signature.
        """
        index = self.directory / _INDEX
        stamp = (str(self.directory), index.stat().st_mtime_ns if index.exists() else 0)
        cached = _ACTIVE.get(stamp[0])
        if cached is not None and cached[0] == stamp:
            return cached[1]
        key = self._load_active()
        _ACTIVE[stamp[0]] = (stamp, key)
        return key

    def _load_active(self) -> SigningKey:
        current = [k for k in self._read_index() if k.retired_at is None]
        info = current[-1] if current else self.rotate()
        pem = (self.directory / f"{info.kid}.pem").read_bytes()
        private_key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(private_key, ec.EllipticCurvePrivateKey):
            raise RuntimeError(f"key {info.kid} is not an EC key")
        return SigningKey(info.kid, private_key)

    def public_jwk(self, kid: str) -> dict[str, Any] | None:
        """The public JWK of one of our keys, by kid (None if we never made it).

        A key never changes once made, so it is cached for the life of the process; only
        a safe kid (the RFC 7638 thumbprint alphabet) is ever turned into a file name.
        """
        cache_key = (str(self.directory), kid)
        if cache_key in _PUBLIC:
            return _PUBLIC[cache_key]
        if not kid or len(kid) > 64 or not set(kid) <= _KID_CHARS:
            return None
        path = self.directory / f"{kid}.pem"
        if not path.exists():
            return None
        private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(private_key, ec.EllipticCurvePrivateKey):
            return None
        jwk = public_jwk(private_key.public_key())
        _PUBLIC[cache_key] = jwk
        return jwk

    def jwks(self, *, publish_for: timedelta) -> dict[str, Any]:
        """Public keys that may still verify a receipt: active, or retired less than
        `publish_for` ago (longer than any consent the charter allows)."""
        now = utcnow()
        published = []
        for info in self._read_index():
            if info.retired_at is not None and info.retired_at + publish_for < now:
                continue
            pem = (self.directory / f"{info.kid}.pem").read_bytes()
            private_key = serialization.load_pem_private_key(pem, password=None)
            assert isinstance(private_key, ec.EllipticCurvePrivateKey)  # noqa: S101
            published.append(public_jwk(private_key.public_key()))
        return {"keys": published}


def sign(claims: dict[str, Any], key: SigningKey, *, typ: str = "JWT") -> str:
    """A compact JWS (ES256) over `claims`, with our `kid`."""
    return jwt.encode(
        claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": typ}
    )


def app_keyring() -> Keyring:
    """The keyring of the running app (instance/keys/ unless TIERS_KEYS_DIR says otherwise)."""
    from common.settings import setting

    return Keyring(setting("KEYS_DIR"))
