"""Portal pages of the access log: the auditors' browser (filters, pages, CSV, what is
verified) and the citizen's "who accessed my data", with a receipt per entry.

Server-rendered; the pages only read, except the CSV export, which logs itself in its own unit
of work. Bad filters re-render the form with their messages (422), never a 500.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, current_app, g, make_response, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from audit import service
from audit.service import browse
from common.auth import citizen_required, current_citizen, current_subject_id
from common.db import get_session, unit_of_work
from common.errors import ConflictError, ForbiddenError, InvalidInputError
from common.portal import select_locale

bp = Blueprint("audit_portal", __name__, template_folder="templates")

F = TypeVar("F", bound=Callable[..., Any])


def _directory() -> browse.Directory | None:
    directory: browse.Directory | None = current_app.extensions.get("audit.directory")
    return directory


def auditor_required(view: F) -> F:
    """A signed-in auditor (`tiers auditor add`) or committee member, else the sign-in page
    (anonymous) or 403 (any other citizen)."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        citizen = current_citizen()
        assert citizen is not None  # noqa: S101 (citizen_required runs first)
        session = get_session()
        account = browse.auditor_account(session, citizen.id)
        directory = _directory()
        member = directory.committee_member(session, citizen.id) if directory else None
        # The log names them by their role's row, never by e-mail (shared/DESIGN.md).
        if account is not None:
            g.audit_actor = f"auditor:{account.id}"
        elif member is not None:
            g.audit_actor = f"committee:{member}"
        else:
            raise ForbiddenError(_("Ces pages sont réservées aux auditeurs du journal."))
        return view(*args, **kwargs)

    return citizen_required(wrapped)  # type: ignore[return-value]


def _query() -> tuple[dict[str, str], str | None]:
    raw = {k: v for k, v in request.args.items() if k != "page"}
    return raw, request.args.get("page")


def _page_number(value: str | None) -> int:
    if value is None or value == "":
        return 1
    # isascii: str.isdigit() also takes "²" and "①", which int() refuses.
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= browse.MAX_PAGE:
        raise InvalidInputError(
            "No such page.", fields={"page": [_("Un numéro de page est un entier positif.")]}
        )
    return int(value)


def _filters_page(errors: dict[str, list[str]], given: dict[str, str], status: int) -> Any:
    return render_template(
        "audit/log.html",
        errors=errors,
        given=given,
        page=None,
        names={},
        events=browse.known_events(get_session()),
    ), status


@bp.get("/audit/")
@auditor_required
def log() -> Any:
    session = get_session()
    raw, page_value = _query()
    try:
        filters = browse.parse_filters(session, raw, _directory())
        found = browse.browse(session, filters, page=_page_number(page_value))
    except InvalidInputError as exc:
        return _filters_page(exc.fields or {"_": [exc.detail]}, raw, 422)
    directory = _directory()
    names = directory.names(session, {r.actor for r in found.rows}) if directory else {}
    return render_template(
        "audit/log.html",
        errors={},
        given=filters.given,
        page=found,
        names=names,
        events=browse.known_events(session),
    )


@bp.post("/audit/export.csv")
@auditor_required
def export_csv() -> Any:
    # A POST with the CSRF token: the export is itself logged, so a link from another site
    # must not be able to write that entry in an auditor's name.
    raw = {k: v for k, v in request.form.items() if k != "csrf_token"}
    try:
        with unit_of_work() as session:
            filters = browse.parse_filters(session, raw, _directory())
            body = browse.to_csv(session, filters, _directory())
            # Exporting the log is itself an event an auditor of auditors wants to see.
            service.append(
                session,
                event="audit:log:export",
                actor=g.audit_actor,
                detail={"filters": filters.given},
            )
    except InvalidInputError as exc:
        return _filters_page(exc.fields or {"_": [exc.detail]}, raw, 422)
    response = make_response(body)
    response.mimetype = "text/csv"
    response.headers["Content-Disposition"] = 'attachment; filename="tiers-audit-log.csv"'
    response.headers["Cache-Control"] = "no-store"
    return response


# --- the citizen's own log ------------------------------------------------------------


@bp.get("/me/access-log")
@citizen_required
def my_log() -> str:
    session = get_session()
    found = browse.citizen_page(
        session,
        current_subject_id(),
        _directory(),
        select_locale(),
        page=_page_number(request.args.get("page")),
    )
    verification = browse.verify_rows(session, [e.entry for e in found.entries])
    return render_template(
        "audit/my_log.html",
        entries=found.entries,
        page=found,
        verification=verification,
        receipt_url=lambda entry_id: url_for("audit_portal.my_receipt", entry_id=entry_id),
    )


@bp.get("/me/access-log/<uuid:entry_id>/receipt")
@citizen_required
def my_receipt(entry_id: uuid.UUID) -> Response:
    session = get_session()
    entry = browse.citizen_entry(session, current_subject_id(), entry_id)
    receipt = service.receipt(session, entry.id)
    if receipt is None:
        raise ConflictError(
            _("Cette entrée n'est pas encore scellée : réessayez dans quelques secondes.")
        )
    response = make_response(receipt)
    response.mimetype = "text/plain"
    response.headers["Content-Disposition"] = f'attachment; filename="tiers-receipt-{entry.id}.txt"'
    response.headers["Cache-Control"] = "no-store"
    return response
