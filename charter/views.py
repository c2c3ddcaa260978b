"""The charter in plain language, for citizens: every purpose, and the exact notice of one.

The notice shown on a purpose's page is `charter.notice.notice_text` verbatim: its hash is what a
consent records as proof that the citizen was shown it.
"""

from __future__ import annotations

from flask import Blueprint, abort, render_template

from charter import document, service
from charter.notice import notice_text
from common.db import get_session
from common.portal import select_locale

bp = Blueprint("charter_portal", __name__, url_prefix="/charter", template_folder="templates")


@bp.get("")
def index() -> str:
    """The charter in force: territory, version, and one card per purpose."""
    charter = service.current_or_none(get_session())
    if charter is None:
        return render_template("charter/none.html")
    return render_template("charter/index.html", charter=charter, lang=select_locale())


@bp.get("/<purpose_id>")
def purpose(purpose_id: str) -> str | tuple[str, int]:
    """One purpose in full, with the notice a citizen reads before consenting."""
    charter = service.current_or_none(get_session())
    if charter is None:
        return render_template("charter/none.html"), 404
    found = charter.doc.purpose(purpose_id)
    if found is None:
        abort(404)
    lang = select_locale()
    return render_template(
        "charter/purpose.html",
        charter=charter,
        purpose=found,
        lang=lang,
        notice=notice_text(charter.doc, found, lang),
        terms_hash=document.terms_hash(found),
    )
