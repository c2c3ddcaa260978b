"""HTTP shapes of the committee's organisation and client API, its portal forms, and RFC 7591
registration. Shapes and types only: the rules live in broker.service.organisations and
broker.service.clients."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import (
    EXCLUDE,
    Schema,
    ValidationError,
    fields,
    post_dump,
    post_load,
    pre_load,
    validate,
    validates_schema,
)

from broker.models import AuthMethod, DatasetAuth, FieldType, Health, Role
from broker.service.access import grant_state
from broker.service.datasets import health_url
from common.http import UtcDateTime

SLUG = validate.Regexp(
    r"^[a-z0-9]+(-[a-z0-9]+)*\Z", error="A lowercase kebab-case id (e.g. energy-lab)."
)
CATEGORY = validate.Length(1, 64)
URI = validate.Length(1, 500)
NAME = validate.Length(1, 200)


class OrganisationIn(Schema):
    slug = fields.String(required=True, validate=[SLUG, validate.Length(max=64)])
    name = fields.String(required=True, validate=NAME)
    role = fields.Enum(Role, by_value=True, required=True)
    reuser_category = fields.String(load_default=None, allow_none=True, validate=CATEGORY)
    resource_uri = fields.String(load_default=None, allow_none=True, validate=URI)
    webhook_url = fields.String(load_default=None, allow_none=True, validate=URI)


class OrganisationUpdate(Schema):
    """PATCH: only the fields sent change; `null` clears the category or the resource URI."""

    name = fields.String(validate=NAME)
    reuser_category = fields.String(allow_none=True, validate=CATEGORY)
    resource_uri = fields.String(allow_none=True, validate=URI)
    webhook_url = fields.String(allow_none=True, validate=URI)
    suspended = fields.Boolean()

    @validates_schema
    def _not_empty(self, data: Mapping[str, Any], **_kwargs: Any) -> None:
        if not data:
            raise ValidationError("Send at least one field to change.", "_schema")


class OrganisationOut(Schema):
    id = fields.UUID()
    slug = fields.String()
    name = fields.String()
    role = fields.Enum(Role, by_value=True)
    reuser_category = fields.String(allow_none=True)
    resource_uri = fields.String(allow_none=True)
    webhook_url = fields.String(allow_none=True)
    suspended = fields.Function(lambda o: o.suspended_at is not None)
    suspended_at = fields.AwareDateTime(allow_none=True)
    created_at = fields.AwareDateTime()
    links = fields.Function(
        lambda o: {
            "clients": f"/api/v1/organisations/{o.id}/clients",
            "initial_access_tokens": f"/api/v1/organisations/{o.id}/initial-access-tokens",
        }
    )


class ClientIn(Schema):
    name = fields.String(required=True, validate=NAME)
    auth_method = fields.Enum(
        AuthMethod, by_value=True, load_default=AuthMethod.CLIENT_SECRET_BASIC
    )
    redirect_uris = fields.List(
        fields.String(validate=URI), load_default=list, validate=validate.Length(max=10)
    )
    grant_types = fields.List(
        fields.String(validate=validate.Length(1, 64)),
        required=True,
        validate=validate.Length(1, 3),
    )
    scope = fields.String(required=True, validate=validate.Length(1, 500))
    jwks = fields.Dict(keys=fields.String(), load_default=None, allow_none=True)
    dpop_bound = fields.Boolean(load_default=False)


class ClientOut(Schema):
    """A client as the committee sees it: never its secret, never the secret's hash."""

    client_id = fields.String()
    organisation_id = fields.UUID()
    organisation = fields.Function(lambda c: c.organisation.slug)
    name = fields.String()
    auth_method = fields.Enum(AuthMethod, by_value=True)
    redirect_uris = fields.List(fields.String())
    grant_types = fields.List(fields.String())
    scope = fields.String()
    jwks = fields.Dict(allow_none=True)
    dpop_bound = fields.Boolean()
    registered_by = fields.String()
    created_at = fields.AwareDateTime()
    revoked_at = fields.AwareDateTime(allow_none=True)


@dataclass(frozen=True)
class WithSecret:
    """A client with the secret that exists in clear only in the response that creates it."""

    client: Any
    client_secret: str | None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


class ClientCreatedOut(ClientOut):
    """The create response: the secret (client_secret_basic only) appears here, once."""

    client_secret = fields.String(allow_none=True)


class InitialAccessTokenIn(Schema):
    hours = fields.Integer(load_default=24, strict=True, validate=validate.Range(1, 720))


class InitialAccessTokenOut(Schema):
    initial_access_token = fields.String()
    organisation_id = fields.UUID()
    expires_at = fields.AwareDateTime()
    registration_endpoint = fields.String()


# --- RFC 7591 ---------------------------------------------------------------------------


class ClientMetadataIn(Schema):
    """RFC 7591 §2 client metadata. Metadata we do not understand is ignored (§2)."""

    class Meta:
        unknown = EXCLUDE

    client_name = fields.String(load_default=None, validate=NAME)
    redirect_uris = fields.List(
        fields.String(validate=URI), load_default=list, validate=validate.Length(max=10)
    )
    grant_types = fields.List(
        fields.String(validate=validate.Length(1, 64)),
        load_default=lambda: ["authorization_code"],
        validate=validate.Length(1, 3),
    )
    response_types = fields.List(fields.String(), load_default=None)
    token_endpoint_auth_method = fields.String(
        load_default="client_secret_basic",
        validate=validate.OneOf([m.value for m in AuthMethod]),
    )
    jwks = fields.Dict(keys=fields.String(), load_default=None)
    jwks_uri = fields.String(load_default=None)
    scope = fields.String(load_default=None, validate=validate.Length(1, 500))
    dpop_bound_access_tokens = fields.Boolean(load_default=False)

    @validates_schema
    def _consistent(self, data: Mapping[str, Any], **_kwargs: Any) -> None:
        if data.get("jwks_uri") is not None:
            raise ValidationError("Not supported: send the public keys in jwks.", "jwks_uri")
        response_types = data.get("response_types")
        if response_types is not None:
            # RFC 7591 §2.1: response types must match the grant types.
            wanted = ["code"] if "authorization_code" in data.get("grant_types", []) else []
            if sorted(set(response_types)) != wanted:
                raise ValidationError(
                    f"Must be {wanted} for these grant types (only the code flow is supported).",
                    "response_types",
                )


class ClientInformationOut(Schema):
    """RFC 7591 §3.2.1: the registered client, its secret once, and what was registered."""

    client_id = fields.String()
    client_secret = fields.String()
    client_id_issued_at = fields.Function(lambda c: int(c.created_at.timestamp()))
    # Required with a secret (RFC 7591 §3.2.1); 0: our secrets do not expire.
    client_secret_expires_at = fields.Function(lambda c: 0 if c.client_secret else None)
    client_name = fields.String(attribute="name")
    redirect_uris = fields.List(fields.String())
    grant_types = fields.List(fields.String())
    response_types = fields.Function(
        lambda c: ["code"] if "authorization_code" in c.grant_types else []
    )
    token_endpoint_auth_method = fields.Enum(AuthMethod, by_value=True, attribute="auth_method")
    scope = fields.String()
    jwks = fields.Dict()
    dpop_bound_access_tokens = fields.Boolean(attribute="dpop_bound")

    @post_dump
    def _absent_not_null(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        return {k: v for k, v in data.items() if v is not None}  # RFC 7591 §3.2.1


class RegistrationErrorOut(Schema):
    """RFC 7591 §3.2.2, plus `errors`: the messages by metadata field."""

    error = fields.String()
    error_description = fields.String()
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))


# --- portal forms (the same rules, as browsers send them) -------------------------------


class OrganisationForm(OrganisationIn):
    """The portal's new-organisation form: empty text boxes mean "none"."""

    @pre_load
    def _blanks(self, data: Mapping[str, Any], **_kwargs: Any) -> dict[str, Any]:
        return {k: (v.strip() or None) if isinstance(v, str) else v for k, v in data.items()}


class OrganisationEditForm(Schema):
    name = fields.String(required=True, validate=NAME)
    reuser_category = fields.String(load_default=None, allow_none=True, validate=CATEGORY)
    resource_uri = fields.String(load_default=None, allow_none=True, validate=URI)

    @pre_load
    def _blanks(self, data: Mapping[str, Any], **_kwargs: Any) -> dict[str, Any]:
        return {k: (v.strip() or None) if isinstance(v, str) else v for k, v in data.items()}


class _JsonText(fields.Field[dict[str, Any]]):
    """A textarea holding a JSON object (the JWK Set)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, str):
            raise ValidationError("Paste a JSON object.")
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise ValidationError("This is not valid JSON.") from exc
        if not isinstance(parsed, dict):
            raise ValidationError("Paste a JSON object.")
        return parsed


class ClientForm(Schema):
    """The portal's new-client form: one redirect URI per line, scopes as checkboxes."""

    name = fields.String(required=True, validate=NAME)
    auth_method = fields.Enum(AuthMethod, by_value=True, required=True)
    redirect_uris = fields.List(
        fields.String(validate=URI), load_default=list, validate=validate.Length(max=10)
    )
    grant_types = fields.List(fields.String(validate=validate.Length(1, 64)), load_default=list)
    scope = fields.List(fields.String(validate=validate.Length(1, 64)), load_default=list)
    jwks = _JsonText(load_default=None, allow_none=True)
    dpop_bound = fields.Boolean(load_default=False)

    @pre_load
    def _from_browser(self, data: Mapping[str, Any], **_kwargs: Any) -> dict[str, Any]:
        out = dict(data)
        uris = out.get("redirect_uris")
        if isinstance(uris, list):
            lines = [line.strip() for text in uris for line in str(text).splitlines()]
            out["redirect_uris"] = [line for line in lines if line]
        if isinstance(out.get("jwks"), str) and not out["jwks"].strip():
            out["jwks"] = None
        return out


class InitialAccessTokenForm(Schema):
    hours = fields.Integer(load_default=24, validate=validate.Range(1, 720))


# --- holders' datasets, pairing (issue #5) -----------------------------------------------
# Shapes only: broker.service.datasets checks the rules and names each bad field by path.
# Errors of nested shapes are named the same way (`schema.fields[2].min`), not by webargs'
# nesting, so a holder reads one convention whichever layer refused.


def _path_messages(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """Marshmallow's nested messages as flat paths: {"schema": {"fields": {2: …}}} ->
    "schema.fields[2]…"; a nested `_schema` message belongs to its parent's path."""
    if isinstance(messages, Mapping):
        flat: dict[str, list[str]] = {}
        for key, value in messages.items():
            if isinstance(key, int):
                path = f"{prefix}[{key}]"
            elif key == "_schema" and prefix:
                path = prefix
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            for name, found in _path_messages(value, path).items():
                flat.setdefault(name, []).extend(found)
        return flat
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return {prefix or "_schema": list(messages)}
    if isinstance(messages, list):
        flat = {}
        for index, value in enumerate(messages):
            flat.update(_path_messages(value, f"{prefix}[{index}]"))
        return flat
    return {prefix or "_schema": [str(messages)]}


class _PathErrors(Schema):
    def handle_error(self, error: ValidationError, data: Any, *, many: bool, **kwargs: Any) -> None:
        raise ValidationError(_path_messages(error.messages))


class TextIn(Schema):
    """A text in the territory's two languages."""

    fr = fields.String(required=True, validate=validate.Length(1, 5000))
    en = fields.String(required=True, validate=validate.Length(1, 5000))


class SchemaFieldIn(Schema):
    """One field of a dataset's records."""

    name = fields.String(required=True, validate=validate.Length(1, 64))
    type = fields.Enum(FieldType, by_value=True, required=True)
    unit = fields.String(load_default=None, allow_none=True, validate=validate.Length(1, 32))
    personal = fields.Boolean(
        load_default=True, metadata={"description": "Personal data (default: true)."}
    )
    sensitive = fields.Boolean(
        load_default=False, metadata={"description": "GDPR art. 9 data; implies personal."}
    )
    min_value = fields.Float(
        data_key="min",
        load_default=None,
        allow_none=True,
        allow_nan=False,
        metadata={"description": "Lower bound for DP clamping (numeric personal fields)."},
    )
    max_value = fields.Float(
        data_key="max",
        load_default=None,
        allow_none=True,
        allow_nan=False,
        metadata={"description": "Upper bound for DP clamping (numeric personal fields)."},
    )

    @post_load
    def _wire_names(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        if isinstance(data.get("type"), FieldType):
            data["type"] = data["type"].value
        data["min"], data["max"] = data.pop("min_value", None), data.pop("max_value", None)
        return data


class DatasetSchemaIn(Schema):
    """The records' fields; which one holds the holder's subject identifier; the time field."""

    field_list = fields.List(
        fields.Nested(SchemaFieldIn),
        data_key="fields",
        required=True,
        validate=validate.Length(1, 100),
    )
    subject_field = fields.String(load_default=None, allow_none=True, validate=CATEGORY)
    time_field = fields.String(load_default=None, allow_none=True, validate=CATEGORY)

    @post_load
    def _wire_names(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        if "field_list" in data:
            data["fields"] = data.pop("field_list")
        return data


class DatasetIn(_PathErrors):
    """A dataset a holder registers (docs/holder-protocol.md says how Tiers reads it)."""

    slug = fields.String(required=True, validate=[SLUG, validate.Length(max=64)])
    title = fields.Nested(TextIn, required=True)
    description = fields.Nested(TextIn, required=True)
    data_category = fields.String(required=True, validate=CATEGORY)
    dataset_schema = fields.Nested(DatasetSchemaIn, data_key="schema", required=True)
    endpoint_url = fields.String(
        required=True,
        validate=URI,
        metadata={"description": "https (http on loopback only); records at {endpoint}/records."},
    )
    auth = fields.Enum(
        DatasetAuth,
        by_value=True,
        required=True,
        metadata={"description": "tiers_token for personal data, none for open data."},
    )
    refresh = fields.String(
        required=True,
        validate=validate.Length(2, 32),
        metadata={"description": "An ISO 8601 duration, e.g. P1D or PT1H."},
    )
    licence = fields.String(
        load_default=None,
        allow_none=True,
        validate=URI,
        metadata={"description": "Required iff no field is personal (open data)."},
    )

    @post_load
    def _wire_names(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        if "dataset_schema" in data:
            data["schema"] = data.pop("dataset_schema")
        if isinstance(data.get("auth"), DatasetAuth):
            data["auth"] = data["auth"].value
        return data


class DatasetUpdate(DatasetIn):
    """PATCH, loaded with partial=True: only the fields sent change; `schema`, `title` and
    `description` are replaced as a whole."""

    @validates_schema
    def _not_empty(self, data: Mapping[str, Any], **_kwargs: Any) -> None:
        if not data:
            raise ValidationError("Send at least one field to change.", "_schema")


class HealthOut(Schema):
    status = fields.Enum(Health, by_value=True, attribute="health")
    checked_at = fields.AwareDateTime(attribute="health_checked_at", allow_none=True)
    detail = fields.String(attribute="health_detail", allow_none=True)


class DatasetOut(Schema):
    """A dataset's settings, as its own holder sees them (nobody else does)."""

    id = fields.UUID()
    holder = fields.Function(lambda d: d.holder.slug)
    slug = fields.String()
    title = fields.Dict(keys=fields.String(), values=fields.String())
    description = fields.Dict(keys=fields.String(), values=fields.String())
    data_category = fields.String()
    schema = fields.Function(
        lambda d: {
            "fields": d.fields,
            "subject_field": d.subject_field,
            "time_field": d.time_field,
        }
    )
    personal = fields.Boolean()
    open_data = fields.Function(lambda d: not d.personal)
    endpoint_url = fields.String()
    auth = fields.Enum(DatasetAuth, by_value=True)
    refresh = fields.String()
    licence = fields.String(allow_none=True)
    health = fields.Function(lambda d: HealthOut().dump(d))
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    links = fields.Function(
        lambda d: {
            "self": f"/api/v1/datasets/{d.id}",
            "catalog": "/api/v1/catalog",
            "records": f"{d.endpoint_url.rstrip('/')}/records",
            "health": health_url(d.endpoint_url),
        }
    )


class PairingIn(Schema):
    """What a holder's service sends after its customer typed their pairing code."""

    code = fields.String(
        required=True,
        validate=validate.Regexp(
            r"^[A-Za-z0-9]{4}-?[A-Za-z0-9]{4}\Z", error="A pairing code: XXXX-XXXX."
        ),
    )
    subject = fields.String(
        required=True,
        validate=validate.Length(1, 128),
        metadata={"description": "Your own identifier for this citizen (never shown to reusers)."},
    )
    dataset = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(1, 64),
        metadata={"description": "One of your datasets (id or slug), if the link is for it only."},
    )


class PairingOut(Schema):
    """The link made; the holder's identifier is not echoed back."""

    id = fields.UUID()
    dataset = fields.UUID(attribute="dataset_id", allow_none=True)
    linked_at = fields.AwareDateTime(attribute="created_at")
    created = fields.Boolean()


# --- access requests and grants (issue #5) ------------------------------------------------


class AccessRequestIn(_PathErrors):
    """A reuser's request: which datasets, under which charter purpose, how, why, how long."""

    purpose = fields.String(required=True, validate=validate.Length(1, 64))
    mode = fields.String(required=True, validate=validate.OneOf(["individual", "aggregate"]))
    datasets = fields.List(
        fields.String(validate=validate.Length(1, 64)),
        required=True,
        validate=validate.Length(1, 16),
        metadata={"description": "Dataset ids from the catalog."},
    )
    fields_ = fields.Dict(
        data_key="fields",
        attribute="fields",
        keys=fields.String(validate=validate.Length(1, 64)),
        values=fields.List(
            fields.String(validate=validate.Length(1, 64)), validate=validate.Length(1, 100)
        ),
        load_default=dict,
        metadata={
            "description": "Per dataset id, the fields wanted (default: the non-sensitive ones)."
        },
    )
    justification = fields.String(required=True, validate=validate.Length(10, 5000))
    period_start = UtcDateTime(load_default=None, allow_none=True)
    period_end = UtcDateTime(required=True)


class AccessRequestOut(Schema):
    id = fields.UUID()
    organisation = fields.Function(lambda r: r.organisation.slug)
    purpose = fields.String(attribute="purpose_id")
    mode = fields.String()
    datasets = fields.List(fields.String(), attribute="dataset_ids")
    fields_ = fields.Dict(data_key="fields", attribute="fields")
    justification = fields.String()
    period_start = fields.AwareDateTime()
    period_end = fields.AwareDateTime()
    charter_version = fields.String()
    decision = fields.Function(lambda r: r.decision.value)
    obligations = fields.List(fields.Dict())
    reasons = fields.List(fields.Dict())
    status = fields.Function(lambda r: r.status.value)
    created_at = fields.AwareDateTime()
    decided_at = fields.AwareDateTime(allow_none=True)
    decided_by = fields.String(allow_none=True)
    decision_note = fields.String(allow_none=True)


class GrantOut(Schema):
    id = fields.UUID()
    request = fields.UUID(attribute="request_id")
    purpose = fields.String(attribute="purpose_id")
    mode = fields.String()
    datasets = fields.List(fields.String(), attribute="dataset_ids")
    fields_ = fields.Dict(data_key="fields", attribute="fields")
    obligations = fields.List(fields.Dict())
    starts_at = fields.AwareDateTime()
    expires_at = fields.AwareDateTime()
    suspended_at = fields.AwareDateTime(allow_none=True)
    status = fields.Method("_status")
    links = fields.Function(lambda g: {"records": f"/api/v1/grants/{g.id}/records"})

    def _status(self, grant: Any) -> str:
        return grant_state(grant).status


class RecordsQuery(Schema):
    """Optional time window on the datasets' time field, half-open: [since, until)."""

    since = UtcDateTime(load_default=None)
    until = UtcDateTime(load_default=None)

    @validates_schema
    def _window(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        if data.get("since") and data.get("until") and data["until"] <= data["since"]:
            raise ValidationError("Must be after `since`.", "until")


class ReasonIn(Schema):
    """The committee's decision on a request or a grant, always with its reason."""

    reason = fields.String(required=True, validate=validate.Length(1, 2000))


class NoticeOut(Schema):
    """A notice owed to an organisation, with its delivery state."""

    id = fields.UUID()
    kind = fields.String()
    consent = fields.UUID(attribute="consent_id")
    purpose = fields.String(attribute="purpose_id")
    organisation = fields.Function(lambda n: n.organisation.slug)
    status = fields.Function(lambda n: n.status.value)
    attempts = fields.Integer()
    next_attempt_at = fields.AwareDateTime()
    last_attempt_at = fields.AwareDateTime(allow_none=True)
    last_error = fields.String(allow_none=True)
    delivered_at = fields.AwareDateTime(allow_none=True)
    deletion_confirmed_at = fields.AwareDateTime(allow_none=True)
    created_at = fields.AwareDateTime()


class NoticeQuery(Schema):
    status = fields.String(
        load_default=None, validate=validate.OneOf(["pending", "delivered", "dead"])
    )
