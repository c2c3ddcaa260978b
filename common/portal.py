"""Portal plumbing: the language of each request (French first) and template helpers."""

from __future__ import annotations

from typing import Any

from flask import Flask, request, session
from flask_babel import Babel, format_date, format_datetime

from common.auth import current_citizen


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
