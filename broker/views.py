"""The portal shell: the home page, the language switch, and what every page's header shows.

Templates and the stylesheet live in broker/templates and broker/static, which are the app's
own folders (broker/app.py builds `Flask("broker.app")`, rooted at broker/), so the app itself
serves /static/tiers.css and this blueprint needs no static folder of its own.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, abort, g, redirect, render_template, request, session, url_for
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response

from charter import service as charter_service
from charter.service import Charter
from common.auth import current_citizen, safe_next
from common.db import get_session, unit_of_work
from consent import accounts

log = logging.getLogger(__name__)

LANGUAGES = ("fr", "en")

bp = Blueprint("portal", __name__, template_folder="templates")


def current_charter() -> Charter | None:
    """The charter in force, or None when none is published (looked up once per request)."""
    if "portal_charter" not in g:
        g.portal_charter = charter_service.current_or_none(get_session())
    charter: Charter | None = g.portal_charter
    return charter


@bp.app_context_processor
def _territory() -> dict[str, Any]:
    """Every page's header names the territory of the charter in force, when there is one."""
    try:
        charter = current_charter()
    except SQLAlchemyError:
        # An error page must render even when the database is what failed.
        log.warning("could not read the current charter for the page header", exc_info=True)
        return {"territory_name": None}
    return {"territory_name": charter.doc.territory.name if charter else None}


@bp.get("/")
def home() -> str:
    """What Tiers is, in plain words, and where to go next."""
    return render_template("home.html", charter=current_charter())


@bp.post("/language")
def set_language() -> Response:
    """Switch the portal language; remembered on the account when a citizen is signed in."""
    lang = request.form.get("lang", "")
    if lang not in LANGUAGES:
        abort(400)
    session["lang"] = lang
    citizen = current_citizen()
    if citizen is not None:
        with unit_of_work() as db_session:
            accounts.set_language(db_session, citizen.id, lang)
    return redirect(safe_next(request.form.get("next"), url_for("portal.home")))
