"""REST API of differentially private releases: make one, read one, see the budgets left.

Only observatories and city services ask for releases; an organisation sees its own releases
only (another's answers 404). Asking needs `releases:write`, since it spends privacy budget;
reading needs `releases:read`. The release and its audit entry commit together or not at all.
"""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

from flask import Response, current_app

from anonymize import charts, service
from anonymize.schemas import BudgetsOut, ReleaseIn, ReleaseOut
from common.auth import current_token, require_oauth
from common.db import get_session, unit_of_work
from common.errors import ForbiddenError
from common.http import ApiBlueprint

blp = ApiBlueprint(
    "releases",
    __name__,
    url_prefix="/api/v1",
    description="Differentially private statistics and the privacy budget they spend",
)
# The app puts here who holds an aggregate grant (service.ReleaseGrants); none: no release.
GRANTS_EXTENSION = "anonymize.release_grants"


def _requester() -> service.Requester:
    token = current_token()
    if token is None or token.role not in service.STATISTICS_ROLES:
        raise ForbiddenError("Only observatories and city services receive statistics.")
    return service.Requester(
        organisation_id=token.organisation_id,
        client_id=token.client_id,
        recipients=token.recipients,
    )


@blp.post("/releases")
@require_oauth("releases:write")  # spends privacy budget: not for a token that only reads
@blp.arguments(ReleaseIn)
@blp.response(201, ReleaseOut)
@blp.alt_response(200, schema=ReleaseOut, description="The same request, served again free")
def create_release(spec: service.ReleaseSpec) -> Any:
    requester = _requester()
    grants = current_app.extensions.get(GRANTS_EXTENSION, service.no_grants)
    with unit_of_work() as session:
        made, new = service.release(session, spec, requester, grants=grants)
    return made, 201 if new else 200


@blp.get("/releases")
@require_oauth("releases:read")
@blp.response(200, ReleaseOut(many=True))
def list_releases() -> Any:
    return service.list_releases(get_session(), _requester())


@blp.get("/releases/<uuid:release_id>")
@require_oauth("releases:read")
@blp.response(200, ReleaseOut)
def get_release(release_id: uuid.UUID) -> Any:
    return service.get_release(get_session(), release_id, _requester())


@blp.get("/releases/<uuid:release_id>/csv")
@require_oauth("releases:read")
@blp.response(200, content_type="text/csv")
def get_release_csv(release_id: uuid.UUID) -> Response:
    found = service.get_release(get_session(), release_id, _requester())
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(service.csv_rows(found))
    response = Response(out.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="release-{found.id}.csv"'
    return response


@blp.get("/releases/<uuid:release_id>/chart.svg")
@require_oauth("releases:read")
@blp.response(200, content_type="image/svg+xml")
def get_release_chart(release_id: uuid.UUID) -> Response:
    found = service.get_release(get_session(), release_id, _requester())
    body = charts.error_bars(found.result, title=f"Release {found.id} ({found.period})")
    return Response(body, mimetype="image/svg+xml")


@blp.get("/budgets")
@require_oauth("releases:read")
@blp.response(200, BudgetsOut)
def get_budgets() -> dict[str, Any]:
    found = service.budgets(get_session(), _requester())

    def out(balance: Any) -> dict[str, Any]:
        return {
            "kind": balance.key.kind,
            "cap": balance.cap,
            "spent": balance.spent,
            "remaining": balance.remaining,
            "epsilon_spent": service.epsilon_at(balance.spent),
        }

    return {
        "period": found.period,
        "rho_cap_per_release": found.rho_cap_per_release,
        "min_cohort": found.min_cohort,
        "delta": found.delta,
        "population": out(found.population),
        "reuser": out(found.reuser),
    }
