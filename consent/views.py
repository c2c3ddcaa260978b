"""The citizen portal: account pages, linked accounts at data holders, and "my consents".
Server-rendered; CSRF on every POST (Flask-WTF's CSRFProtect is app-wide); each POST is one unit
of work, then flash + redirect (a pairing code is rendered once instead, never flashed)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from marshmallow import Schema, fields
from sqlalchemy.exc import SQLAlchemyError

from charter import service as charters
from charter.document import terms_hash
from charter.notice import notice_hash, notice_text
from common import auth
from common.auth import CitizenIdentity, citizen_required, current_subject_id
from common.db import get_session, unit_of_work
from common.errors import ConflictError, InvalidInputError, TooManyRequestsError
from common.http import jsonld_response
from common.portal import form_errors, load_form, select_locale
from consent import accounts, closing, links, service
from consent.models import ConsentStatus
from consent.schemas import (
    CloseAccountForm,
    GiveConsentForm,
    RenewConsentForm,
    SignInForm,
    SignUpForm,
)

accounts_bp = Blueprint("accounts", __name__, template_folder="templates")
bp = Blueprint("consent", __name__, url_prefix="/me/consents", template_folder="templates")


@bp.app_template_global()
def event_label(kind: str) -> str:
    """The citizen's words for a consent event."""
    labels = {
        "given": _("Consentement donné"),
        "renewed": _("Consentement renouvelé"),
        "withdrawn": _("Consentement retiré"),
        "expired": _("Consentement expiré"),
        "superseded": _("Remplacé par une nouvelle version de la charte"),
    }
    return labels.get(kind, kind)


def _session_policy() -> accounts.SessionPolicy:
    config = current_app.config
    return accounts.SessionPolicy(
        idle=config["CITIZEN_SESSION_IDLE"], max_age=config["CITIZEN_SESSION_MAX"]
    )


def _rate_limit() -> accounts.RateLimit:
    config = current_app.config
    return accounts.RateLimit(
        config["SIGN_IN_MAX_FAILURES"],
        config["SIGN_IN_WINDOW"],
        config["SIGN_IN_MAX_FAILURES_PER_CLIENT"],
    )


def identity_resolver() -> Callable[[str], CitizenIdentity | None]:
    """Session token -> citizen, read in the request's own session: on PostgreSQL the view
    that follows goes on in the same transaction, and a write commits once. A read that slid
    the idle timeout commits at once, so pages that write nothing keep the citizen signed in."""

    def resolve(token: str) -> CitizenIdentity | None:
        session = get_session()
        try:
            live = accounts.resolve_session(session, token, policy=_session_policy())
            # On SQLite every transaction holds the database's write lock (BEGIN IMMEDIATE):
            # end this one now, so that a page that writes nothing does not hold it.
            if (live is not None and live.slid) or session.get_bind().dialect.name == "sqlite":
                session.commit()
        except SQLAlchemyError:
            session.rollback()  # the error page may still read, on a fresh transaction
            raise
        return live.citizen if live is not None else None

    return resolve


# --- account ---------------------------------------------------------------------------


@accounts_bp.route("/sign-up", methods=["GET", "POST"])
def sign_up() -> Any:
    errors: dict[str, list[str]] = {}
    next_url = auth.safe_next(request.values.get("next"), url_for("consent.index"))
    if request.method == "POST":
        data, errors = load_form(SignUpForm())
        if not errors and data["password"] != data["password_again"]:
            errors["password_again"] = [_("Les deux mots de passe ne sont pas identiques.")]
        if not errors:
            try:
                with unit_of_work() as session:
                    citizen = accounts.sign_up(
                        session,
                        email=data["email"],
                        password=data["password"],
                        language=select_locale(),
                    )
                    token = accounts.start_session(session, citizen, policy=_session_policy())
            except (ConflictError, InvalidInputError) as exc:
                errors = form_errors(exc)
            else:
                auth.remember(token)
                flash(_("Votre compte est créé. Bienvenue !"), "success")
                return redirect(next_url)  # back to where they came from, e.g. a consent screen
    status = 422 if errors else 200
    return render_template(
        "accounts/sign_up.html", errors=errors, email=request.form.get("email", ""), next=next_url
    ), status


@accounts_bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Any:
    errors: dict[str, list[str]] = {}
    next_url = auth.safe_next(request.values.get("next"), url_for("consent.index"))
    if request.method == "POST":
        data, errors = load_form(SignInForm())
        if not errors:
            with unit_of_work() as session:  # failures commit too: they feed the rate limit
                outcome = accounts.authenticate(
                    session,
                    email=data["email"],
                    password=data["password"],
                    client=request.remote_addr or "unknown",
                    limit=_rate_limit(),
                )
                token = (
                    accounts.start_session(session, outcome.citizen, policy=_session_policy())
                    if outcome.citizen
                    else None
                )
            if token is not None:
                auth.remember(token)
                return redirect(next_url)
            if outcome.refusal == "rate_limited":
                flash(_("Trop de tentatives échouées. Réessayez dans quelques minutes."), "error")
                return render_template(
                    "accounts/sign_in.html", errors={}, email=data["email"], next=next_url
                ), 429
            errors = {"_": [_("L'adresse électronique ou le mot de passe est incorrect.")]}
    status = 401 if errors.get("_") else (422 if errors else 200)
    return render_template(
        "accounts/sign_in.html", errors=errors, email=request.form.get("email", ""), next=next_url
    ), status


@accounts_bp.post("/sign-out")
def sign_out() -> Any:
    token = auth.forget()
    if token:
        with unit_of_work() as session:
            accounts.end_session(session, token)
    flash(_("Vous êtes déconnecté."), "info")
    return redirect(url_for("portal.home"))


@accounts_bp.get("/me")
@citizen_required
def me() -> str:
    subject_id = current_subject_id()
    consents = service.list_for_subject(get_session(), subject_id)
    return render_template("accounts/me.html", subject_id=subject_id, consents=consents)


@accounts_bp.route("/me/close", methods=["GET", "POST"])
@citizen_required
def close_account() -> Any:
    """Close my account: the password again, then every consent withdrawn and the account
    gone (consent.closing)."""
    errors: dict[str, list[str]] = {}
    status = 200
    if request.method == "POST":
        data, errors = load_form(CloseAccountForm())
        status = 422 if errors else 200
        if not errors:
            citizen = auth.current_citizen()
            assert citizen is not None  # noqa: S101 (citizen_required)
            with unit_of_work() as session:  # a wrong password commits: the rate limit
                outcome = closing.close_own_account(
                    session,
                    citizen_id=citizen.id,
                    password=data["password"],
                    client=request.remote_addr or "unknown",
                    limit=_rate_limit(),
                )
            if outcome.citizen is not None:
                auth.forget()
                flash(
                    _(
                        "Votre compte est fermé et vos consentements sont retirés. Les "
                        "organisations concernées en sont prévenues."
                    ),
                    "success",
                )
                return redirect(url_for("portal.home"))
            if outcome.refusal == "rate_limited":
                errors = {"password": [_("Trop de tentatives échouées. Réessayez plus tard.")]}
                status = 429
            else:
                errors = {"password": [_("Le mot de passe est incorrect.")]}
                status = 401
    in_force = service.list_for_subject(
        get_session(), current_subject_id(), statuses=[ConsentStatus.GIVEN]
    )
    return render_template("accounts/close.html", errors=errors, in_force=in_force), status


# --- consents --------------------------------------------------------------------------


@bp.get("")
@citizen_required
def index() -> str:
    consents = service.list_for_subject(get_session(), current_subject_id())
    charter = charters.current_or_none(get_session())
    return render_template("consent/index.html", consents=consents, charter=charter)


@bp.route("/new/<purpose_id>", methods=["GET", "POST"])
@citizen_required
def give_form(purpose_id: str) -> Any:
    charter = charters.current_or_none(get_session())
    purpose = charter.doc.purpose(purpose_id) if charter else None
    if charter is None or purpose is None:
        return render_template("errors/http.html", status=404, name=_("Finalité inconnue")), 404
    lang = select_locale()
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        data, errors = load_form(GiveConsentForm())
        data.pop("purpose_id", None)  # the URL names the purpose
        try:
            if errors:
                raise InvalidInputError("The form is not valid.", fields=errors)
            with unit_of_work() as session:
                consent = service.give(
                    session,
                    service.GiveConsent(
                        subject_id=current_subject_id(),
                        purpose_id=purpose.id,
                        data_categories=tuple(data.pop("data_categories")),
                        datasets=tuple(data.pop("datasets")),
                        method="portal",
                        **data,
                    ),
                )
        except (InvalidInputError, ConflictError) as exc:
            errors = form_errors(exc)
        else:
            flash(
                _("Votre consentement est enregistré. Votre reçu signé est disponible."), "success"
            )
            return redirect(url_for("consent.detail", consent_id=consent.id))
    return render_template(
        "consent/give.html",
        charter=charter,
        purpose=purpose,
        notice=notice_text(charter.doc, purpose, lang),
        notice_hash=notice_hash(charter.doc, purpose, lang),
        terms_hash=terms_hash(purpose),
        errors=errors,
        form=request.form,
    ), (422 if errors else 200)


@bp.get("/<uuid:consent_id>")
@citizen_required
def detail(consent_id: uuid.UUID) -> str:
    session = get_session()
    consent = service.get_for_subject(session, current_subject_id(), consent_id)
    charter = charters.current_or_none(session)
    # Who was told of a withdrawal, and who confirmed erasure: broker's notices, through the
    # hook broker/app.py installs (consent imports nothing of broker).
    notices = current_app.extensions.get("consent.withdrawal_notices")
    return render_template(
        "consent/detail.html",
        consent=consent,
        recipients=notices(session, consent.subject_id, consent.id) if notices else [],
        purpose=charter.doc.purpose(consent.purpose_id) if charter else None,
        renewal=service.renewal_terms(consent, charter, select_locale()),
        dpv_status=service.dpv_status(consent),
    )


@bp.post("/<uuid:consent_id>/withdraw")
@citizen_required
def withdraw(consent_id: uuid.UUID) -> Any:
    with unit_of_work() as session:
        service.withdraw(
            session, subject_id=current_subject_id(), consent_id=consent_id, method="portal"
        )
    flash(
        _("Votre consentement est retiré. Plus aucun accès n'est possible à ce titre."), "success"
    )
    return redirect(url_for("consent.detail", consent_id=consent_id))


@bp.post("/<uuid:consent_id>/renew")
@citizen_required
def renew(consent_id: uuid.UUID) -> Any:
    data, errors = load_form(RenewConsentForm())
    try:
        if errors:
            raise InvalidInputError("The form is not valid.", fields=errors)
        with unit_of_work() as session:
            service.renew(
                session,
                service.RenewConsent(
                    subject_id=current_subject_id(), consent_id=consent_id, method="portal", **data
                ),
            )
    except (InvalidInputError, ConflictError) as exc:
        flash(exc.detail, "error")
    else:
        flash(_("Votre consentement est renouvelé."), "success")
    return redirect(url_for("consent.detail", consent_id=consent_id))


@bp.get("/<uuid:consent_id>/receipt")
@citizen_required
def receipt(consent_id: uuid.UUID) -> Response:
    consent = service.get_for_subject(get_session(), current_subject_id(), consent_id)
    return Response(
        consent.receipt,
        mimetype="application/jose",
        headers={"Content-Disposition": f'attachment; filename="recu-{consent.id}.jws"'},
    )


@bp.get("/<uuid:consent_id>/record.jsonld")
@citizen_required
def record(consent_id: uuid.UUID) -> Response:
    session = get_session()
    consent = service.get_for_subject(session, current_subject_id(), consent_id)
    return jsonld_response(
        service.to_jsonld(consent, service.current_doc(session)),
        filename=f"consentement-{consent.id}.jsonld",
    )


@bp.get("/export.jsonld")
@citizen_required
def export() -> Response:
    return jsonld_response(
        service.export_all(get_session(), current_subject_id()), filename="mes-consentements.jsonld"
    )


# --- linked accounts at data holders ("Mon compte" → "Comptes liés") --------------------


class _HolderChoice(Schema):
    """The holder a citizen asks a pairing code for (kept beside its only form)."""

    holder = fields.UUID(required=True)


def _holders() -> list[links.Holder]:
    """The holders a citizen may link an account at, from the directory the composition side
    installs (broker's organisations: consent never imports broker)."""
    directory = current_app.extensions.get("consent.holder_directory")
    if directory is None:
        raise RuntimeError("no holder directory installed (broker/views.py installs it)")
    found: list[links.Holder] = directory(get_session())
    return found


def _links_page(*, status: int = 200, **extra: Any) -> Response:
    holders = _holders()
    context: dict[str, Any] = {"issued": None, "errors": {}, **extra}
    response = make_response(
        render_template(
            "accounts/links.html",
            links=links.list_links(get_session(), current_subject_id()),
            holders=holders,
            holder_names=links.holders_by_id(holders),
            code_minutes=int(links.CODE_TTL.total_seconds() // 60),
            **context,
        ),
        status,
    )
    response.headers["Cache-Control"] = "no-store"  # a pairing code is shown once, never cached
    return response


@accounts_bp.get("/me/links")
@citizen_required
def linked_accounts() -> Response:
    return _links_page()


@accounts_bp.post("/me/links/codes")
@citizen_required
def pairing_code() -> Response:
    data, errors = load_form(_HolderChoice())
    holder = links.holders_by_id(_holders()).get(data["holder"]) if not errors else None
    if holder is None:
        errors = errors or {"holder": [_("Choisissez un détenteur de la liste.")]}
        return _links_page(status=422, errors=errors)
    try:
        with unit_of_work() as session:
            issued = links.issue_code(session, subject_id=current_subject_id(), holder=holder)
    except TooManyRequestsError:
        flash(_("Vous avez demandé trop de codes. Réessayez dans une heure."), "error")
        return _links_page(status=429)
    # Rendered, not flashed: the code must not travel through the session cookie.
    return _links_page(issued=issued)


@accounts_bp.post("/me/links/<uuid:link_id>/unlink")
@citizen_required
def unlink(link_id: uuid.UUID) -> Any:
    with unit_of_work() as session:
        links.unlink(session, subject_id=current_subject_id(), link_id=link_id)
    flash(_("Le compte est délié : Tiers a oublié son identifiant."), "success")
    return redirect(url_for("accounts.linked_accounts"))
