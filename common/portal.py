"""Portal plumbing: the language of each request (French first), template helpers, and the
posted-form helpers every package's views.py uses (one copy, so every portal page reports a
form's errors the same way)."""

from __future__ import annotations

from typing import Any

from flask import Flask, request, session
from flask_babel import Babel, format_date, format_datetime
from marshmallow import Schema, ValidationError
from marshmallow.fields import List

from common.auth import current_citizen
from common.errors import DomainError


def select_locale() -> str:
    """An explicit choice (session) wins, then the citizen's account, then French."""
    chosen = session.get("lang")
    if chosen in ("fr", "en"):
        return str(chosen)
    citizen = current_citizen() if request else None
    if citizen is not None and citizen.language in ("fr", "en"):
        return citizen.language
    return "fr"


def init_app(app: Flask, translations_dir: str) -> None:
    """Babel with our translations, and `citizen` / `lang` in every template."""
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = translations_dir
    Babel(app, locale_selector=select_locale)

    app.jinja_env.filters["format_date"] = lambda value: format_date(value, "long")
    app.jinja_env.filters["format_datetime"] = lambda value: format_datetime(value, "medium")

    @app.context_processor
    def _portal_context() -> dict[str, Any]:
        return {"citizen": current_citizen(), "lang": select_locale()}


def load_form(schema: Schema) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Load the posted form with `schema`: `(data, {})`, or `({}, field -> messages)`.

    List fields read every value of their name; the CSRF token and unknown names are left out.
    """
    raw = {
        name: request.form.getlist(name) if isinstance(schema.fields.get(name), List) else value
        for name, value in request.form.items()
        if name != "csrf_token"
    }
    try:
        return schema.load(raw, unknown="exclude"), {}
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_": exc.messages}
        return {}, {str(name): flat_messages(found) for name, found in messages.items()}


def flat_messages(value: Any) -> list[str]:
    """marshmallow's messages of one field as a flat list: a list field's are a dict by item
    index (`{0: ["Not a valid URL."]}`), a nested schema's a dict by field name."""
    if isinstance(value, dict):
        return [message for found in value.values() for message in flat_messages(found)]
    if isinstance(value, list):
        return [message for found in value for message in flat_messages(found)]
    return [str(value)]


def form_errors(exc: DomainError) -> dict[str, list[str]]:
    """A service's refusal as a form's errors: its per-field messages, else its detail."""
    return exc.fields or {"_": [exc.detail]}
