"""HTTP shapes of the charter API."""

from __future__ import annotations

from marshmallow import Schema, fields


class CharterVersionSummaryOut(Schema):
    version = fields.String()
    sha256 = fields.String()
    effective_from = fields.Date()
    published_at = fields.AwareDateTime()
    supersede_grace_days = fields.Integer()


class CharterOut(CharterVersionSummaryOut):
    terms_hashes = fields.Dict(keys=fields.String(), values=fields.String())
    notice_hashes = fields.Dict(
        keys=fields.String(), values=fields.Dict(keys=fields.String(), values=fields.String())
    )
    document = fields.Dict()
    links = fields.Dict(keys=fields.String(), values=fields.String())
