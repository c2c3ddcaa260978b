"""JWKs for client tests: public keys of each accepted kind, and the ones refused."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm


def _jwk(text: str | dict[str, Any]) -> dict[str, Any]:
    return json.loads(text) if isinstance(text, str) else dict(text)


@cache
def ec_private() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def ec_public_jwk() -> dict[str, Any]:
    return _jwk(ECAlgorithm.to_jwk(ec_private().public_key()))


def ec_private_jwk() -> dict[str, Any]:
    return _jwk(ECAlgorithm.to_jwk(ec_private()))


def p384_public_jwk() -> dict[str, Any]:
    return _jwk(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key()))


@cache
def _rsa(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def rsa_public_jwk(bits: int = 2048) -> dict[str, Any]:
    return _jwk(RSAAlgorithm.to_jwk(_rsa(bits).public_key()))


def ed25519_public_jwk() -> dict[str, Any]:
    return _jwk(OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate().public_key()))


def jwks(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(keys) or [ec_public_jwk()]}
