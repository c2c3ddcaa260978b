"""The public privacy statement of statistics: the privacy unit, the budget and what is left
of it this period, and how noise, bounds and suppression protect each citizen.

Public: every figure depends on the charter and on releases' parameters, never on data.
"""

from __future__ import annotations

from flask import Blueprint, render_template

from anonymize import service
from common.db import get_session
from common.portal import select_locale

bp = Blueprint("statistics", __name__, url_prefix="/statistics", template_folder="templates")


@bp.get("")
def privacy() -> str | tuple[str, int]:
    ledger = service.public_ledger(get_session())
    if ledger is None:
        return render_template("anonymize/privacy.html", ledger=None, lang=select_locale()), 404
    privacy = ledger.charter.doc.privacy
    spent = ledger.population.spent
    return render_template(
        "anonymize/privacy.html",
        ledger=ledger,
        privacy=privacy,
        lang=select_locale(),
        used_percent=float(spent / privacy.rho_per_period * 100),
        epsilon_period=service.epsilon_at(privacy.rho_per_period),
        epsilon_release=service.epsilon_at(privacy.rho_cap_per_release),
        epsilon_spent=service.epsilon_at(spent),
        delta=service.DELTA,
    )
