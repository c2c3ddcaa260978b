"""Authorization requests: pushed (RFC 9126), shown on the consent screen, decided by the
citizen; an approval records consents through consent/ and issues a one-minute code.

FAPI 2.0: confidential clients must push their request; PKCE S256 is required of every
client; the redirect URI must be one the client registered, compared as an exact string.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from audit import service as audit
from broker.models import (
    AuthMethod,
    AuthorizationCode,
    OAuthClient,
    Organisation,
    PushedRequest,
    Role,
)
from broker.service import scopes
from broker.service.credentials import find_client, hash_value
from charter.document import terms_hash
from common.clock import as_utc, utcnow
from common.errors import InvalidInputError
from consent import service as consents
from consent.models import Consent, Mode
from policies import service as policies

REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"
REQUEST_URI_TTL = timedelta(seconds=90)
CODE_TTL = timedelta(seconds=60)
MAX_PARAM = 2048
_PKCE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class AuthorizationError(InvalidInputError):
    """An RFC 6749 §4.1.2.1 error; `redirect` says whether it may go back to the client."""

    def __init__(self, error: str, detail: str, *, redirect: bool, **kw: Any) -> None:
        super().__init__(detail, **kw)
        self.error = error
        self.redirect = redirect


@dataclass(frozen=True)
class AuthorizationRequest:
    """A validated request, ready for the consent screen."""

    client: OAuthClient
    redirect_uri: str
    state: str | None
    scope: str
    code_challenge: str
    access: list[policies.DataAccess]
    resource: str | None
    dpop_jkt: str | None
    request_uri: str | None

    def error_redirect(self, error: str, issuer: str) -> str:
        return redirect_with(self.redirect_uri, error=error, state=self.state, iss=issuer)


def redirect_with(uri: str, **params: str | None) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{uri}{'&' if '?' in uri else '?'}{query}"


def validate(
    session: Session, params: dict[str, str], client: OAuthClient, *, audience: str
) -> AuthorizationRequest:
    """Check an authorization request's parameters for `client` (pushed or direct)."""
    for name, value in params.items():
        if len(value) > MAX_PARAM:
            raise AuthorizationError("invalid_request", f"{name} is too long.", redirect=False)
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in client.redirect_uris:  # exact string comparison, nothing else
        raise AuthorizationError(
            "invalid_request",
            "redirect_uri is not one this client registered.",
            redirect=False,
            fields={"redirect_uri": ["Must be exactly one of the registered redirect URIs."]},
        )
    if "authorization_code" not in client.grant_types:
        raise AuthorizationError(
            "unauthorized_client", "This client may not use the code flow.", redirect=False
        )
    if params.get("response_type") != "code":
        raise AuthorizationError(
            "unsupported_response_type", 'Only response_type "code" is supported.', redirect=True
        )
    if "request" in params:
        raise AuthorizationError(
            "request_not_supported", "Signed request objects are not supported.", redirect=True
        )
    method = params.get("code_challenge_method")
    challenge = params.get("code_challenge", "")
    if method != "S256" or not 43 <= len(challenge) <= 128 or set(challenge) - _PKCE_CHARS:
        raise AuthorizationError(
            "invalid_request",
            "PKCE is required: code_challenge (S256 of the verifier) and "
            'code_challenge_method "S256"; "plain" is refused.',
            redirect=True,
        )
    requested = scopes.parse(params.get("scope"))
    allowed = scopes.parse(client.scope) & scopes.allowed_for(client.organisation.role)
    if scopes.unknown(requested) or not requested <= allowed:
        raise AuthorizationError(
            "invalid_scope", "The client may not ask for this scope.", redirect=True
        )
    org = client.organisation
    try:
        raw = json.loads(params.get("authorization_details", "[]"))
        access = policies.check_data_access(
            session,
            raw,
            policies.Requester(slug=org.slug, name=org.name, reuser_category=org.reuser_category),
        )
    except json.JSONDecodeError:
        raise AuthorizationError(
            "invalid_authorization_details",
            "authorization_details is not valid JSON.",
            redirect=True,
        ) from None
    except InvalidInputError as exc:
        raise AuthorizationError(
            "invalid_authorization_details", exc.detail, redirect=True, fields=exc.fields
        ) from None
    resource = params.get("resource")
    if resource is not None and resource != audience and resource not in _holder_resources(session):
        raise AuthorizationError(
            "invalid_target", "resource is not an API this territory knows.", redirect=True
        )
    return AuthorizationRequest(
        client=client,
        redirect_uri=redirect_uri,
        state=params.get("state"),
        scope=" ".join(sorted(requested)),
        code_challenge=challenge,
        access=access,
        resource=resource,
        dpop_jkt=params.get("dpop_jkt"),
        request_uri=None,
    )


def _holder_resources(session: Session) -> set[str]:
    rows = session.scalars(
        select(Organisation.resource_uri).where(
            Organisation.role == Role.HOLDER, Organisation.resource_uri.is_not(None)
        )
    )
    return {r for r in rows if r}


def push(
    session: Session,
    client: OAuthClient,
    params: dict[str, str],
    *,
    audience: str,
    dpop_jkt: str | None,
) -> tuple[str, int]:
    """RFC 9126: validate now (errors go to the client, not the citizen) and keep it 90 s."""
    params = {k: v for k, v in params.items() if k not in ("client_assertion", "client_secret")}
    if "request_uri" in params:
        raise AuthorizationError("invalid_request", "request_uri cannot be pushed.", redirect=False)
    if dpop_jkt is not None:
        if params.get("dpop_jkt", dpop_jkt) != dpop_jkt:
            raise AuthorizationError(
                "invalid_dpop_proof", "dpop_jkt differs from the DPoP proof's key.", redirect=False
            )
        params["dpop_jkt"] = dpop_jkt
    validate(session, params, client, audience=audience)
    request_uri = REQUEST_URI_PREFIX + secrets.token_urlsafe(32)
    session.add(
        PushedRequest(
            uri_hash=hash_value(request_uri),
            client_pk=client.id,
            params=params,
            expires_at=utcnow() + REQUEST_URI_TTL,
            used_at=None,
        )
    )
    return request_uri, int(REQUEST_URI_TTL.total_seconds())


def load(session: Session, params: dict[str, str], *, audience: str) -> AuthorizationRequest:
    """The request behind /oauth/authorize's parameters: a pushed one (required of
    confidential clients), or, for a public client, the parameters themselves."""
    client = find_client(session, params.get("client_id", ""))
    if client is None:
        raise AuthorizationError("invalid_client", "Unknown client.", redirect=False)
    request_uri = params.get("request_uri")
    if request_uri is None:
        if client.auth_method is not AuthMethod.NONE:
            raise AuthorizationError(
                "invalid_request",
                "This client must push its authorization request first (PAR, RFC 9126).",
                redirect=False,
            )
        return validate(session, params, client, audience=audience)
    pushed = session.scalar(
        select(PushedRequest).where(PushedRequest.uri_hash == hash_value(request_uri))
    )
    if (
        pushed is None
        or pushed.client_pk != client.id
        or pushed.used_at is not None
        or as_utc(pushed.expires_at) <= utcnow()
    ):
        raise AuthorizationError(
            "invalid_request_uri",
            "This request_uri is unknown, used, expired, or another client's.",
            redirect=False,
        )
    checked = validate(session, dict(pushed.params), client, audience=audience)
    return AuthorizationRequest(**{**checked.__dict__, "request_uri": request_uri})


def _consume(session: Session, request: AuthorizationRequest) -> None:
    """Single use: the first decision on a pushed request wins, any other is refused."""
    if request.request_uri is None:
        return
    result = session.execute(
        update(PushedRequest)
        .where(
            PushedRequest.uri_hash == hash_value(request.request_uri),
            PushedRequest.used_at.is_(None),
        )
        .values(used_at=utcnow())
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise AuthorizationError(
            "invalid_request_uri", "This request was already decided.", redirect=False
        )


@dataclass(frozen=True)
class Prior:
    """What the citizen already consented to for one requested access, if anything."""

    access: policies.DataAccess
    existing: Consent | None

    @property
    def covered(self) -> bool:
        """The consent in force already covers this access: it is reused as it is."""
        if self.existing is None:
            return False
        categories = set(self.access.data_categories) <= set(self.existing.data_categories)
        datasets = not self.existing.datasets or (
            bool(self.access.datasets) and set(self.access.datasets) <= set(self.existing.datasets)
        )
        return categories and datasets


def priors(
    session: Session, request: AuthorizationRequest, *, subject_id: uuid.UUID
) -> list[Prior]:
    """For each requested access, the citizen's consent in force for the same purpose,
    recipient and mode (the consent screen says whether it is reused or widened)."""
    return [
        Prior(
            access,
            consents.find_in_force(
                session,
                subject_id=subject_id,
                purpose_id=access.purpose.id,
                recipient_id=access.recipient_id,
                mode=Mode(access.mode),
            ),
        )
        for access in request.access
    ]


def _consent_for(
    session: Session, prior: Prior, *, subject_id: uuid.UUID, language: str
) -> Consent:
    """Reuse a consent that covers the access; otherwise record one (replacing a narrower
    consent in force by one covering both, since only one may be in force at a time)."""
    if prior.covered:
        assert prior.existing is not None  # noqa: S101 (covered implies it)
        return prior.existing
    access = prior.access
    categories, datasets = access.data_categories, access.datasets
    if prior.existing is not None:
        old = prior.existing
        categories = tuple(dict.fromkeys([*old.data_categories, *categories]))
        datasets = (
            ()
            if not old.datasets or not datasets
            else tuple(dict.fromkeys([*old.datasets, *datasets]))
        )
        consents.withdraw(session, subject_id=subject_id, consent_id=old.id, method="oauth")
        session.flush()  # the old one leaves force before the wider one enters it
    return consents.give(
        session,
        consents.GiveConsent(
            subject_id=subject_id,
            purpose_id=access.purpose.id,
            terms_hash=terms_hash(access.purpose),
            recipient_id=access.recipient_id,
            language=language,
            mode=Mode(access.mode),
            data_categories=categories,
            datasets=datasets,
            method="oauth",
        ),
    )


def approve(
    session: Session,
    request: AuthorizationRequest,
    *,
    subject_id: uuid.UUID,
    language: str,
    issuer: str,
) -> str:
    """Record (or reuse) a consent per detail with method `oauth`; return the redirect."""
    _consume(session, request)
    consent_ids = [
        str(_consent_for(session, prior, subject_id=subject_id, language=language).id)
        for prior in priors(session, request, subject_id=subject_id)
    ]
    code = secrets.token_urlsafe(32)
    session.add(
        AuthorizationCode(
            code_hash=hash_value(code),
            client_pk=request.client.id,
            subject_id=subject_id,
            redirect_uri=request.redirect_uri,
            scope=request.scope,
            code_challenge=request.code_challenge,
            authorization_details=[a.as_detail() for a in request.access],
            consent_ids=consent_ids,
            resource=request.resource,
            dpop_jkt=request.dpop_jkt,
            expires_at=utcnow() + CODE_TTL,
            used_at=None,
        )
    )
    audit.append(
        session,
        event="oauth:authorization:approve",
        actor=f"client:{request.client.client_id}",
        subject_id=subject_id,
        purpose=",".join(a.purpose.id for a in request.access)[:64],
        decision="permit",
        detail={"consent_ids": consent_ids, "scope": request.scope},
    )
    return redirect_with(request.redirect_uri, code=code, state=request.state, iss=issuer)


def deny(
    session: Session, request: AuthorizationRequest, *, subject_id: uuid.UUID, issuer: str
) -> str:
    """The citizen said no: nothing is recorded but the refusal itself."""
    _consume(session, request)
    audit.append(
        session,
        event="oauth:authorization:deny",
        actor=f"client:{request.client.client_id}",
        subject_id=subject_id,
        decision="deny",
        reason="citizen refused",
    )
    return request.error_redirect("access_denied", issuer)


def refuse(session: Session, *, client_id: str | None, error: str, detail: str) -> None:
    """Audit a refused authorization request (in its own small transaction, by the caller)."""
    audit.append(
        session,
        event="oauth:authorization:refuse",
        actor=f"client:{client_id or 'unknown'}",
        decision="deny",
        reason=error,
        detail={"detail": detail[:200]},
    )
