"""Every API route says which scope it needs, or that it is public, or that it
authenticates the client itself (the OAuth endpoints). A route that says nothing fails here."""

from __future__ import annotations

from flask import Flask

from broker.service import scopes

MACHINE_PATHS = ("/api/", "/oauth/", "/.well-known/")
PORTAL_SCREENS = {"oauth_screens.authorize", "oauth_screens.decide"}  # citizen pages, CSRF


def _api_rules(app: Flask) -> list[tuple[str, object]]:
    return [
        (rule.rule, app.view_functions[rule.endpoint])
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(MACHINE_PATHS) and rule.endpoint not in PORTAL_SCREENS
    ]


def test_every_api_route_declares_its_scopes_or_says_why_not(app: Flask) -> None:
    rules = _api_rules(app)
    assert len(rules) > 10  # the check looks at the real routes, not an empty list
    silent = sorted(path for path, view in rules if not hasattr(view, "required_scopes"))
    assert silent == [], f"routes that declare no scope: {silent}"


def test_declared_scopes_are_the_territorys_scopes(app: Flask) -> None:
    declared = {
        scope for _, view in _api_rules(app) for scope in getattr(view, "required_scopes", ())
    }
    assert declared <= set(scopes.ALL), declared - set(scopes.ALL)
    assert {"consent:read", "consent:write", "admin"} <= declared


def test_a_route_without_scopes_is_marked_public_or_client_authenticated(app: Flask) -> None:
    for path, view in _api_rules(app):
        if getattr(view, "required_scopes", None) == ():
            marked = getattr(view, "public", False) or getattr(view, "client_authenticated", False)
            citizen_only = getattr(view, "citizen_session", False)
            assert marked or citizen_only, f"{path} needs no scope but is not marked public"
