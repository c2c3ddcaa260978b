"""Service-level endpoints: health and the public keys that verify our signatures."""

from __future__ import annotations

from datetime import timedelta

from flask import Response, current_app, jsonify
from flask_smorest import Blueprint

from common.keyring import app_keyring

blp = Blueprint("service", __name__, url_prefix="/", description="Health and public keys")


@blp.get("/api/v1/health")
def health() -> Response:
    # Does nothing on purpose: the baseline of bench/consent_writes.py.
    return jsonify(status="ok")


@blp.get("/.well-known/jwks.json")
def jwks() -> Response:
    days = current_app.config["RECEIPT_KEY_PUBLISH_DAYS"]
    response = jsonify(app_keyring().jwks(publish_for=timedelta(days=days)))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
