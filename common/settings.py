"""Read settings of the running app, and derive purpose-bound keys from SECRET_KEY."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from flask import current_app


def setting(name: str) -> Any:
    """One setting of the current app (broker/config.py lists them all)."""
    return current_app.config[name]


def derived_key(purpose: str) -> bytes:
    """A key for one purpose only, so a leak of one use never exposes another."""
    secret = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(secret, f"tiers/{purpose}".encode(), hashlib.sha256).digest()


def keyed_tag(purpose: str, value: str) -> str:
    """A keyed HMAC of `value`: stable lookups and log tags without the value in clear."""
    return hmac.new(derived_key(purpose), value.encode(), hashlib.sha256).hexdigest()
