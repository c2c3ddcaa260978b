"""The charter, public: current version, any version, its ODRL 2.2 form."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app

from charter import service
from charter.notice import notice_hash
from charter.schemas import CharterOut, CharterVersionSummaryOut
from common.auth import public
from common.db import get_session
from common.http import ApiBlueprint, jsonld_response

blp = ApiBlueprint("charter", __name__, url_prefix="/api/v1/charter", description="The charter")


def _out(charter: service.Charter) -> dict[str, Any]:
    row = charter.row
    return {
        "version": row.version,
        "sha256": row.sha256,
        "effective_from": row.effective_from,
        "published_at": row.published_at,
        "supersede_grace_days": row.supersede_grace_days,
        "terms_hashes": row.terms_hashes,
        # What a client must show before giving a consent, per language (its proof).
        "notice_hashes": {
            p.id: {lang: notice_hash(charter.doc, p, lang) for lang in ("fr", "en")}
            for p in charter.doc.purposes
        },
        "document": row.document,
        "links": {
            "self": f"/api/v1/charter/versions/{row.version}",
            "odrl": f"/api/v1/charter/versions/{row.version}/odrl",
        },
    }


@blp.get("")
@public
@blp.response(200, CharterOut)
def current_charter() -> dict[str, Any]:
    return _out(service.current(get_session()))


@blp.get("/versions")
@public
@blp.response(200, CharterVersionSummaryOut(many=True))
def list_versions() -> list[Any]:
    return service.versions(get_session())


@blp.get("/versions/<string:version>")
@public
@blp.response(200, CharterOut)
def get_version(version: str) -> dict[str, Any]:
    return _out(service.get_version(get_session(), version))


@blp.get("/versions/<string:version>/odrl")
@public
@blp.response(200, content_type="application/ld+json")
def get_odrl(version: str) -> Response:
    document = service.odrl(get_session(), version, base_url=current_app.config["ISSUER"])
    return jsonld_response(document)
