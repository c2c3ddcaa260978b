"""The OAuth2 authorization server's HTTP layer: Authlib dispatches the token endpoint and
authenticates clients; every decision is taken by broker/service/*.

Endpoints (shared/DESIGN.md "Public contract"): /oauth/par (RFC 9126), /oauth/authorize
(the citizen's consent screen), /oauth/token, /oauth/introspect (RFC 7662), /oauth/revoke
(RFC 7009), /.well-known/oauth-authorization-server (RFC 8414).
"""

from __future__ import annotations

from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, InvalidClientError
from authlib.oauth2.rfc6749.grants import BaseGrant
from authlib.oauth2.rfc6749.grants.base import TokenEndpointMixin
from flask import Blueprint, Flask, Response, g, jsonify, redirect, render_template
from flask import request as flask_request

from audit import service as audit
from broker.models import AuthMethod, OAuthClient
from broker.service import authorizations, credentials, resource, scopes, tokens
from charter import service as charters
from charter.notice import notice_text
from common import jose
from common.auth import (
    AccessRequest,
    TokenIdentity,
    citizen_required,
    current_citizen,
    public,
    uses_client_authentication,
)
from common.db import get_session, unit_of_work
from common.errors import InvalidTokenError, UnauthorizedError
from common.keyring import app_keyring
from common.settings import derived_key, setting
from policies.service import DATA_ACCESS

endpoints = Blueprint("oauth", __name__)  # machine endpoints: client-authenticated, no CSRF
screens = Blueprint("oauth_screens", __name__, template_folder="templates")  # CSRF applies

AUTH_METHODS = ["client_secret_basic", "private_key_jwt", "none"]
CONFIDENTIAL_METHODS = ["client_secret_basic", "private_key_jwt"]


def issuer() -> str:
    return str(setting("ISSUER"))


def api_audience() -> str:
    return f"{issuer()}/api"


def token_issuer() -> tokens.Issuer:
    return tokens.Issuer(issuer=issuer(), api_audience=api_audience(), keyring=app_keyring())


def nonces() -> resource.Nonces:
    return resource.Nonces(derived_key("dpop-nonce"), required=setting("DPOP_REQUIRE_NONCE"))


def _ascii(text: str) -> str:
    """RFC 6749 error descriptions allow printable ASCII without `"` and `\\`."""
    return "".join(c for c in text.replace('"', "'") if 0x20 <= ord(c) < 0x7F and c != "\\")


class Client(ClientMixin):
    """Authlib's view of one of our clients."""

    def __init__(self, model: OAuthClient) -> None:
        self.model = model

    def get_client_id(self) -> str:
        return self.model.client_id

    def check_client_secret(self, client_secret: str) -> bool:
        return credentials.check_secret(self.model, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.model.auth_method.value

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.model.grant_types

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.model.redirect_uris

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(sorted(scopes.parse(scope) & scopes.parse(self.model.scope)))

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"


def _query_client(client_id: str) -> Client | None:
    model = credentials.find_client(get_session(), client_id)
    return Client(model) if model else None


def _private_key_jwt(query_client: Any, request: Any) -> Client | None:
    """RFC 7523 client authentication (registered with Authlib's client authentication)."""
    form = request.form
    if form.get("client_assertion_type") != credentials.ASSERTION_TYPE:
        return None
    try:
        model = credentials.authenticate_assertion(
            get_session(),
            assertion=form.get("client_assertion", ""),
            client_id=form.get("client_id"),
            issuer=issuer(),
        )
    except UnauthorizedError as exc:
        raise InvalidClientError(status_code=401, description=_ascii(exc.detail)) from None
    return Client(model)


class Server(AuthorizationServer):
    def handle_response(self, status: int, payload: Any, headers: Any) -> Response:
        response = super().handle_response(status, payload, headers)
        response.headers["Cache-Control"] = "no-store"
        return response

    def handle_error_response(self, request: Any, error: OAuth2Error) -> Response:
        client = getattr(request, "client", None)
        audit.append(
            get_session(),
            event="oauth:token:refuse",
            actor=f"client:{client.get_client_id() if client else 'unknown'}",
            decision="deny",
            reason=str(error.error),
            detail={"grant_type": str(request.payload.grant_type or "")[:40]},
        )
        return super().handle_error_response(request, error)


class _Grant(BaseGrant, TokenEndpointMixin):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def validate_token_request(self) -> None:
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise OAuth2Error(
                error="unauthorized_client",
                description=f"This client may not use {self.GRANT_TYPE}.",
            )
        self.request.client = client

    def create_token_response(self) -> tuple[int, dict[str, Any], Any]:
        form = self.request.form
        try:
            body = self.run(self.request.client.model, form, g.get("dpop_jkt"))
        except tokens.GrantError as exc:
            raise OAuth2Error(
                error=exc.error, description=_ascii(exc.description), status_code=exc.status
            ) from None
        return 200, body, self.TOKEN_RESPONSE_HEADER

    def run(self, client: OAuthClient, form: Any, dpop_jkt: str | None) -> dict[str, Any]:
        raise NotImplementedError


class CodeGrant(_Grant):
    GRANT_TYPE = "authorization_code"

    def run(self, client: OAuthClient, form: Any, dpop_jkt: str | None) -> dict[str, Any]:
        return tokens.redeem_code(
            get_session(),
            client,
            token_issuer(),
            code=form.get("code", ""),
            redirect_uri=form.get("redirect_uri"),
            verifier=form.get("code_verifier"),
            dpop_jkt=dpop_jkt,
        )


class RefreshGrant(_Grant):
    GRANT_TYPE = "refresh_token"

    def run(self, client: OAuthClient, form: Any, dpop_jkt: str | None) -> dict[str, Any]:
        return tokens.refresh(
            get_session(),
            client,
            token_issuer(),
            refresh_token=form.get("refresh_token", ""),
            dpop_jkt=dpop_jkt,
        )


class ClientCredentialsGrant(_Grant):
    GRANT_TYPE = "client_credentials"
    TOKEN_ENDPOINT_AUTH_METHODS = CONFIDENTIAL_METHODS

    def run(self, client: OAuthClient, form: Any, dpop_jkt: str | None) -> dict[str, Any]:
        return tokens.client_credentials(
            get_session(),
            client,
            token_issuer(),
            scope=form.get("scope"),
            resource=form.get("resource"),
            dpop_jkt=dpop_jkt,
        )


server = Server()


def _oauth_error(
    error: str, description: str, status: int = 400, headers: dict[str, str] | None = None
) -> Response:
    response = jsonify(error=error, error_description=_ascii(description))
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _dpop_error(exc: resource.DpopError) -> Response:
    if exc.use_nonce:
        return _oauth_error("use_dpop_nonce", exc.detail, 400, {"DPoP-Nonce": nonces().current()})
    return _oauth_error("invalid_dpop_proof", exc.detail, 400)


def _token_endpoint_dpop() -> str | None:
    """The key a DPoP proof binds this request to, or None when no proof was sent."""
    proof = flask_request.headers.get("DPoP")
    if proof is None:
        return None
    return resource.check_proof(
        get_session(), proof, method="POST", url=flask_request.base_url, nonces=nonces()
    )


@endpoints.post("/oauth/token")
@uses_client_authentication
def token() -> Response:
    with unit_of_work():
        try:
            g.dpop_jkt = _token_endpoint_dpop()
        except resource.DpopError as exc:
            return _dpop_error(exc)
        except UnauthorizedError as exc:
            return _oauth_error("invalid_dpop_proof", exc.detail)
        response: Response = server.create_token_response()
        if g.get("dpop_jkt"):
            response.headers["DPoP-Nonce"] = nonces().current()
        return response


def _caller(*, public: bool) -> credentials.Caller | None:
    """Authenticate the client of an introspection or revocation request: HTTP Basic
    (client_secret_basic), a client assertion (private_key_jwt), or for revocation only, a
    public client's bare client_id (RFC 7009 §2.1)."""
    session = get_session()
    basic = flask_request.authorization
    if basic is not None and basic.type == "basic":
        return credentials.authenticate_basic(session, basic.username or "", basic.password or "")
    form = flask_request.form
    if form.get("client_assertion_type") == credentials.ASSERTION_TYPE:
        try:
            client = credentials.authenticate_assertion(
                session,
                assertion=form.get("client_assertion", ""),
                client_id=form.get("client_id"),
                issuer=issuer(),
            )
        except UnauthorizedError:
            return None
        return credentials.caller_of(client)
    found = credentials.find_client(session, form.get("client_id", "")) if public else None
    if found is not None and found.auth_method is AuthMethod.NONE:
        return credentials.caller_of(found)
    return None


def _par_client() -> OAuthClient | Response:
    """PAR authenticates like the token endpoint (RFC 9126 §2.1), through Authlib."""
    try:
        client = server.authenticate_client(
            server.create_oauth2_request(None), AUTH_METHODS, endpoint="par"
        )
    except OAuth2Error as error:
        return _refused_client(str(error.error))
    model: OAuthClient = client.model
    return model


def _refused_client(error: str) -> Response:
    audit.append(
        get_session(),
        event="oauth:client:refuse",
        actor="client:unknown",
        decision="deny",
        reason=error,
        detail={"endpoint": flask_request.path},
    )
    return _oauth_error(
        error, "Client authentication failed.", 401, {"WWW-Authenticate": 'Basic realm="tiers"'}
    )


def _client_or_error(*, public: bool = False) -> credentials.Caller | Response:
    caller = _caller(public=public)
    return caller if caller is not None else _refused_client("invalid_client")


@endpoints.post("/oauth/introspect")
@uses_client_authentication
def introspect() -> Response:
    with unit_of_work() as session:
        value = flask_request.form.get("token", "")
        basic = flask_request.authorization
        if basic is not None and basic.type == "basic":
            # The hot path (a holder's API checking each call): caller and token in one read.
            body = tokens.introspect_basic(
                session, basic.username or "", basic.password or "", value
            )
            if body is None:
                return _refused_client("invalid_client")
        else:
            caller = _client_or_error()
            if isinstance(caller, Response):
                return caller
            body = tokens.introspect(session, caller, value)
        response = jsonify(body)
        response.headers["Cache-Control"] = "no-store"
        return response


@endpoints.post("/oauth/revoke")
@uses_client_authentication
def revoke() -> Response:
    with unit_of_work() as session:
        caller = _client_or_error(public=True)
        if isinstance(caller, Response):
            return caller
        tokens.revoke(session, caller, flask_request.form.get("token", ""))
        return Response(status=200)


@endpoints.post("/oauth/par")
@uses_client_authentication
def pushed_authorization_request() -> Response:
    with unit_of_work() as session:
        client = _par_client()
        if isinstance(client, Response):
            return client
        try:
            jkt = _token_endpoint_dpop()
        except resource.DpopError as exc:
            return _dpop_error(exc)
        except UnauthorizedError as exc:
            return _oauth_error("invalid_dpop_proof", exc.detail)
        params = {k: v for k, v in flask_request.form.items() if k != "client_assertion_type"}
        if params.get("client_id", client.client_id) != client.client_id:
            return _oauth_error("invalid_request", "client_id differs from the authenticated one.")
        params["client_id"] = client.client_id
        try:
            request_uri, expires_in = authorizations.push(
                session, client, params, audience=api_audience(), dpop_jkt=jkt
            )
        except authorizations.AuthorizationError as exc:
            authorizations.refuse(
                session, client_id=client.client_id, error=exc.error, detail=exc.detail
            )
            body: dict[str, Any] = {"error": exc.error, "error_description": _ascii(exc.detail)}
            if exc.fields:
                body["errors"] = exc.fields
            response = jsonify(body)
            response.status_code = 400
            return response
        response = jsonify(request_uri=request_uri, expires_in=expires_in)
        response.status_code = 201
        response.headers["Cache-Control"] = "no-store"
        return response


def _authorize_params() -> dict[str, str]:
    source = flask_request.form if flask_request.method == "POST" else flask_request.args
    skip = {"csrf_token", "decision"}
    return {k: v for k, v in source.items() if k not in skip}


def _error_page(exc: authorizations.AuthorizationError) -> tuple[str, int]:
    """Authorization errors are shown here, never sent to an unverified redirect URI."""
    with unit_of_work() as session:
        authorizations.refuse(
            session,
            client_id=flask_request.values.get("client_id"),
            error=exc.error,
            detail=exc.detail,
        )
    return render_template("oauth/error.html", error=exc), 400


@screens.get("/oauth/authorize")
@citizen_required
def authorize() -> Any:
    """The consent screen: who asks, for what purpose, which data, for how long."""
    session = get_session()
    try:
        request = authorizations.load(session, _authorize_params(), audience=api_audience())
    except authorizations.AuthorizationError as exc:
        session.rollback()
        return _error_page(exc)
    citizen = current_citizen()
    assert citizen is not None  # noqa: S101 (citizen_required)
    charter = charters.current(session)
    items = [
        {
            "access": prior.access,
            "prior": prior,
            "notice": notice_text(charter.doc, prior.access.purpose, citizen.language),
            "categories": [charter.doc.data_category(c) for c in prior.access.data_categories],
        }
        for prior in authorizations.priors(session, request, subject_id=citizen.subject_id)
    ]
    return render_template(
        "oauth/consent.html",
        request=request,
        items=items,
        lang=citizen.language,
        scopes=sorted(scopes.parse(request.scope)),
        params=_authorize_params(),
        organisation=request.client.organisation,
    )


@screens.post("/oauth/authorize")
@citizen_required
def decide() -> Any:
    citizen = current_citizen()
    assert citizen is not None  # noqa: S101 (citizen_required)
    approve = flask_request.form.get("decision") == "approve"
    try:
        with unit_of_work() as session:
            request = authorizations.load(session, _authorize_params(), audience=api_audience())
            if approve:
                target = authorizations.approve(
                    session,
                    request,
                    subject_id=citizen.subject_id,
                    language=citizen.language,
                    issuer=issuer(),
                )
            else:
                target = authorizations.deny(
                    session, request, subject_id=citizen.subject_id, issuer=issuer()
                )
    except authorizations.AuthorizationError as exc:
        return _error_page(exc)
    return redirect(target, code=303)  # 303, never 307, after a credential POST (RFC 9700)


@endpoints.get("/.well-known/oauth-authorization-server")
@public
def metadata() -> Response:
    base = issuer()
    response = jsonify(
        issuer=base,
        authorization_endpoint=f"{base}/oauth/authorize",
        token_endpoint=f"{base}/oauth/token",
        pushed_authorization_request_endpoint=f"{base}/oauth/par",
        require_pushed_authorization_requests=True,
        introspection_endpoint=f"{base}/oauth/introspect",
        revocation_endpoint=f"{base}/oauth/revoke",
        registration_endpoint=f"{base}/oauth/register",
        jwks_uri=f"{base}/.well-known/jwks.json",
        response_types_supported=["code"],
        response_modes_supported=["query"],
        grant_types_supported=["authorization_code", "refresh_token", "client_credentials"],
        token_endpoint_auth_methods_supported=AUTH_METHODS,
        token_endpoint_auth_signing_alg_values_supported=list(jose.CLIENT_ALGORITHMS),
        introspection_endpoint_auth_methods_supported=CONFIDENTIAL_METHODS,
        revocation_endpoint_auth_methods_supported=AUTH_METHODS,
        code_challenge_methods_supported=["S256"],
        scopes_supported=list(scopes.ALL),
        authorization_details_types_supported=[DATA_ACCESS],
        authorization_response_iss_parameter_supported=True,
        dpop_signing_alg_values_supported=list(jose.CLIENT_ALGORITHMS),
        access_token_signing_alg_values_supported=list(jose.ACCESS_TOKEN_ALGORITHMS),
    )
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


def validate_access(access: AccessRequest) -> TokenIdentity:
    """The token validator the API routes use (installed by broker/app.py).

    It runs in its own transaction so that a refusal is audited and a DPoP proof's jti is
    remembered even though the route itself never runs.
    """
    refusal: InvalidTokenError | None = None
    with unit_of_work() as session:
        try:
            return resource.check_access(
                session,
                access,
                keyring=app_keyring(),
                issuer=issuer(),
                audience=api_audience(),
                nonces=nonces(),
            )
        except InvalidTokenError as exc:
            refusal = exc
            audit.append(
                session,
                event="api:token:refuse",
                actor="unknown",
                decision="deny",
                reason=exc.detail[:200],
                detail={"path": flask_request.path[:200], "scheme": access.scheme},
            )
    assert refusal is not None  # noqa: S101 (the only way out of the block without a return)
    raise refusal


def init_app(app: Flask, csrf: Any) -> None:
    server.init_app(app, query_client=_query_client, save_token=lambda token, request: None)
    server.register_client_auth_method("private_key_jwt", _private_key_jwt)
    for grant in (CodeGrant, RefreshGrant, ClientCredentialsGrant):
        server.register_grant(grant)
    csrf.exempt(endpoints)
    app.register_blueprint(endpoints)
    app.register_blueprint(screens)
