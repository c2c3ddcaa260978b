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
    start = fields.Integer(load_default=0, validate=validate.Range(0, _MAX_INDEX))
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))


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
