"""common.jose: every way a JWS must be refused, and the few ways it must be accepted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, get_default_algorithms

from common import jose
from common.clock import frozen
from common.jose import JoseError

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
ISSUER = "https://tiers.test"
AUDIENCE = "https://api.tiers.test"

EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()
ATTACKER_KEY = ec.generate_private_key(ec.SECP256R1())


def public_jwk(private_key: Any) -> dict[str, Any]:
    public = private_key.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        return ECAlgorithm.to_jwk(public, as_dict=True)
    if isinstance(public, rsa.RSAPublicKey):
        return RSAAlgorithm.to_jwk(public, as_dict=True)
    return OKPAlgorithm.to_jwk(public, as_dict=True)


STORE = {
    "ours": public_jwk(EC_KEY),
    "client-ps": public_jwk(RSA_KEY),
    "client-ed": public_jwk(ED_KEY),
}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value).encode())


def compact(header: Mapping[str, Any], claims: Mapping[str, Any], private_key: Any) -> str:
    """A compact JWS signed exactly as told (PyJWT's encode would add or check things)."""
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    algorithm = get_default_algorithms()[header["alg"]]
    signature = algorithm.sign(signing_input.encode(), private_key)
    return f"{signing_input}.{b64(signature)}"


def access_claims(**overrides: Any) -> dict[str, Any]:
    claims = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": AUDIENCE,
        "iat": T,
        "exp": T + 300,
        "jti": "token-1",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def access_token(
    claims: Mapping[str, Any] | None = None, private_key: Any = EC_KEY, **header: Any
) -> str:
    full_header = {"alg": "ES256", "typ": "at+jwt", "kid": "ours", **header}
    full_header = {k: v for k, v in full_header.items() if v is not None}
    return compact(full_header, access_claims() if claims is None else claims, private_key)


def verify_access(
    token: str, keys: Callable[[str], Any] = STORE.get, **options: Any
) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "keys": keys,
        "algorithms": jose.ACCESS_TOKEN_ALGORITHMS,
        "typ": "at+jwt",
        "issuer": ISSUER,
        "audience": AUDIENCE,
    }
    arguments.update(options)
    return jose.verify(token, **arguments)


@pytest.fixture(autouse=True)
def clock() -> Iterator[Callable[[datetime], None]]:
    with frozen(NOW) as move_to:
        yield move_to


# --- verify: what is accepted ---------------------------------------------------------------


def test_valid_es256_access_token_verifies() -> None:
    assert verify_access(access_token()) == access_claims()


@pytest.mark.parametrize(
    ("kid", "alg", "private_key"),
    [("client-ps", "PS256", RSA_KEY), ("client-ed", "EdDSA", ED_KEY)],
)
def test_client_assertion_algorithms_verify(kid: str, alg: str, private_key: Any) -> None:
    claims = access_claims(iss="client-1", sub="client-1", aud=f"{ISSUER}/token")
    token = compact({"alg": alg, "kid": kid}, claims, private_key)

    assert (
        jose.verify(
            token,
            keys=STORE.get,
            algorithms=jose.CLIENT_ALGORITHMS,
            typ=None,
            issuer="client-1",
            audience=f"{ISSUER}/token",
        )
        == claims
    )


@pytest.mark.parametrize("typ", ["application/at+jwt", "AT+JWT", "Application/At+Jwt"])
def test_typ_compares_case_insensitively_with_application_prefix(typ: str) -> None:
    assert verify_access(access_token(typ=typ))["sub"] == "alice"


def test_audience_none_does_not_check_aud() -> None:
    token = access_token(access_claims(aud="https://elsewhere.test"))

    assert verify_access(token, audience=None)["aud"] == "https://elsewhere.test"


def test_audience_sequence_matches_any() -> None:
    assert (
        verify_access(access_token(), audience=["https://other.test", AUDIENCE])["sub"] == "alice"
    )


def test_keys_is_asked_for_the_header_kid_only() -> None:
    asked: list[str] = []

    def keys(kid: str) -> Mapping[str, Any] | None:
        asked.append(kid)
        return STORE.get(kid)

    verify_access(access_token(), keys=keys)

    assert asked == ["ours"]


# --- verify: algorithm attacks ----------------------------------------------------------------


def test_alg_none_with_empty_signature_is_refused() -> None:
    token = (
        f"{b64json({'alg': 'none', 'typ': 'at+jwt', 'kid': 'ours'})}.{b64json(access_claims())}."
    )

    with pytest.raises(JoseError, match="three non-empty segments"):
        verify_access(token)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_with_forged_signature_is_refused(alg: str) -> None:
    header = {"alg": alg, "typ": "at+jwt", "kid": "ours"}
    token = f"{b64json(header)}.{b64json(access_claims())}.{b64(b'forged')}"

    with pytest.raises(JoseError, match="alg not allowed"):
        verify_access(token)


@pytest.mark.parametrize("algorithms", [jose.ACCESS_TOKEN_ALGORITHMS, jose.CLIENT_ALGORITHMS])
@pytest.mark.parametrize(
    "secret",
    [
        EC_KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        json.dumps(STORE["ours"]).encode(),
    ],
    ids=["pem", "jwk-json"],
)
def test_hs256_signed_with_the_public_key_as_secret_is_refused(
    algorithms: tuple[str, ...], secret: bytes
) -> None:
    # The algorithm-confusion attack (CVE-2024-37568 and its elders): the public key is public,
    # so anyone can compute an HMAC with it.
    signing_input = (
        f"{b64json({'alg': 'HS256', 'typ': 'at+jwt', 'kid': 'ours'})}.{b64json(access_claims())}"
    )
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()

    with pytest.raises(JoseError, match="alg not allowed"):
        verify_access(f"{signing_input}.{b64(mac)}", algorithms=algorithms)


@pytest.mark.parametrize(
    ("algorithms", "reason"),
    [
        (("HS256",), "HS256 is never accepted"),
        (("ES256", "hs512"), "hs512 is never accepted"),
        (("none",), "none is never accepted"),
        (("ES256", "None"), "None is never accepted"),
        ((), "non-empty sequence"),
        ("ES256", "non-empty sequence"),
        (("RS1",), "RS1 is not supported"),
    ],
)
def test_unsafe_or_unknown_algorithms_are_a_programming_error(algorithms: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        verify_access(access_token(), algorithms=algorithms)


def test_es256_header_with_an_rsa_key_in_the_store_is_refused() -> None:
    with pytest.raises(JoseError, match="key type does not match alg"):
        verify_access(access_token(), keys={"ours": STORE["client-ps"]}.get)


def test_es256_header_with_a_p384_key_in_the_store_is_refused() -> None:
    p384 = public_jwk(ec.generate_private_key(ec.SECP384R1()))

    with pytest.raises(JoseError, match="key type does not match alg"):
        verify_access(access_token(), keys={"ours": p384}.get)


def test_store_key_bound_to_another_alg_is_refused() -> None:
    with pytest.raises(JoseError, match="key is not for this alg"):
        verify_access(access_token(), keys={"ours": {**STORE["ours"], "alg": "ES384"}}.get)


def test_short_rsa_key_is_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (the point)
    token = compact({"alg": "PS256", "kid": "weak"}, access_claims(), weak)

    with pytest.raises(JoseError, match="key too weak"):
        jose.verify(
            token, keys={"weak": public_jwk(weak)}.get, algorithms=jose.CLIENT_ALGORITHMS, typ=None
        )


# --- verify: the key comes from our store only ------------------------------------------------


def test_attacker_key_in_header_with_unknown_kid_is_refused() -> None:
    asked: list[str] = []

    def keys(kid: str) -> Mapping[str, Any] | None:
        asked.append(kid)
        return STORE.get(kid)

    token = access_token(
        private_key=ATTACKER_KEY,
        kid="attacker",
        jwk=public_jwk(ATTACKER_KEY),
        jku="https://evil.test/jwks.json",
        x5u="https://evil.test/cert.pem",
        x5c=["MIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBCwUAMA0xCzAJBgNVBAYTAkZS"],
    )

    with pytest.raises(JoseError, match="unknown key"):
        verify_access(token, keys=keys)
    assert asked == ["attacker"]


def test_attacker_key_in_header_with_our_kid_is_refused() -> None:
    token = access_token(
        private_key=ATTACKER_KEY,
        jwk=public_jwk(ATTACKER_KEY),
        jku="https://evil.test/jwks.json",
        x5u="https://evil.test/cert.pem",
    )

    with pytest.raises(JoseError, match="signature verification failed"):
        verify_access(token)


def test_unknown_kid_is_refused() -> None:
    with pytest.raises(JoseError, match="unknown key"):
        verify_access(access_token(kid="retired-long-ago"))


@pytest.mark.parametrize("kid", [None, "", 42])
def test_missing_or_malformed_kid_is_refused(kid: Any) -> None:
    header = {"alg": "ES256", "typ": "at+jwt"} | ({} if kid is None else {"kid": kid})

    with pytest.raises(JoseError, match="missing kid"):
        verify_access(compact(header, access_claims(), EC_KEY))


@pytest.mark.parametrize(
    "jwk",
    [
        ECAlgorithm.to_jwk(EC_KEY, as_dict=True),
        {"kty": "oct", "k": b64(b"a shared secret of 32 bytes !!!!")},
    ],
    ids=["ec-private", "oct"],
)
def test_private_key_in_the_store_is_refused(jwk: dict[str, Any]) -> None:
    with pytest.raises(JoseError, match="key has private members"):
        verify_access(access_token(), keys={"ours": jwk}.get)


# --- verify: header rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"crit": ["exp"]},
        {"crit": ["b64"], "b64": False},
        {"crit": ["https://ext.test/x"], "https://ext.test/x": 1},
    ],
    ids=["registered-name", "b64", "private"],
)
def test_crit_is_refused_whatever_it_lists(extra: dict[str, Any]) -> None:
    with pytest.raises(JoseError, match="critical header extensions are not supported"):
        verify_access(access_token(**extra))


def test_id_token_like_jwt_without_typ_is_refused() -> None:
    with pytest.raises(JoseError, match="missing typ"):
        verify_access(access_token(typ=None))


@pytest.mark.parametrize("typ", ["JWT", "dpop+jwt", "application/jwt", "text/at+jwt"])
def test_wrong_typ_is_refused(typ: str) -> None:
    with pytest.raises(JoseError, match="wrong typ"):
        verify_access(access_token(typ=typ))


def test_oversize_token_is_refused_before_any_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    token = access_token(access_claims(padding="x" * 50_000))
    assert len(token) > 50_000

    def must_not_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("decoded an oversize token")

    with monkeypatch.context() as patch:
        patch.setattr(base64, "urlsafe_b64decode", must_not_run)
        patch.setattr(json, "loads", must_not_run)
        with pytest.raises(JoseError, match="token too large"):
            verify_access(token)


def test_oversize_header_is_refused() -> None:
    token = access_token(padding="x" * (jose.MAX_HEADER_BYTES + 10))
    assert len(token) <= jose.MAX_TOKEN_BYTES

    with pytest.raises(JoseError, match="header too large"):
        verify_access(token)


@pytest.mark.parametrize(
    "token",
    [
        "a.b",
        "a.b.c.d",
        ".b.c",
        "a..c",
    ],
)
def test_wrong_number_of_segments_is_refused(token: str) -> None:
    with pytest.raises(JoseError, match="three non-empty segments"):
        verify_access(token)


def test_non_string_and_non_ascii_tokens_are_refused() -> None:
    with pytest.raises(JoseError, match="not a string"):
        verify_access(access_token().encode())  # type: ignore[arg-type]
    with pytest.raises(JoseError, match="not ASCII"):
        verify_access(access_token() + "é")


def test_padded_header_segment_is_refused() -> None:
    header, payload, signature = access_token().split(".")
    padded = header + "=" * (-len(header) % 4 or 4)

    with pytest.raises(JoseError, match="malformed header"):
        verify_access(f"{padded}.{payload}.{signature}")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"alg":"none","alg":"ES256","typ":"at+jwt","kid":"ours"}', "duplicate header member"),
        (b"[1, 2]", "header is not a JSON object"),
        (b"{", "header is not valid JSON"),
        (b'{"alg": NaN}', "header is not valid JSON"),
        (b"\xff{}", "header is not valid JSON"),
    ],
    ids=["duplicate", "array", "truncated", "nan", "not-utf8"],
)
def test_malformed_header_json_is_refused(raw: bytes, reason: str) -> None:
    _, payload, signature = access_token().split(".")

    with pytest.raises(JoseError, match=reason):
        verify_access(f"{b64(raw)}.{payload}.{signature}")


def test_unverified_header_returns_the_parsed_header() -> None:
    assert jose.unverified_header(access_token()) == {
        "alg": "ES256",
        "typ": "at+jwt",
        "kid": "ours",
    }


# --- verify: claims ---------------------------------------------------------------------------


def test_tampered_claims_fail_the_signature() -> None:
    header, _, signature = access_token().split(".")
    forged = b64json(access_claims(sub="mallory"))

    with pytest.raises(JoseError, match="signature verification failed"):
        verify_access(f"{header}.{forged}.{signature}")


def test_wrong_audience_is_refused() -> None:
    with pytest.raises(JoseError, match="wrong audience"):
        verify_access(access_token(access_claims(aud="https://other-api.test")))


def test_wrong_issuer_is_refused() -> None:
    with pytest.raises(JoseError, match="wrong issuer"):
        verify_access(access_token(access_claims(iss="https://evil.test")))


@pytest.mark.parametrize("claim", ["exp", "iat"])
def test_missing_required_claim_is_refused(claim: str) -> None:
    with pytest.raises(JoseError, match=f"missing claim {claim}"):
        verify_access(access_token(access_claims(**{claim: None})))


def test_expired_token_is_refused(clock: Callable[[datetime], None]) -> None:
    token = access_token()
    clock(NOW + timedelta(seconds=299))
    assert verify_access(token)["sub"] == "alice"

    clock(NOW + timedelta(seconds=300))
    with pytest.raises(JoseError, match="token expired"):
        verify_access(token)
    assert verify_access(token, leeway=5)["sub"] == "alice"


def test_nbf_in_the_future_is_refused() -> None:
    with pytest.raises(JoseError, match="token not yet valid"):
        verify_access(access_token(access_claims(nbf=T + 60)))


def test_iat_in_the_future_is_refused_beyond_leeway() -> None:
    token = access_token(access_claims(iat=T + 30))

    with pytest.raises(JoseError, match="issued in the future"):
        verify_access(token)
    assert verify_access(token, leeway=30)["sub"] == "alice"


def test_max_age_bounds_iat() -> None:
    token = access_token(access_claims(iat=T - 120))

    assert verify_access(token, max_age=120)["sub"] == "alice"
    with pytest.raises(JoseError, match="token too old"):
        verify_access(token, max_age=119)


@pytest.mark.parametrize("exp", ["9999999999", True, 1e400], ids=["string", "bool", "infinity"])
def test_non_numeric_times_are_refused(exp: Any) -> None:
    # PyJWT's own check would take int("9999999999"); ours reads NumericDate strictly.
    claims = access_claims()
    claims["exp"] = exp

    with pytest.raises(JoseError, match="exp is not a number"):
        verify_access(access_token(claims))


# --- thumbprint and token_hash ----------------------------------------------------------------


RFC7638_KEY = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}


def test_thumbprint_matches_rfc7638_example() -> None:
    assert jose.thumbprint(RFC7638_KEY) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_thumbprint_ignores_optional_members() -> None:
    assert jose.thumbprint({**STORE["ours"], "kid": "x", "use": "sig"}) == jose.thumbprint(
        STORE["ours"]
    )


@pytest.mark.parametrize(
    ("jwk", "reason"),
    [
        ({"kty": "oct", "k": "c2VjcmV0"}, "unsupported key type"),
        ({}, "unsupported key type"),
        ({"kty": "EC", "crv": "P-256", "x": "abc"}, "missing a required member"),
        ({"kty": "RSA", "n": "abc", "e": 65537}, "missing a required member"),
    ],
)
def test_thumbprint_refuses_unsupported_or_incomplete_keys(
    jwk: dict[str, Any], reason: str
) -> None:
    with pytest.raises(JoseError, match=reason):
        jose.thumbprint(jwk)


def test_token_hash_matches_rfc9449_example() -> None:
    assert jose.token_hash(RFC9449_ACCESS_TOKEN) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


# --- DPoP -------------------------------------------------------------------------------------

# RFC 9449 figure 2 (token request) and figure 13 (resource request, with ath), and the jkt of
# their key (§6.1).
RFC9449_TOKEN_PROOF = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19"
    ".eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ"
    ".2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg"
)
RFC9449_RESOURCE_PROOF = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19"
    ".eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9"
    ".2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA"
)
RFC9449_ACCESS_TOKEN = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
RFC9449_JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"

TOKEN_URL = "https://tiers.test/oauth/token"
DPOP_ACCESS_TOKEN = "an-opaque-access-token"


def alg_for(private_key: Any) -> str:
    if isinstance(private_key, rsa.RSAPrivateKey):
        return "PS256"
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    return "ES256"


def proof(
    private_key: Any = EC_KEY,
    *,
    jwk: Mapping[str, Any] | None = None,
    header: Mapping[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A DPoP proof for POST TOKEN_URL now; a None in `header` or `claims` drops that member."""
    alg = alg_for(private_key)
    full_header = {
        "typ": "dpop+jwt",
        "alg": alg,
        "jwk": public_jwk(private_key) if jwk is None else jwk,
    }
    full_header.update(header or {})
    full_claims = {"jti": "proof-1", "htm": "POST", "htu": TOKEN_URL, "iat": T, **claims}
    full_claims = {k: v for k, v in full_claims.items() if v is not None}
    return compact(
        {k: v for k, v in full_header.items() if v is not None}, full_claims, private_key
    )


def verify_proof(value: str, **options: Any) -> jose.DpopProof:
    arguments: dict[str, Any] = {"method": "POST", "url": TOKEN_URL, **options}
    return jose.verify_dpop_proof(value, **arguments)


@pytest.mark.parametrize("private_key", [EC_KEY, RSA_KEY, ED_KEY], ids=["ES256", "PS256", "EdDSA"])
def test_valid_dpop_proof_verifies(private_key: Any) -> None:
    result = verify_proof(proof(private_key))

    assert result == jose.DpopProof(
        jkt=jose.thumbprint(public_jwk(private_key)), jti="proof-1", iat=T, nonce=None
    )


def test_dpop_proof_returns_nonce_and_checks_ath() -> None:
    value = proof(nonce="server-nonce", ath=jose.token_hash(DPOP_ACCESS_TOKEN))

    result = verify_proof(value, access_token=DPOP_ACCESS_TOKEN)

    assert result.nonce == "server-nonce"


def test_rfc9449_example_proofs_verify(clock: Callable[[datetime], None]) -> None:
    clock(datetime.fromtimestamp(1562262620, UTC))

    token_proof = jose.verify_dpop_proof(
        RFC9449_TOKEN_PROOF, method="POST", url="https://server.example.com/token"
    )
    resource_proof = jose.verify_dpop_proof(
        RFC9449_RESOURCE_PROOF,
        method="GET",
        url="https://resource.example.org/protectedresource",
        access_token=RFC9449_ACCESS_TOKEN,
    )

    assert (token_proof.jkt, token_proof.jti, token_proof.iat) == (
        RFC9449_JKT,
        "-BwC3ESc6acc2lTc",
        1562262616,
    )
    assert (resource_proof.jkt, resource_proof.jti) == (RFC9449_JKT, "e1j3V_bKic8-LAEB")


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", None])
def test_dpop_wrong_typ_is_refused(typ: str | None) -> None:
    with pytest.raises(JoseError, match="typ must be dpop\\+jwt"):
        verify_proof(proof(header={"typ": typ}))


def test_dpop_htm_mismatch_is_refused() -> None:
    with pytest.raises(JoseError, match="htm does not match"):
        verify_proof(proof(htm="GET"))


@pytest.mark.parametrize(
    "htu",
    [
        "https://tiers.test/oauth/revoke",
        "https://evil.test/oauth/token",
        "http://tiers.test/oauth/token",
        "https://tiers.test:8443/oauth/token",
        "https://tiers.test/OAUTH/token",
        "https://user@tiers.test/oauth/token",
        "not a url",
    ],
)
def test_dpop_htu_for_another_url_is_refused(htu: str) -> None:
    with pytest.raises(JoseError, match="htu does not match"):
        verify_proof(proof(htu=htu))


@pytest.mark.parametrize(
    ("htu", "url"),
    [
        (TOKEN_URL, f"{TOKEN_URL}?client_id=abc"),
        (TOKEN_URL, f"{TOKEN_URL}#fragment"),
        (f"{TOKEN_URL}?x=1", TOKEN_URL),
        ("HTTPS://Tiers.TEST:443/oauth/token", TOKEN_URL),
        ("http://tiers.test:80/oauth/token", "http://tiers.test/oauth/token"),
        ("https://[::1]:8443/token", "https://[::1]:8443/token?x"),
    ],
)
def test_dpop_htu_normalises_equal(htu: str, url: str) -> None:
    assert verify_proof(proof(htu=htu), url=url).jti == "proof-1"


@pytest.mark.parametrize(
    ("iat", "reason"),
    [
        (T - 600, "token too old"),
        (T + 60, "issued in the future"),
        (T + 2.0, "iat is not an integer"),
    ],
)
def test_dpop_iat_out_of_window_is_refused(iat: Any, reason: str) -> None:
    with pytest.raises(JoseError, match=reason):
        verify_proof(proof(iat=iat))


@pytest.mark.parametrize("iat", [T - 60, T + 5])
def test_dpop_iat_at_the_window_edges_is_accepted(iat: int) -> None:
    assert verify_proof(proof(iat=iat)).iat == iat


def test_dpop_missing_ath_with_an_access_token_is_refused() -> None:
    with pytest.raises(JoseError, match="missing claim ath"):
        verify_proof(proof(), access_token=DPOP_ACCESS_TOKEN)


def test_dpop_wrong_ath_is_refused() -> None:
    value = proof(ath=jose.token_hash("another-access-token"))

    with pytest.raises(JoseError, match="ath does not match"):
        verify_proof(value, access_token=DPOP_ACCESS_TOKEN)


def test_dpop_ath_without_an_access_token_is_accepted() -> None:
    assert verify_proof(proof(ath=jose.token_hash(DPOP_ACCESS_TOKEN))).jti == "proof-1"


def test_dpop_header_jwk_with_private_member_is_refused() -> None:
    with pytest.raises(JoseError, match="key has private members"):
        verify_proof(proof(jwk=ECAlgorithm.to_jwk(EC_KEY, as_dict=True)))


def test_dpop_signed_by_another_key_than_the_header_jwk_is_refused() -> None:
    with pytest.raises(JoseError, match="signature verification failed"):
        verify_proof(proof(ATTACKER_KEY, jwk=public_jwk(EC_KEY)))


def test_dpop_hs256_is_refused() -> None:
    secret = b"a shared secret of 32 bytes !!!!"
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": b64(secret)}}
    signing_input = (
        f"{b64json(header)}.{b64json({'jti': 'x', 'htm': 'POST', 'htu': TOKEN_URL, 'iat': T})}"
    )
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()

    with pytest.raises(JoseError, match="alg not allowed"):
        verify_proof(f"{signing_input}.{b64(mac)}")


def test_dpop_key_of_the_wrong_family_is_refused() -> None:
    with pytest.raises(JoseError, match="key type does not match alg"):
        verify_proof(proof(RSA_KEY, jwk=public_jwk(EC_KEY)))


def test_dpop_without_jwk_is_refused() -> None:
    with pytest.raises(JoseError, match="missing jwk header"):
        verify_proof(proof(header={"jwk": None}))


def test_dpop_crit_is_refused() -> None:
    with pytest.raises(JoseError, match="critical header extensions"):
        verify_proof(proof(header={"crit": ["exp"]}))


@pytest.mark.parametrize("claim", ["jti", "htm", "htu", "iat"])
def test_dpop_missing_claim_is_refused(claim: str) -> None:
    with pytest.raises(JoseError, match=f"missing claim {claim}"):
        verify_proof(proof(**{claim: None}))


@pytest.mark.parametrize("jti", ["", "x" * 129, 7])
def test_dpop_bad_jti_is_refused(jti: Any) -> None:
    with pytest.raises(JoseError, match="jti must be a string"):
        verify_proof(proof(jti=jti))


def test_dpop_non_string_nonce_is_refused() -> None:
    with pytest.raises(JoseError, match="nonce is not a string"):
        verify_proof(proof(nonce=42))


def test_dpop_oversize_proof_is_refused() -> None:
    with pytest.raises(JoseError, match="token too large"):
        verify_proof(proof(padding="x" * jose.MAX_TOKEN_BYTES))


# --- odd corners --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ({"use": "enc"}, "key is not a signing key"),
        ({"key_ops": ["encrypt"]}, "key is not a verification key"),
        ({"y": STORE["ours"]["x"]}, "malformed key"),  # not a point on P-256: invalid-curve attack
        ({"x": "!!"}, "malformed key"),
    ],
    ids=["use-enc", "key-ops", "off-curve", "bad-base64"],
)
def test_unusable_store_key_is_refused(member: dict[str, Any], reason: str) -> None:
    with pytest.raises(JoseError, match=reason):
        verify_access(access_token(), keys={"ours": {**STORE["ours"], **member}}.get)


def test_store_returning_a_non_object_is_refused() -> None:
    with pytest.raises(JoseError, match="key is not a JSON object"):
        verify_access(access_token(), keys=lambda kid: "not a jwk")


def test_non_canonical_base64_is_refused() -> None:
    # Flipping a spare bit changes the text but not the bytes: two spellings of one header.
    header = b64(b'{"alg": "ES256"}')  # 16 bytes: 22 characters, the last holding 4 spare bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    tweaked = header[:-1] + alphabet[alphabet.index(header[-1]) ^ 1]
    assert tweaked != header
    assert base64.urlsafe_b64decode(tweaked + "==") == base64.urlsafe_b64decode(header + "==")
    _, payload, signature = access_token().split(".")

    with pytest.raises(JoseError, match="malformed header"):
        verify_access(f"{tweaked}.{payload}.{signature}")


def test_payload_that_is_not_json_is_refused() -> None:
    header = {"alg": "ES256", "typ": "at+jwt", "kid": "ours"}
    signing_input = f"{b64json(header)}.{b64(b'not json')}"
    algorithm = get_default_algorithms()["ES256"]
    token = f"{signing_input}.{b64(algorithm.sign(signing_input.encode(), EC_KEY))}"

    with pytest.raises(JoseError, match="invalid token"):
        verify_access(token)


def test_max_age_without_iat_is_refused() -> None:
    token = access_token(access_claims(iat=None))

    with pytest.raises(JoseError, match="missing claim iat"):
        verify_access(token, required=("exp",), max_age=60)
