"""The portal shell: the home page, the language switch, what every page's header shows, the
public catalogue of datasets, and the charter committee's admin pages (organisations, their
OAuth2 clients, datasets and the health of their services).

Templates and the stylesheet live in broker/templates and broker/static, which are the app's
own folders (broker/app.py builds `Flask("broker.app")`, rooted at broker/), so the app itself
serves /static/tiers.css and this blueprint needs no static folder of its own.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from broker.models import AuthMethod, Health, Role
from broker.schemas import (
    ClientForm,
    InitialAccessTokenForm,
    OrganisationEditForm,
    OrganisationForm,
    ReasonIn,
)
from broker.service import access, catalog, clients, datasets, notices, organisations, scopes
from charter import service as charter_service
from charter.service import Charter
from common.auth import citizen_required, current_citizen, safe_next
from common.db import get_session, unit_of_work
from common.errors import ConflictError, ForbiddenError, InvalidInputError
from common.portal import form_errors, load_form
from common.tasks import celery_app
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


# --- the charter committee's admin pages ------------------------------------------------
# Organisations and their clients. Only committee members (`tiers committee add`) get in;
# secrets and initial access tokens are shown once, on the page that creates them, and the
# page is never cached.

ROLE_LABELS = {
    Role.HOLDER: _l("Détenteur de données"),
    Role.REUSER: _l("Réutilisateur"),
    Role.OBSERVATORY: _l("Observatoire"),
    Role.CITY_SERVICE: _l("Service de la collectivité"),
    Role.AUDITOR: _l("Auditeur"),
    Role.COMMITTEE: _l("Comité de la charte"),
}
AUTH_METHOD_LABELS = {
    AuthMethod.CLIENT_SECRET_BASIC: _l("Secret partagé (client_secret_basic)"),
    AuthMethod.PRIVATE_KEY_JWT: _l("Clé privée (private_key_jwt, RFC 7523)"),
    AuthMethod.NONE: _l("Client public (application native, PKCE)"),
}


@bp.app_template_global()
def role_label(role: str) -> str:
    """The committee's words for an organisation's role."""
    try:
        return str(ROLE_LABELS[Role(role)])
    except ValueError:
        return role


F = TypeVar("F", bound=Callable[..., Any])


def committee_required(view: F) -> F:
    """A signed-in committee member, else the sign-in page (anonymous) or 403 (anyone else)."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        citizen = current_citizen()
        assert citizen is not None  # noqa: S101 (citizen_required runs first)
        member = organisations.get_committee_member(get_session(), citizen.id)
        if member is None:
            raise ForbiddenError(_("Ces pages sont réservées au comité de la charte."))
        # The log names the member by their membership, never by e-mail (shared/DESIGN.md).
        g.committee_actor = f"committee:{member.id}"
        return view(*args, **kwargs)

    return citizen_required(wrapped)  # type: ignore[return-value]


def _no_store(body: str, status: int = 200) -> Response:
    """A page that may show a secret: never cached, never kept by the browser's history."""
    response = make_response(body, status)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/admin/")
@committee_required
def admin_index() -> str:
    return render_template(
        "admin/index.html", organisations=organisations.list_organisations(get_session())
    )


@bp.route("/admin/organisations/new", methods=["GET", "POST"])
@committee_required
def admin_new_organisation() -> Any:
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        data, errors = load_form(OrganisationForm())
        if not errors:
            try:
                with unit_of_work() as session:
                    created = organisations.create_organisation(
                        session, **data, actor=g.committee_actor
                    )
            except (InvalidInputError, ConflictError) as exc:
                errors = form_errors(exc)
            else:
                flash(_("L'organisation %(slug)s est enregistrée.", slug=created.slug), "success")
                return redirect(url_for("portal.admin_organisation", organisation_id=created.id))
    return render_template(
        "admin/organisation_new.html",
        errors=errors,
        form=request.form,
        roles=list(Role),
        charter=current_charter(),
    ), (422 if errors else 200)


def _organisation_page(organisation_id: uuid.UUID, *, status: int = 200, **extra: Any) -> Response:
    session = get_session()
    organisation = organisations.get_organisation(session, organisation_id)
    context: dict[str, Any] = {
        "client_errors": {},
        "edit_errors": {},
        "token_errors": {},
        "form": MultiDict(),
        "secret": None,
        "created_client": None,
        "initial_access_token": None,
        **extra,
    }
    return _no_store(
        render_template(
            "admin/organisation.html",
            organisation=organisation,
            clients=clients.list_clients(session, organisation_id),
            charter=current_charter(),
            allowed_scopes=sorted(scopes.allowed_for(organisation.role)),
            auth_methods=AUTH_METHOD_LABELS,
            grant_types=clients.GRANT_TYPES,
            registration_endpoint=f"{current_app.config['ISSUER']}/oauth/register",
            **context,
        ),
        status,
    )


@bp.get("/admin/organisations/<uuid:organisation_id>")
@committee_required
def admin_organisation(organisation_id: uuid.UUID) -> Response:
    return _organisation_page(organisation_id)


@bp.post("/admin/organisations/<uuid:organisation_id>")
@committee_required
def admin_edit_organisation(organisation_id: uuid.UUID) -> Response:
    data, errors = load_form(OrganisationEditForm())
    try:
        if errors:
            raise InvalidInputError("The form is not valid.", fields=errors)
        with unit_of_work() as session:
            organisations.update_organisation(
                session, organisation_id, **data, actor=g.committee_actor
            )
    except (InvalidInputError, ConflictError) as exc:
        return _organisation_page(organisation_id, status=422, edit_errors=form_errors(exc))
    flash(_("L'organisation est modifiée."), "success")
    return redirect(url_for("portal.admin_organisation", organisation_id=organisation_id))


@bp.post("/admin/organisations/<uuid:organisation_id>/suspension")
@committee_required
def admin_suspend_organisation(organisation_id: uuid.UUID) -> Response:
    suspended = request.form.get("suspended") == "1"
    with unit_of_work() as session:
        organisations.update_organisation(
            session, organisation_id, suspended=suspended, actor=g.committee_actor
        )
    if suspended:
        flash(_("L'organisation est suspendue : ses clients n'obtiennent plus de jeton."), "info")
    else:
        flash(_("La suspension est levée."), "success")
    return redirect(url_for("portal.admin_organisation", organisation_id=organisation_id))


@bp.post("/admin/organisations/<uuid:organisation_id>/clients")
@committee_required
def admin_create_client(organisation_id: uuid.UUID) -> Response:
    data, errors = load_form(ClientForm())
    try:
        if errors:
            raise InvalidInputError("The form is not valid.", fields=errors)
        with unit_of_work() as session:
            client, secret = clients.create_client(
                session,
                organisation_id=organisation_id,
                name=data["name"],
                auth_method=data["auth_method"],
                redirect_uris=data["redirect_uris"],
                grant_types=data["grant_types"],
                scope=" ".join(data["scope"]),
                jwks=data["jwks"],
                dpop_bound=data["dpop_bound"],
                registered_by="committee",
                actor=g.committee_actor,
            )
    except (InvalidInputError, ConflictError) as exc:
        return _organisation_page(
            organisation_id, status=422, client_errors=form_errors(exc), form=request.form
        )
    # Rendered, not redirected: the secret must not travel through the session cookie.
    return _organisation_page(organisation_id, created_client=client, secret=secret)


@bp.post("/admin/clients/<client_id>/revoke")
@committee_required
def admin_revoke_client(client_id: str) -> Response:
    with unit_of_work() as session:
        client = clients.revoke_client(session, client_id=client_id, actor=g.committee_actor)
        organisation_id = client.organisation_id
    flash(_("Le client %(client_id)s est révoqué, ses jetons aussi.", client_id=client_id), "info")
    return redirect(url_for("portal.admin_organisation", organisation_id=organisation_id))


@bp.post("/admin/organisations/<uuid:organisation_id>/initial-access-tokens")
@committee_required
def admin_issue_initial_access_token(organisation_id: uuid.UUID) -> Response:
    data, errors = load_form(InitialAccessTokenForm())
    try:
        if errors:
            raise InvalidInputError("The form is not valid.", fields=errors)
        with unit_of_work() as session:
            token = clients.issue_initial_access_token(
                session,
                organisation_id=organisation_id,
                ttl=timedelta(hours=data["hours"]),
                actor=g.committee_actor,
            )
            expires_at = clients.get_initial_access_token(session, token).expires_at
    except (InvalidInputError, ConflictError) as exc:
        return _organisation_page(organisation_id, status=422, token_errors=form_errors(exc))
    return _organisation_page(
        organisation_id, initial_access_token=token, token_expires_at=expires_at
    )


# --- the public catalogue, and the committee's view of datasets (issue #5) --------------


@bp.record_once
def _install_holder_directory(state: Any) -> None:
    # consent's linked-accounts pages list holders without importing broker (the packages'
    # arrows): the composition side hands them this directory.
    state.app.extensions.setdefault("consent.holder_directory", datasets.holder_directory)


HEALTH_LABELS = {
    Health.UP: _l("en service"),
    Health.DOWN: _l("injoignable"),
    Health.UNKNOWN: _l("pas encore vérifié"),
}


@bp.app_template_global()
def health_label(health: str) -> str:
    """The words for an endpoint's last health check."""
    try:
        return str(HEALTH_LABELS[Health(health)])
    except ValueError:
        return health


@bp.get("/catalogue")
def catalogue() -> str:
    """Every dataset of the territory: who holds it, what it is, which purposes of the charter
    may use it, whether its service answers; open data downloadable under its licence."""
    found = catalog.entries(get_session())
    return render_template(
        "catalog/index.html",
        entries=found,
        counts=catalog.health_counts(found),
        charter=current_charter(),
    )


@bp.get("/admin/datasets")
@committee_required
def admin_datasets() -> str:
    found = catalog.entries(get_session())
    return render_template(
        "admin/datasets.html", entries=found, counts=catalog.health_counts(found)
    )


@bp.post("/admin/datasets/probe")
@committee_required
def admin_probe_datasets() -> Response:
    # End this request's read transaction first: in eager mode (the embedded default) the
    # task runs here, on its own connection, and SQLite would make it wait for ours.
    get_session().close()
    # Looked up by name: views do not import tasks (shared/STYLE.md §3); apply_async honours
    # eager mode.
    celery_app.tasks["broker.probe_datasets"].apply_async()
    flash(_("La vérification des services est lancée."), "info")
    return redirect(url_for("portal.admin_datasets"))


# --- access requests, grants and the public register (issue #5) ----------------------------


@bp.get("/registre")
def public_register() -> str:
    """Every approved reuse that has not ended: who, why, which data, until when."""
    return render_template(
        "register/index.html",
        entries=access.public_register(get_session()),
        charter=current_charter(),
    )


def _access_page(
    status: int = 200, errors: dict[str, dict[str, list[str]]] | None = None
) -> Response:
    session = get_session()
    body = render_template(
        "admin/access.html",
        requests=access.all_requests(session),
        grants=access.all_grants(session),
        grant_state=access.grant_state,
        charter=current_charter(),
        errors=errors or {},
    )
    return make_response(body, status)


@bp.get("/admin/access")
@committee_required
def admin_access() -> Response:
    return _access_page()


_DECISIONS: dict[str, tuple[Callable[..., Any], Any]] = {
    "approve": (access.approve, _l("La demande est approuvée : l'autorisation est créée.")),
    "reject": (access.reject, _l("La demande est refusée.")),
}
_GRANT_ACTIONS: dict[str, tuple[Callable[..., Any], Any]] = {
    "suspend": (access.suspend, _l("L'autorisation est suspendue.")),
    "resume": (access.resume, _l("L'autorisation est rétablie.")),
}


def _decide(action: Callable[..., Any], target: uuid.UUID, done: Any, key: str) -> Response:
    data, errors = load_form(ReasonIn())
    if errors:
        return _access_page(422, {key: errors})
    try:
        with unit_of_work() as session:
            action(session, target, actor=g.committee_actor, reason=data["reason"])
    except (InvalidInputError, ConflictError) as exc:
        return _access_page(
            422 if isinstance(exc, InvalidInputError) else 409, {key: form_errors(exc)}
        )
    flash(str(done), "success")
    return redirect(url_for("portal.admin_access"))


@bp.post("/admin/access-requests/<uuid:request_id>/<any(approve, reject):decision>")
@committee_required
def admin_decide_request(request_id: uuid.UUID, decision: str) -> Response:
    action, done = _DECISIONS[decision]
    return _decide(action, request_id, done, str(request_id))


@bp.post("/admin/grants/<uuid:grant_id>/<any(suspend, resume):change>")
@committee_required
def admin_change_grant(grant_id: uuid.UUID, change: str) -> Response:
    action, done = _GRANT_ACTIONS[change]
    return _decide(action, grant_id, done, str(grant_id))


@bp.get("/admin/notices")
@committee_required
def admin_notices() -> str:
    """Every withdrawal notice with its delivery attempts; dead letters first to act on."""
    found = notices.all_notices(get_session())
    dead = [n for n in found if n.status.value == "dead"]
    return render_template("admin/notices.html", notices=found, dead=dead)


@bp.post("/admin/notices/<uuid:notice_id>/retry")
@committee_required
def admin_retry_notice(notice_id: uuid.UUID) -> Response:
    try:
        with unit_of_work() as session:
            notices.retry(session, notice_id, actor=g.committee_actor)
    except ConflictError as exc:
        flash(exc.detail, "error")
        return redirect(url_for("portal.admin_notices"))
    get_session().close()  # eager mode delivers here, on its own connection
    celery_app.tasks["broker.deliver_notice"].apply_async(args=[str(notice_id)])
    flash(_("L'avis est renvoyé."), "success")
    return redirect(url_for("portal.admin_notices"))
