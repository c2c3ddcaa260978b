"""Composition root: the only module that knows every package and wires them together."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flask import Flask, current_app, request
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from broker import config
from common import auth, db, http, portal, tasks

HERE = Path(__file__).resolve().parent


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from the environment, with `overrides` on top (tests, CLI)."""
    app = Flask(__name__, instance_relative_config=True, instance_path=_instance_path())
    app.config.update(config.from_env(app.instance_path))
    app.config.update(overrides or {})
    if proxies := app.config.get("PROXIES", 0):
        # X-Forwarded-For/-Proto from that many proxies, never more (werkzeug's ProxyFix).
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)  # type: ignore[method-assign]
    db.init_app(app)
    tasks.celery_init_app(app)
    csrf = CSRFProtect(app)
    app.before_request(_csrf_unless_token(csrf))
    api = http.ProblemApi(app)
    http.register_error_handlers(app)
    http.init_guards(app)
    portal.init_app(app, str(HERE / "translations"))

    from audit import api as audit_api
    from audit import tasks as _audit_tasks  # noqa: F401  (registers audit.integrate, its kick)
    from broker import access_api, oauth
    from broker import api as broker_api
    from broker import tasks as _broker_tasks  # noqa: F401  (registers Celery tasks)
    from broker import views as broker_views
    from charter import api as charter_api
    from charter import views as charter_views
    from common import outbox
    from consent import api as consent_api
    from consent import tasks as _consent_tasks  # noqa: F401
    from consent import views as consent_views

    auth.set_resolver(app, consent_views.identity_resolver())
    auth.set_token_validator(app, oauth.validate_access)
    oauth.init_app(app, csrf)
    csrf.exempt(broker_api.register_blp)  # RFC 7591: a bearer initial access token, no cookie
    blueprints = (broker_api.blp, broker_api.register_blp, broker_api.datasets_blp, access_api.blp)
    for blueprint in (*blueprints, charter_api.blp, consent_api.blp):
        api.register_blueprint(blueprint)
    api.register_blueprint(audit_api.blp)
    from anonymize import api as anonymize_api  # DP releases and budgets (issue #6)
    from anonymize import views as anonymize_views

    api.register_blueprint(anonymize_api.blp)
    from broker.service import ingestion  # who holds an aggregate grant (anonymize's port)

    app.extensions[anonymize_api.GRANTS_EXTENSION] = ingestion.has_aggregate_grant
    from broker.service import organisations  # a portal account -> its organisation (#6)

    app.extensions[anonymize_views.REQUESTER_EXTENSION] = organisations.member_requester
    app.register_blueprint(anonymize_views.bp)
    for bp in (broker_views.bp, charter_views.bp, consent_views.bp, consent_views.accounts_bp):
        app.register_blueprint(bp)
    from audit import views as audit_views  # auditors' pages, "who accessed my data" (#4)
    from broker.audit_directory import AuditDirectory

    app.register_blueprint(audit_views.bp)
    app.extensions["audit.directory"] = AuditDirectory()  # names audit may not import
    # Lower packages make upper ones act through data, never imports (shared/STYLE.md §3).
    outbox.subscribe(app, "charter.published", "consent.sweep")
    for ended in ("consent.withdrawn", "consent.expired", "consent.superseded"):
        outbox.subscribe(app, ended, "broker.revoke_for_consent")
        outbox.subscribe(app, ended, "broker.drop_staged_for_consent")  # DP staging (#6)
    outbox.subscribe(app, "consent.withdrawn", "broker.notify_withdrawal")
    outbox.subscribe(app, "consent.account_closed", "broker.revoke_for_subject")
    from broker.service import notices

    app.extensions["consent.withdrawal_notices"] = notices.for_consent  # the citizen's view
    return app


def _csrf_unless_token(csrf: CSRFProtect) -> Callable[[], None]:
    """CSRF guards what a browser's cookie authenticates. An API call carrying an access
    token (which a browser never adds by itself) or no cookie at all needs none; everything
    else is checked (WTF_CSRF_CHECK_DEFAULT is off for this reason)."""

    def check() -> None:
        if not current_app.config["WTF_CSRF_ENABLED"]:
            return
        cookie = current_app.config["SESSION_COOKIE_NAME"]
        if request.path.startswith("/api/") and (
            "Authorization" in request.headers or cookie not in request.cookies
        ):
            return  # nothing here is authenticated by a cookie: the route answers 401 itself
        csrf.protect(apply_exemptions=True)

    return check


def _instance_path() -> str:
    """instance/ beside the checkout unless TIERS_INSTANCE says otherwise."""
    return os.environ.get("TIERS_INSTANCE", str(HERE.parent / "instance"))
