"""Where Tiers is the resource server: check an access token (and its DPoP proof).

A JWT that verifies is not enough: the token row must exist and the grant, the client and
every consent behind it must still be in force *now* (withdrawal takes effect at commit).
DPoP proofs (RFC 9449) are checked for method, URL, age, key, `ath`, single use and the
server's nonce; nonces are stateless (an HMAC of the current 5-minute window).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from sqlalchemy.orm import Session

from broker.service import scopes, tokens
from broker.service.credentials import hash_value, remember_jti
from common import jose
from common.auth import AccessRequest, TokenIdentity
from common.clock import utcnow
from common.errors import InvalidTokenError, UnauthorizedError
from common.keyring import Keyring

NONCE_WINDOW = 300
PROOF_MAX_AGE = 60


@dataclass(frozen=True)
class Nonces:
    """Server-issued DPoP nonces, valid for the current and the previous window."""

    key: bytes
    required: bool = True

    def _for(self, window: int) -> str:
        return hmac.new(self.key, str(window).encode(), "sha256").hexdigest()[:32]

    def current(self) -> str:
        return self._for(int(utcnow().timestamp()) // NONCE_WINDOW)

    def accepts(self, nonce: str | None) -> bool:
        if not self.required:
            return True
        if not nonce:
            return False
        window = int(utcnow().timestamp()) // NONCE_WINDOW
        return any(hmac.compare_digest(nonce, self._for(w)) for w in (window, window - 1))


class DpopError(UnauthorizedError):
    """A DPoP proof that must be refused; `use_nonce` asks the client to retry with one."""

    code = "invalid-dpop-proof"

    def __init__(self, detail: str, *, use_nonce: bool = False) -> None:
        super().__init__(detail)
        self.use_nonce = use_nonce


def check_proof(
    session: Session,
    proof: str | None,
    *,
    method: str,
    url: str,
    nonces: Nonces,
    access_token: str | None = None,
) -> str:
    """Verify a DPoP proof and record its `jti`; returns the key's thumbprint (`jkt`)."""
    if not proof:
        raise DpopError("A DPoP proof is required.")
    try:
        checked = jose.verify_dpop_proof(
            proof, method=method, url=url, access_token=access_token, max_age=PROOF_MAX_AGE
        )
    except jose.JoseError as exc:
        raise DpopError(f"The DPoP proof is not valid: {exc}") from None
    if not nonces.accepts(checked.nonce):
        raise DpopError("Use the server's DPoP nonce.", use_nonce=True)
    remember_jti(
        session, issuer=f"dpop:{checked.jkt}", jti=checked.jti, ttl_seconds=2 * PROOF_MAX_AGE
    )
    return checked.jkt


def _invalid(detail: str, scheme: str, nonce: str | None = None) -> InvalidTokenError:
    error = "use_dpop_nonce" if nonce else "invalid_token"
    challenge = (
        f'DPoP error="{error}", algs="ES256 PS256 EdDSA"'
        if scheme == "dpop"
        else f'Bearer error="{error}"'
    )
    return InvalidTokenError(detail, challenge=challenge, nonce=nonce)


def check_access(
    session: Session,
    access: AccessRequest,
    *,
    keyring: Keyring,
    issuer: str,
    audience: str,
    nonces: Nonces,
) -> TokenIdentity:
    """The identity behind a request to Tiers' own API, or InvalidTokenError (401)."""
    try:
        claims = jose.verify(
            access.token,
            keys=keyring.public_jwk,
            algorithms=jose.ACCESS_TOKEN_ALGORITHMS,
            typ="at+jwt",
            issuer=issuer,
            audience=audience,
            required=("iss", "sub", "aud", "exp", "iat", "jti", "client_id"),
        )
    except jose.JoseError as exc:
        raise _invalid(f"The access token is not valid: {exc}", access.scheme) from None
    token = tokens.view_by_jti(session, str(claims["jti"]))
    if token is None or token.token_hash != hash_value(access.token):
        raise _invalid("The access token is not known here.", access.scheme)
    judged = tokens.state(session, token)
    if not judged.active:
        raise _invalid(f"The access token is no longer active ({judged.reason}).", access.scheme)
    _check_binding(session, access, token.dpop_jkt, nonces)
    return TokenIdentity(
        client_id=token.client_id,
        organisation_id=token.organisation_id,
        organisation_slug=token.organisation_slug,
        role=token.organisation_role.value,
        scopes=scopes.parse(token.scope),
        grant_id=token.grant_id,
        subject_id=token.subject_id,
        consent_ids=tuple(token.consent_ids),
        recipients=tuple(
            r for r in (token.organisation_slug, token.organisation_category) if r is not None
        ),
    )


def _check_binding(
    session: Session, access: AccessRequest, dpop_jkt: str | None, nonces: Nonces
) -> None:
    if dpop_jkt is None:
        if access.scheme != "bearer":
            raise _invalid("This token is a Bearer token.", access.scheme)
        return
    if access.scheme != "dpop":
        raise _invalid("This token is bound to a DPoP key: send it as `DPoP`.", "dpop")
    try:
        jkt = check_proof(
            session,
            access.dpop_proof,
            method=access.method,
            url=access.url,
            nonces=nonces,
            access_token=access.token,
        )
    except DpopError as exc:
        raise _invalid(exc.detail, "dpop", nonces.current() if exc.use_nonce else None) from None
    except UnauthorizedError as exc:  # replayed proof
        raise _invalid(exc.detail, "dpop") from None
    if jkt != dpop_jkt:
        raise _invalid("The DPoP proof is signed by another key than the token's.", "dpop")
