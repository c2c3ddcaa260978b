"""Service-level endpoints: health and the public keys that verify our signatures; the charter
committee's organisations and clients (scope `admin`); RFC 7591 client registration; holders'
datasets and pairings (scope `datasets:write`) and the public DCAT-AP catalog."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

from flask import Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from broker.models import Dataset, OAuthClient, Organisation
from broker.schemas import (
    ClientCreatedOut,
    ClientIn,
    ClientInformationOut,
    ClientMetadataIn,
    ClientOut,
    DatasetIn,
    DatasetOut,
    DatasetUpdate,
    InitialAccessTokenIn,
    InitialAccessTokenOut,
    OrganisationIn,
    OrganisationOut,
    OrganisationUpdate,
    PairingIn,
    PairingOut,
    RegistrationErrorOut,
    WithSecret,
)
from broker.service import catalog as catalog_service
from broker.service import clients, datasets, organisations
from common.auth import current_token, public, require_oauth
from common.db import get_session, unit_of_work
from common.errors import ForbiddenError, InvalidInputError, InvalidTokenError
from common.http import ApiBlueprint, jsonld_response
from common.keyring import app_keyring

blp = ApiBlueprint(
    "service",
    __name__,
    url_prefix="/",
    description="Health, public keys, and the charter committee's organisations and clients",
)
# RFC 7591 registration: a POST without cookies, so it lives on its own blueprint that the
# composition root exempts from CSRF (broker/app.py).
register_blp = ApiBlueprint(
    "registration",
    __name__,
    url_prefix="/oauth",
    description="OAuth 2.0 Dynamic Client Registration (RFC 7591)",
)


@blp.get("/api/v1/health")
@public
def health() -> Response:
    # Does nothing on purpose: the baseline of bench/consent_writes.py.
    return jsonify(status="ok")


@blp.get("/.well-known/jwks.json")
@public
def jwks() -> Response:
    days = current_app.config["RECEIPT_KEY_PUBLISH_DAYS"]
    response = jsonify(app_keyring().jwks(publish_for=timedelta(days=days)))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


# --- the charter committee: organisations and clients -----------------------------------


def _actor() -> str:
    token = current_token()
    return f"client:{token.client_id}" if token else "unknown"


@blp.get("/api/v1/organisations")
@require_oauth("admin")
@blp.response(200, OrganisationOut(many=True))
def list_organisations() -> list[Organisation]:
    return organisations.list_organisations(get_session())


@blp.post("/api/v1/organisations")
@require_oauth("admin")
@blp.arguments(OrganisationIn)
@blp.response(201, OrganisationOut)
def create_organisation(data: dict[str, Any]) -> Organisation:
    with unit_of_work() as session:
        return organisations.create_organisation(session, **data, actor=_actor())


@blp.get("/api/v1/organisations/<uuid:organisation_id>")
@require_oauth("admin")
@blp.response(200, OrganisationOut)
def get_organisation(organisation_id: uuid.UUID) -> Organisation:
    return organisations.get_organisation(get_session(), organisation_id)


@blp.patch("/api/v1/organisations/<uuid:organisation_id>")
@require_oauth("admin")
@blp.arguments(OrganisationUpdate)
@blp.response(200, OrganisationOut)
def update_organisation(data: dict[str, Any], organisation_id: uuid.UUID) -> Organisation:
    with unit_of_work() as session:
        return organisations.update_organisation(session, organisation_id, **data, actor=_actor())


@blp.get("/api/v1/organisations/<uuid:organisation_id>/clients")
@require_oauth("admin")
@blp.response(200, ClientOut(many=True))
def list_clients(organisation_id: uuid.UUID) -> list[OAuthClient]:
    return clients.list_clients(get_session(), organisation_id)


@blp.post("/api/v1/organisations/<uuid:organisation_id>/clients")
@require_oauth("admin")
@blp.arguments(ClientIn)
@blp.response(201, ClientCreatedOut)
def create_client(data: dict[str, Any], organisation_id: uuid.UUID) -> WithSecret:
    with unit_of_work() as session:
        client, secret = clients.create_client(
            session,
            organisation_id=organisation_id,
            registered_by="committee",
            actor=_actor(),
            **data,
        )
    return WithSecret(client, secret)


@blp.delete("/api/v1/clients/<client_id>")
@require_oauth("admin")
@blp.response(204)
def revoke_client(client_id: str) -> None:
    with unit_of_work() as session:
        clients.revoke_client(session, client_id=client_id, actor=_actor())


@blp.post("/api/v1/organisations/<uuid:organisation_id>/initial-access-tokens")
@require_oauth("admin")
@blp.arguments(InitialAccessTokenIn)
@blp.response(201, InitialAccessTokenOut)
def issue_initial_access_token(data: dict[str, Any], organisation_id: uuid.UUID) -> dict[str, Any]:
    with unit_of_work() as session:
        token = clients.issue_initial_access_token(
            session,
            organisation_id=organisation_id,
            ttl=timedelta(hours=data["hours"]),
            actor=_actor(),
        )
        row = clients.get_initial_access_token(session, token)
    return {
        "initial_access_token": token,
        "organisation_id": organisation_id,
        "expires_at": row.expires_at,
        "registration_endpoint": f"{current_app.config['ISSUER']}/oauth/register",
    }


# --- RFC 7591 dynamic client registration -----------------------------------------------

F = Callable[..., Any]


def _registration_error(fields: dict[str, list[str]], detail: str) -> Response:
    """RFC 7591 §3.2.2: 400 with `error` and `error_description`; `errors` names the fields."""
    # invalid_redirect_uri when the redirect URIs are all that is wrong, else the general code.
    code = "invalid_redirect_uri" if set(fields) == {"redirect_uris"} else "invalid_client_metadata"
    messages = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in sorted(fields.items()))
    response = jsonify(
        error=code,
        error_description=_ascii(f"{detail} {messages}" if messages else detail),
        errors=fields,
    )
    response.status_code = 400
    response.headers["Cache-Control"] = "no-store"
    return response


def _ascii(text: str) -> str:
    """RFC 7591 §3.2.2: the description is ASCII (the `errors` member keeps every character)."""
    text = text.replace("§", "section ").replace("…", "...")
    return "".join(c for c in text if 0x20 <= ord(c) < 0x7F)


def _initial_access_token() -> str:
    """The bearer token of this request, or 401 (RFC 7591 §3 with RFC 6750 §3)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        raise InvalidTokenError(
            "Registration needs the initial access token the charter committee issued.",
            challenge='Bearer realm="tiers"',
        )
    return token


def _token_first(view: F) -> F:
    """Check the initial access token before the body, so strangers learn nothing of it.

    A read only: the token is consumed by the service, in the registration's transaction.
    """

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        token = _initial_access_token()
        if not clients.initial_access_token_is_valid(get_session(), token):
            raise InvalidTokenError(
                "The initial access token is unknown, already used or expired.",
                challenge='Bearer error="invalid_token"',
            )
        return view(*args, **kwargs)

    return wrapped


def _as_registration_errors(view: F) -> F:
    """Bad metadata answers as RFC 7591 §3.2.2 says, whether webargs or the service refuses it."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except InvalidInputError as exc:
            return _registration_error(exc.fields, exc.detail)
        except HTTPException as exc:
            data = getattr(exc, "data", None)
            if exc.code not in (400, 422) or not isinstance(data, dict):
                raise
            fields: dict[str, list[str]] = {}
            for by_field in (data.get("messages") or {}).values():
                if isinstance(by_field, dict):
                    fields.update({str(k): _flat(v) for k, v in by_field.items()})
            if "_schema" in fields and any("JSON" in m for m in fields["_schema"]):
                return _registration_error({}, "The body is not valid JSON.")
            return _registration_error(fields, "The client metadata is not valid.")

    return wrapped


def _flat(messages: Any) -> list[str]:
    if isinstance(messages, dict):
        return [m for value in messages.values() for m in _flat(value)]
    if isinstance(messages, list):
        return [str(m) for m in messages]
    return [str(messages)]


@register_blp.post("/register")
# The initial access token is not an OAuth access token: the service checks and consumes it.
@public
@_token_first
@_as_registration_errors
@register_blp.arguments(ClientMetadataIn, error_status_code=400)
@register_blp.response(201, ClientInformationOut)
@register_blp.alt_response(400, schema=RegistrationErrorOut, description="RFC 7591 §3.2.2")
def register_client(metadata: dict[str, Any]) -> Any:
    with unit_of_work() as session:
        client, secret = clients.register_client(
            session, initial_access_token=_initial_access_token(), metadata=metadata
        )
    return WithSecret(client, secret), 201, {"Cache-Control": "no-store", "Pragma": "no-cache"}


# --- holders' datasets, pairing, and the public catalog (issue #5) ----------------------
# Registered by broker/app.py. Holders call with their client_credentials token
# (`datasets:write`); the catalog is public.

datasets_blp = ApiBlueprint(
    "datasets",
    __name__,
    url_prefix="/api/v1",
    description="Holders' datasets, the pairing of citizens' accounts, and the DCAT-AP catalog",
)


def _holder_id() -> uuid.UUID:
    """The calling organisation, which must be a data holder (scopes already say so)."""
    token = current_token()
    if token is None or token.role != "holder":
        raise ForbiddenError("Only data holders register datasets and pair accounts.")
    return token.organisation_id


@datasets_blp.get("/datasets")
@require_oauth("datasets:write")
@datasets_blp.response(200, DatasetOut(many=True))
def list_datasets() -> list[Dataset]:
    # Only the caller's own settings; everyone's public description is /api/v1/catalog.
    return datasets.list_own(get_session(), _holder_id())


@datasets_blp.post("/datasets")
@require_oauth("datasets:write")
@datasets_blp.arguments(DatasetIn)
@datasets_blp.response(201, DatasetOut)
def register_dataset(data: dict[str, Any]) -> Dataset:
    holder_id = _holder_id()
    with unit_of_work() as session:
        return datasets.register(session, holder_id=holder_id, settings=data, actor=_actor())


@datasets_blp.get("/datasets/<uuid:dataset_id>")
@require_oauth("datasets:write")
@datasets_blp.response(200, DatasetOut)
def get_dataset(dataset_id: uuid.UUID) -> Dataset:
    return datasets.get_own(get_session(), _holder_id(), dataset_id)


@datasets_blp.patch("/datasets/<uuid:dataset_id>")
@require_oauth("datasets:write")
@datasets_blp.arguments(DatasetUpdate(partial=True))
@datasets_blp.response(200, DatasetOut)
def update_dataset(data: dict[str, Any], dataset_id: uuid.UUID) -> Dataset:
    holder_id = _holder_id()
    with unit_of_work() as session:
        return datasets.update(
            session, holder_id=holder_id, dataset_id=dataset_id, changes=data, actor=_actor()
        )


@datasets_blp.post("/pairings")
@require_oauth("datasets:write")
@datasets_blp.arguments(PairingIn)
@datasets_blp.response(201, PairingOut)
def pair_account(data: dict[str, Any]) -> Any:
    holder_id = _holder_id()
    with unit_of_work() as session:  # a refusal commits too: it feeds the holder's rate limit
        outcome = datasets.pair(
            session,
            holder_id=holder_id,
            code=data["code"],
            subject=data["subject"],
            dataset=data["dataset"],
            actor=_actor(),
        )
    outcome.raise_refusal()
    assert outcome.link is not None  # noqa: S101 (no refusal: a link)
    link = outcome.link
    body = {
        "id": link.id,
        "dataset_id": link.dataset_id,
        "created_at": link.created_at,
        "created": outcome.created,
    }
    return body, 201 if outcome.created else 200


@datasets_blp.get("/catalog")
@public
def catalog() -> Response:
    body = catalog_service.build(get_session(), base_url=current_app.config["ISSUER"])
    response = jsonld_response(body)
    response.headers["Cache-Control"] = "public, max-age=60"
    return response
