"""Portal pages of statistics.

- `/statistics`: the public privacy statement (the privacy unit, the budget and what is left
  of it this period, how noise, bounds and suppression protect each citizen). Public: every
  figure depends on the charter and on releases' parameters, never on data.
- `/statistics/releases…`: an observatory's (or a city service's) releases, for the portal
  accounts acting for it (`tiers member add`): a chart with error bars (a small histogram
  per cell for a histogram), a tile map by area, the table of every cell (and bin, or q),
  CSV and JSON downloads, and the budget left. Another
  organisation's release answers 404, like one that does not exist.
- `/statistics/me`: how many releases a citizen's data went into this period, and the
  privacy loss they spent, in plain words.

Which organisation a portal account acts for is the broker's to know; broker/app.py installs
the answer as `app.extensions[REQUESTER_EXTENSION]` (anonymize imports no broker).
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, g, render_template
from flask_babel import gettext as _
from sqlalchemy.orm import Session

from anonymize import charts, maps, service, tables
from anonymize.schemas import ReleaseOut
from charter import service as charters
from common.auth import citizen_required, current_citizen
from common.db import get_session
from common.errors import ForbiddenError
from common.portal import select_locale

bp = Blueprint("statistics", __name__, url_prefix="/statistics", template_folder="templates")

# broker/app.py puts here: (session, citizen id) -> the Requester it acts for, or None.
REQUESTER_EXTENSION = "anonymize.portal_requester"
PortalRequester = Callable[[Session, uuid.UUID], service.Requester | None]
F = TypeVar("F", bound=Callable[..., Any])
MAX_MAPS = 12  # maps drawn on one page; the table and downloads have every cell
MAX_HISTOGRAMS = 12  # small histograms drawn on one page; likewise


def _nobody(session: Session, citizen_id: uuid.UUID) -> service.Requester | None:
    """The fail-closed default: without the broker's answer, nobody sees releases."""
    return None


def _requester_of(citizen_id: uuid.UUID) -> service.Requester | None:
    """The organisation this portal account acts for on statistics, as the app wired it
    (broker's memberships); nobody when nothing is wired."""
    lookup: PortalRequester = current_app.extensions.get(REQUESTER_EXTENSION, _nobody)
    return lookup(get_session(), citizen_id)


def member_required(view: F) -> F:
    """A signed-in portal account acting for an organisation that receives statistics, else
    the sign-in page (anonymous) or 403 (anyone else); `g.requester` is that organisation."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        citizen = current_citizen()
        assert citizen is not None  # noqa: S101 (citizen_required runs first)
        requester = _requester_of(citizen.id)
        if requester is None:
            raise ForbiddenError(
                _("Ces pages sont réservées aux observatoires et aux services de la ville.")
            )
        g.requester = requester
        return view(*args, **kwargs)

    return citizen_required(wrapped)  # type: ignore[return-value]


@bp.app_context_processor
def _portal_context() -> dict[str, Any]:
    """`acts_for_statistics()` for the navigation: asked only when a page shows it."""

    def acts_for_statistics() -> bool:
        citizen = current_citizen()
        return citizen is not None and _requester_of(citizen.id) is not None

    return {"acts_for_statistics": acts_for_statistics, "rho_text": rho_text}


def rho_text(value: Decimal) -> str:
    """An exact ledger figure without its trailing zeros (0.200000000000 reads 0.2)."""
    return format(Decimal(value).normalize(), "f")


def _private(response: Response) -> Response:
    # An organisation's statistics: never kept by a shared cache.
    response.headers["Cache-Control"] = "no-store"
    return response


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


@bp.get("/releases")
@member_required
def releases() -> Response:
    session = get_session()
    page = render_template(
        "anonymize/releases.html",
        releases=service.list_releases(session, g.requester),
        budgets=service.budgets(session, g.requester),
        epsilon_at=service.epsilon_at,
    )
    return _private(Response(page))


def _words() -> maps.Words:
    return maps.Words(
        suppressed=_("masqué (trop peu de personnes)"),
        low_accuracy=_("peu précis : l'intervalle est plus large que la valeur"),
        interval=_("intervalle à 95 %"),
        legend=_("Légende"),
        no_value=_("aucune valeur"),
    )


def _maps(found: service.Release) -> dict[str, Any] | None:
    """The release's tile maps, one per time bucket (and category), on one shared scale;
    None when it is not by area or carries no single value per cell."""
    result = found.result
    partition_name = found.spec.get("partition")
    area_ids = (result.get("keys") or {}).get("area")
    measure = maps.measure_of(result)
    if not partition_name or not area_ids or measure is None:
        return None
    charter = charters.current_or_none(get_session())
    partition = charter.doc.territory.partitions.get(partition_name) if charter else None
    areas = maps.layout(area_ids, partition)
    scale = maps.scale_of(result, measure)
    words = _words()
    unit = "" if measure == "count" else str(result.get("unit") or "")
    drawn = []
    every = maps.slices(result)
    for index, (time, category) in enumerate(every[:MAX_MAPS]):
        label = " · ".join(k for k in (time, category) if k)
        drawn.append(
            {
                "label": label,
                "svg": maps.tile_map(
                    result,
                    areas,
                    time=time,
                    category=category,
                    measure=measure,
                    scale=scale,
                    title=_("%(measure)s par zone — %(slice)s", measure=measure, slice=label),
                    desc=_(
                        "Carte en tuiles : une case par zone, plus foncée quand la valeur est "
                        "plus grande ; les zones masquées sont hachurées, les valeurs peu "
                        "précises ne sont pas colorées. Le tableau ci-dessous donne chaque valeur."
                    ),
                    ident=f"map-{index}",
                    words=words,
                ),
            }
        )
    legend = maps.legend(
        scale, unit=unit, title=_("Légende des cartes"), ident="map-legend", words=words
    )
    return {"maps": drawn, "legend": legend, "hidden": max(len(every) - MAX_MAPS, 0)}


def _chart(found: service.Release, title: str) -> dict[str, Any]:
    """The release's chart: error bars (`svg`), the quantiles with their bins, or for a
    histogram the first cells' small histograms on one shared scale (`histograms`)."""
    result = found.result
    measure = result.get("measure")
    if measure == "quantile":
        desc = _(
            "Chaque ligne est un quantile d'une case : le point est la valeur publiée, le "
            "trait la classe de l'histogramme bruité où elle tombe (son incertitude, pas un "
            "intervalle de confiance). Le tableau ci-dessous donne chaque valeur."
        )
        return {"svg": charts.quantile_bars(result, title=title, desc=desc)}
    if measure != "histogram" or "bins" not in result:
        desc = _(
            "Chaque ligne est une case : le point est la valeur publiée, le trait son "
            "intervalle à 95 %. Le tableau ci-dessous donne chaque valeur."
        )
        return {"svg": charts.error_bars(result, title=title, desc=desc)}
    cells = result["cells"][:MAX_HISTOGRAMS]
    scale = charts.histogram_range(cells)
    words = _words()
    drawn = []
    for index, cell in enumerate(cells):
        label = charts.cell_label(cell)
        drawn.append(
            {
                "label": label,
                "svg": charts.histogram(
                    result,
                    cell,
                    scale=scale,
                    title=_("Histogramme — %(cell)s", cell=label),
                    desc=_(
                        "Une barre par classe : sa hauteur est le nombre bruité de personnes "
                        "dont la valeur tombe dans la classe, le trait vertical son intervalle "
                        "à 95 %. Le tableau ci-dessous donne chaque valeur."
                    ),
                    ident=f"histogram-{index}",
                    words=words,
                ),
            }
        )
    return {"histograms": drawn, "hidden": max(len(result["cells"]) - MAX_HISTOGRAMS, 0)}


@bp.get("/releases/<uuid:release_id>")
@member_required
def release(release_id: uuid.UUID) -> Response:
    session = get_session()
    found = service.get_release(session, release_id, g.requester)
    title = _("Statistique %(id)s (%(period)s)", id=str(found.id)[:8], period=found.period)
    page = render_template(
        "anonymize/release.html",
        release=found,
        result=found.result,
        chart=_chart(found, title),
        mapped=_maps(found),
        measures=tables.measures(found.result),
        rows=tables.rows(found.result),
        bin_rows=tables.bin_rows(found.result),
        quantile_rows=tables.quantile_rows(found.result),
        budgets=service.budgets(session, g.requester),
        epsilon_at=service.epsilon_at,
    )
    return _private(Response(page))


@bp.get("/releases/<uuid:release_id>.csv")
@member_required
def release_csv(release_id: uuid.UUID) -> Response:
    found = service.get_release(get_session(), release_id, g.requester)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(service.csv_rows(found))
    response = Response(out.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="release-{found.id}.csv"'
    return _private(response)


@bp.get("/releases/<uuid:release_id>.json")
@member_required
def release_json(release_id: uuid.UUID) -> Response:
    found = service.get_release(get_session(), release_id, g.requester)
    body = json.dumps(ReleaseOut().dump(found), ensure_ascii=False, indent=2)
    response = Response(body + "\n", mimetype="application/json")
    response.headers["Content-Disposition"] = f'attachment; filename="release-{found.id}.json"'
    return _private(response)


@bp.get("/me")
@citizen_required
def mine() -> Response:
    citizen = current_citizen()
    assert citizen is not None  # noqa: S101 (citizen_required)
    session = get_session()
    page = render_template(
        "anonymize/mine.html",
        mine=service.contributions(session, citizen.subject_id),
        ledger=service.public_ledger(session),
        epsilon_at=service.epsilon_at,
        delta=service.DELTA,
    )
    return _private(Response(page))
