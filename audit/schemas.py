"""HTTP shapes of the access log API. Hashes and leaves travel as standard base64 (RFC 4648
§4), as C2SP checkpoints and tlog-proofs write them."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

# Indices and sizes are bigints in the database: larger numbers are refused as input.
_MAX_INDEX = 2**62


class InclusionQuery(Schema):
    index = fields.Integer(required=True, validate=validate.Range(0, _MAX_INDEX))
    size = fields.Integer(required=True, validate=validate.Range(1, _MAX_INDEX))


class ConsistencyQuery(Schema):
    first = fields.Integer(data_key="from", required=True, validate=validate.Range(1, _MAX_INDEX))
    second = fields.Integer(data_key="to", required=True, validate=validate.Range(1, _MAX_INDEX))


class EntriesQuery(Schema):
    """Paging by log index, and filters (all optional; checked by audit.service.browse):
    `since`/`until` (ISO 8601 date or date-time, UTC if naive; a date `until` is inclusive),
    `actor`, `organisation` (slug), `event` (a name or a `package:subject` prefix), `dataset`,
    `purpose`, `subject` (a subject tag). Any other parameter is refused."""

    start = fields.Integer(load_default=0, validate=validate.Range(0, _MAX_INDEX))
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))
    since = fields.String(validate=validate.Length(max=40))
    until = fields.String(validate=validate.Length(max=40))
    actor = fields.String(validate=validate.Length(max=128))
    organisation = fields.String(validate=validate.Length(max=64))
    event = fields.String(validate=validate.Length(max=64))
    dataset = fields.String(validate=validate.Length(max=64))
    purpose = fields.String(validate=validate.Length(max=64))
    subject = fields.String(validate=validate.Length(max=64))


class InclusionProofOut(Schema):
    index = fields.Integer()
    size = fields.Integer()
    leaf_hash = fields.String()
    root = fields.String()  # of the tree of `size` leaves: check it against a signed checkpoint
    proof = fields.List(fields.String())


class ConsistencyProofOut(Schema):
    first = fields.Integer(data_key="from")
    second = fields.Integer(data_key="to")
    first_root = fields.String(data_key="from_root")
    second_root = fields.String(data_key="to_root")
    proof = fields.List(fields.String())


class LeafOut(Schema):
    index = fields.Integer()
    leaf = fields.String()  # the RFC 8785 JSON bytes, base64: hash them as they are


class EntriesOut(Schema):
    size = fields.Integer()  # the latest signed checkpoint's size: entries stop there
    start = fields.Integer()
    next = fields.Integer(allow_none=True)
    entries = fields.List(fields.Nested(LeafOut))
