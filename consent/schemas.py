"""HTTP shapes of the consent API and portal forms (services never import this module)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from consent.models import ConsentStatus, EventType, Mode

HASH = validate.Regexp(r"^[0-9a-f]{64}$", error="A lowercase hex SHA-256.")
ID = validate.Regexp(r"^[a-z0-9][a-z0-9._-]{0,63}$", error="A lowercase identifier.")


class GiveConsentIn(Schema):
    purpose_id = fields.String(required=True, validate=ID)
    terms_hash = fields.String(required=True, validate=HASH)
    recipient_id = fields.String(required=True, validate=ID)
    language = fields.String(load_default="fr", validate=validate.OneOf(["fr", "en"]))
    mode = fields.Enum(Mode, by_value=True, load_default=None)
    data_categories = fields.List(
        fields.String(validate=validate.Length(1, 64)),
        load_default=list,
        validate=validate.Length(max=32),
    )
    datasets = fields.List(
        fields.String(validate=ID), load_default=list, validate=validate.Length(max=32)
    )
    duration_days = fields.Integer(load_default=None, validate=validate.Range(1, 3650), strict=True)
    notice_hash = fields.String(load_default=None, validate=HASH)


class RenewConsentIn(Schema):
    terms_hash = fields.String(required=True, validate=HASH)
    language = fields.String(load_default="fr", validate=validate.OneOf(["fr", "en"]))
    duration_days = fields.Integer(load_default=None, validate=validate.Range(1, 3650), strict=True)
    notice_hash = fields.String(load_default=None, validate=HASH)


class GiveConsentForm(GiveConsentIn):
    """The portal's give form: the purpose comes from the URL, numbers arrive as text."""

    purpose_id = fields.String(load_default=None, validate=ID)
    duration_days = fields.Integer(load_default=None, validate=validate.Range(1, 3650))


class RenewConsentForm(RenewConsentIn):
    """The portal's renew button: numbers arrive as text."""

    duration_days = fields.Integer(load_default=None, validate=validate.Range(1, 3650))


class ConsentQuery(Schema):
    status = fields.Enum(ConsentStatus, by_value=True, load_default=None)


class ConsentEventOut(Schema):
    seq = fields.Integer()
    type = fields.Enum(EventType, by_value=True)
    method = fields.String()
    actor = fields.String()
    occurred_at = fields.AwareDateTime()
    charter_version = fields.String()
    terms_hash = fields.String()
    expires_at = fields.AwareDateTime()


class ConsentOut(Schema):
    id = fields.UUID()
    subject_id = fields.UUID()
    purpose_id = fields.String()
    charter_version = fields.String()
    terms_hash = fields.String()
    notice_hash = fields.String()
    language = fields.String()
    recipient = fields.Function(lambda c: {"kind": c.recipient_kind.value, "id": c.recipient_id})
    mode = fields.Enum(Mode, by_value=True)
    data_categories = fields.List(fields.String())
    datasets = fields.List(fields.String())
    legal_basis = fields.String()
    method = fields.String()
    status = fields.Enum(ConsentStatus, by_value=True)
    given_at = fields.AwareDateTime()
    expires_at = fields.AwareDateTime()
    withdrawn_at = fields.AwareDateTime(allow_none=True)
    links = fields.Function(
        lambda c: {
            "receipt": f"/api/v1/consents/{c.id}/receipt",
            "history": f"/api/v1/consents/{c.id}/history",
            "jsonld": f"/api/v1/consents/{c.id}/jsonld",
        }
    )


class ConsentWithHistoryOut(ConsentOut):
    events = fields.List(fields.Nested(ConsentEventOut))


class SessionOut(Schema):
    subject_id = fields.UUID()
    language = fields.String()
    csrf_token = fields.String()


# Portal forms (validated with the same library as the API).
class SignUpForm(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(required=True, validate=validate.Length(12, 256))
    password_again = fields.String(required=True)


class SignInForm(Schema):
    email = fields.String(required=True, validate=validate.Length(1, 254))
    password = fields.String(required=True, validate=validate.Length(1, 256))


class CloseAccountForm(Schema):
    password = fields.String(required=True, validate=validate.Length(1, 256))
