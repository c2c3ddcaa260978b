"""The one place a JWS is verified: our access tokens, client assertions, DPoP proofs.

Everything that decides whether a signed token is trusted lives here so that it is reviewed once
(RFC 8725, the JWT best current practice):

- the algorithm is chosen by the caller, never by the token: `alg` must be in the caller's list,
  `none` and HMAC can never be in that list, and PyJWT is then pinned to the one `alg` checked;
- the key comes from our own store, looked up by `kid`; the header's `jwk`, `jku`, `x5u` and
  `x5c` are ignored (only a DPoP proof carries its key, and there the key *is* the subject);
- the key must be public and of the family the `alg` needs, so a public key can never be fed to
  HMAC as a secret (the "algorithm confusion" attacks);
- sizes are bounded before any base64 or JSON work, and `crit` is refused (we understand no
  extension, and RFC 7515 §4.1.11 says a verifier must then reject);
- times are checked against `common.clock.utcnow()`, not PyJWT's `time.time()`, so a frozen
  test clock governs `exp`, `nbf` and `iat` too.

PyJWT does the signature, `iss` and `aud`; this module does the rest before or after it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from common.clock import utcnow

ACCESS_TOKEN_ALGORITHMS = ("ES256",)  # our own tokens: pinned
CLIENT_ALGORITHMS = ("ES256", "PS256", "EdDSA")  # client assertions and DPoP proofs (FAPI 2.0)
MAX_TOKEN_BYTES = 8192  # whole compact JWS; larger is refused before any base64 decoding
MAX_HEADER_BYTES = 2048  # decoded header

DPOP_TYP = "dpop+jwt"
MAX_JTI_CHARS = 128

# Base64url without padding encodes 3 bytes in 4 characters.
_MAX_HEADER_SEGMENT = -(-MAX_HEADER_BYTES * 4 // 3)
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
# The key family (kty, crv) each supported `alg` needs; an `alg` outside this table is a
# programming error, not a bad token.
_KEY_FAMILY: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "EdDSA": ("OKP", "Ed25519"),
}
_PUBLIC_KEY_TYPES = (EllipticCurvePublicKey, RSAPublicKey, Ed25519PublicKey)
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k", "oth"})
# RFC 7638 §3.2 (EC, RSA) and RFC 8037 §2 (OKP): the members a thumbprint hashes, per kty.
_THUMBPRINT_MEMBERS: dict[str, tuple[str, ...]] = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}
_DEFAULT_PORTS = {"http": 80, "https": 443}


class JoseError(Exception):
    """A JWS that must not be trusted; `str(error)` is a short reason safe to show the caller."""


@dataclass(frozen=True)
class DpopProof:
    """What a verified DPoP proof tells the caller; replay (`jti`) and `nonce` are its job."""

    jkt: str  # RFC 7638 thumbprint of the proof's key
    jti: str
    iat: int
    nonce: str | None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK SHA-256 thumbprint, base64url without padding (EC, RSA, OKP keys)."""
    kty = jwk.get("kty")
    members = _THUMBPRINT_MEMBERS.get(kty) if isinstance(kty, str) else None
    if members is None:
        raise JoseError("unsupported key type")
    required = {name: jwk.get(name) for name in members}
    if not all(isinstance(value, str) and value for value in required.values()):
        raise JoseError("key is missing a required member")
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True).encode("ascii")
    return _b64(hashlib.sha256(canonical).digest())


def token_hash(value: str) -> str:
    """base64url(SHA-256(value)) without padding: the DPoP `ath` of an access token.

    RFC 9449 hashes the token's ASCII octets; UTF-8 is the same for every valid token and does
    not raise on a bad one (which then simply matches nothing).
    """
    return _b64(hashlib.sha256(value.encode("utf-8")).digest())


def _fail(reason: str) -> NoReturn:
    raise JoseError(reason)


def _b64decode(segment: str, what: str) -> bytes:
    """Strict base64url: the URL-safe alphabet, no padding, canonical trailing bits.

    PyJWT also accepts `=` padding; refusing it here keeps one spelling per token.
    """
    if not _BASE64URL.fullmatch(segment) or len(segment) % 4 == 1:
        _fail(f"malformed {what}")
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        _fail(f"malformed {what}")
    if _b64(data) != segment:
        _fail(f"malformed {what}")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """RFC 7515 §5.2: a header with a repeated member is refused, so no two parsers disagree."""
    result = dict(pairs)
    if len(result) != len(pairs):
        _fail("duplicate header member")
    return result


def _no_constant(name: str) -> NoReturn:
    _fail(f"header is not valid JSON ({name})")


def unverified_header(token: str) -> dict[str, Any]:
    """Parse and bound the header (size, JSON object, alg in a given list is NOT checked here).

    Also checks the token's shape: a string of ASCII, at most MAX_TOKEN_BYTES, with exactly three
    non-empty segments (so an unsigned `alg: none` token never gets further). Nothing returned
    is trusted: it only tells the caller which key or rules to apply.
    """
    if not isinstance(token, str):
        _fail("token is not a string")
    if len(token) > MAX_TOKEN_BYTES:  # before any other work, so a huge token costs nothing
        _fail("token too large")
    if not token.isascii():
        _fail("token is not ASCII")
    segments = token.split(".")
    if len(segments) != 3 or not all(segments):
        _fail("token is not a compact JWS with three non-empty segments")
    if len(segments[0]) > _MAX_HEADER_SEGMENT:
        _fail("header too large")
    raw = _b64decode(segments[0], "header")
    if len(raw) > MAX_HEADER_BYTES:
        _fail("header too large")
    try:
        # Decoded as UTF-8 here: json.loads(bytes) would also guess UTF-16 and UTF-32.
        text = raw.decode("utf-8")
        header = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are both
        _fail("header is not valid JSON")
    if not isinstance(header, dict):
        _fail("header is not a JSON object")
    return header


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a token whose shape `unverified_header` accepts, NOT verified.

    Only to learn who claims to have signed it (a client assertion's `sub`), so that the
    caller can pick that client's keys and then `verify` the token with them.
    """
    unverified_header(token)
    raw = _b64decode(token.split(".")[1], "payload")
    try:
        claims = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError):
        _fail("payload is not valid JSON")
    if not isinstance(claims, dict):
        _fail("payload is not a JSON object")
    return claims


def _check_algorithms(algorithms: Sequence[str]) -> None:
    """A caller asking for `none`, HMAC or an `alg` we cannot tie to a key type is a bug."""
    if isinstance(algorithms, str) or not algorithms:
        raise ValueError("algorithms must be a non-empty sequence of names")
    for alg in algorithms:
        if alg.lower() == "none" or alg.upper().startswith("HS"):
            raise ValueError(f"{alg} is never accepted: only asymmetric signatures are verified")
        if alg not in _KEY_FAMILY:
            raise ValueError(f"{alg} is not supported here")


def _public_key(jwk: object, alg: str) -> jwt.PyJWK:
    """The verification key for `alg` from a JWK, refused unless public and of `alg`'s family.

    Checking the family ourselves, before PyJWT builds anything, is what makes a public key
    unusable as an HMAC secret and an RSA key unusable under an EC `alg`.
    """
    if not isinstance(jwk, Mapping):
        _fail("key is not a JSON object")
    if _PRIVATE_MEMBERS & set(jwk):
        _fail("key has private members")
    kty, crv = _KEY_FAMILY[alg]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        _fail("key type does not match alg")
    if "alg" in jwk and jwk["alg"] != alg:
        _fail("key is not for this alg")
    if "use" in jwk and jwk["use"] != "sig":
        _fail("key is not a signing key")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        _fail("key is not a verification key")
    try:
        key = jwt.PyJWK(dict(jwk), algorithm=alg)
    except (jwt.PyJWTError, ValueError, TypeError):
        # PyJWT's messages may quote the key: keep them out of the caller's reason.
        _fail("malformed key")
    if not isinstance(key.key, _PUBLIC_KEY_TYPES):
        _fail("key is not a public key")
    return key


def _decode(
    token: str,
    key: jwt.PyJWK,
    alg: str,
    *,
    required: Sequence[str],
    issuer: str | None = None,
    audience: str | Sequence[str] | None = None,
) -> dict[str, Any]:
    """Signature, required claims, `iss`, `aud` by PyJWT, pinned to the one `alg` we checked.

    PyJWT's own time checks are off (they read `time.time()`); `_check_times` does them.
    """
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[alg],
            issuer=issuer,
            audience=audience,
            options={
                "require": list(required),
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": audience is not None,
                "enforce_minimum_key_length": True,
            },
        )
    except jwt.InvalidSignatureError:
        _fail("signature verification failed")
    except jwt.MissingRequiredClaimError as error:
        _fail(f"missing claim {error.claim}")
    except jwt.InvalidAudienceError:
        _fail("wrong audience")
    except jwt.InvalidIssuerError:
        _fail("wrong issuer")
    except jwt.InvalidKeyError:
        _fail("key too weak")
    except jwt.exceptions.InvalidJTIError:
        _fail("jti must be a string")
    except jwt.PyJWTError:
        _fail("invalid token")
    if not isinstance(claims, dict):  # PyJWT already insists; this keeps mypy and us honest
        _fail("claims are not a JSON object")
    return claims


def _numeric_date(claims: Mapping[str, Any], name: str) -> int | float | None:
    """RFC 7519 NumericDate, or None when absent; `true`, strings and NaN are refused."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(f"{name} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        _fail(f"{name} is not a number")
    return value


def _check_times(claims: Mapping[str, Any], *, leeway: int, max_age: int | None) -> None:
    """`exp`, `nbf`, `iat` when present (and `iat` within `max_age`) against our clock."""
    now = utcnow().timestamp()
    exp = _numeric_date(claims, "exp")
    if exp is not None and exp <= now - leeway:
        _fail("token expired")
    nbf = _numeric_date(claims, "nbf")
    if nbf is not None and nbf > now + leeway:
        _fail("token not yet valid")
    iat = _numeric_date(claims, "iat")
    if iat is not None and iat > now + leeway:
        _fail("token issued in the future")
    if max_age is not None:
        if iat is None:
            _fail("missing claim iat")
        if iat < now - max_age:
            _fail("token too old")


def _media_type(value: str) -> str:
    """RFC 7515 §4.1.9: `typ` compares case-insensitively and may omit `application/`."""
    lowered = value.lower()
    return lowered.removeprefix("application/")


def verify(
    token: str,
    *,
    keys: Callable[[str], Mapping[str, Any] | None],
    algorithms: Sequence[str],
    typ: str | None,
    issuer: str | None = None,
    audience: str | Sequence[str] | None = None,
    required: Sequence[str] = ("exp", "iat"),
    leeway: int = 0,
    max_age: int | None = None,
) -> dict[str, Any]:
    """The claims of `token` once its signature, header and claims are all acceptable.

    `keys(kid)` returns a public JWK from our own store, or None; it is the only source of the
    key. `typ` None skips the type check (client assertions have none); otherwise it is
    explicit typing (RFC 8725 §3.11), so a token minted for another purpose is refused.
    `audience` None means `aud` is not checked; a sequence matches if any one is in `aud`.
    `max_age` bounds how old `iat` may be. Raises JoseError, or ValueError for a caller bug.
    """
    _check_algorithms(algorithms)
    header = unverified_header(token)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        _fail("alg not allowed")
    if "crit" in header:
        _fail("critical header extensions are not supported")
    if typ is not None:
        actual = header.get("typ")
        if not isinstance(actual, str):
            _fail("missing typ")
        if _media_type(actual) != _media_type(typ):
            _fail("wrong typ")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        _fail("missing kid")
    jwk = keys(kid)
    if jwk is None:
        _fail("unknown key")
    key = _public_key(jwk, alg)
    claims = _decode(token, key, alg, required=required, issuer=issuer, audience=audience)
    _check_times(claims, leeway=leeway, max_age=max_age)
    return claims


def _normalise_url(url: str) -> str | None:
    """Scheme and host lowercased, default port dropped, query and fragment dropped (RFC 9449
    §4.3 point 9); None for what is not an absolute http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None:
        return None
    if ":" in host:  # IPv6 literal: urlsplit took the brackets off
        host = f"[{host}]"
    authority = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return f"{scheme}://{authority}{parts.path or '/'}"


def verify_dpop_proof(
    proof: str,
    *,
    method: str,
    url: str,
    access_token: str | None = None,
    max_age: int = 60,
    leeway: int = 5,
) -> DpopProof:
    """Check a DPoP proof (RFC 9449 §4.3) for the request `method` (as sent, uppercase) `url`.

    The key is the header's `jwk`: a proof proves possession of that key, and the caller binds
    it by comparing `jkt` with the token's or the client's. With `access_token`, `ath` must be
    its hash. The caller still checks `jti` for replay and `nonce` against its own.
    """
    header = unverified_header(proof)
    if header.get("typ") != DPOP_TYP:
        _fail(f"typ must be {DPOP_TYP}")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in CLIENT_ALGORITHMS:
        _fail("alg not allowed")
    if "crit" in header:
        _fail("critical header extensions are not supported")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        _fail("missing jwk header")
    key = _public_key(jwk, alg)
    claims = _decode(proof, key, alg, required=("jti", "htm", "htu", "iat"))

    jti = claims["jti"]
    if not isinstance(jti, str) or not 1 <= len(jti) <= MAX_JTI_CHARS:
        _fail("jti must be a string of 1 to 128 characters")
    if claims["htm"] != method:
        _fail("htm does not match the request method")
    htu = claims["htu"]
    expected = _normalise_url(url)
    if not isinstance(htu, str) or expected is None or _normalise_url(htu) != expected:
        _fail("htu does not match the request URL")
    iat = claims["iat"]
    if isinstance(iat, bool) or not isinstance(iat, int):
        _fail("iat is not an integer")
    _check_times(claims, leeway=leeway, max_age=max_age)
    if access_token is not None:
        ath = claims.get("ath")
        if not isinstance(ath, str):
            _fail("missing claim ath")
        if ath != token_hash(access_token):  # a public value: no need for a constant-time compare
            _fail("ath does not match the access token")
    nonce = claims.get("nonce")
    if nonce is not None and not isinstance(nonce, str):
        _fail("nonce is not a string")
    return DpopProof(jkt=thumbprint(jwk), jti=jti, iat=iat, nonce=nonce)
