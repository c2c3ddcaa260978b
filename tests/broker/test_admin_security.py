"""The committee's portal actions refuse a POST without its CSRF token (the "session expired"
page) and a signed-in citizen who is not on the committee (403), and change nothing then:
suspending and resuming a grant, and starting the health probe of the holders' services."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audit.models import AuditEntry
from broker.models import AccessGrant
from broker.service import access
from common.tasks import celery_app
from tests.anonymize.conftest import aggregate_grant
from tests.conftest import SignedIn, form_csrf, sign_in

CSRF_PAGE = "Session expirée"  # errors/csrf.html: not a role refusal
NOT_COMMITTEE = "comité"  # "Ces pages sont réservées au comité de la charte."


@pytest.fixture
def grant(session: Session, make_client: Any) -> AccessGrant:
    """A grant in force, for an observatory of the territory."""
    observatory = make_client("observatory", category="public_service").model.organisation
    made = aggregate_grant(session, observatory.id, [])
    session.commit()
    return made


@pytest.fixture
def outsider(app: Flask, session: Session, charter: Any) -> SignedIn:
    """Signed in, with a valid CSRF token of their own session, but not on the committee."""
    return sign_in(app, session)


def _ready_for(session: Session, grant: AccessGrant, action: str) -> None:
    """A grant the action would change: in force to suspend, suspended to resume."""
    if action == "resume":
        access.suspend(session, grant.id, actor="test", reason="A complaint under review.")
        session.commit()


def _state(session: Session, grant: AccessGrant) -> tuple[Any, Any, int]:
    """The grant's suspension, and how many audit entries exist (any change writes one)."""
    session.expire_all()
    found = session.get(AccessGrant, grant.id)
    assert found is not None
    entries = session.scalar(select(func.count()).select_from(AuditEntry))
    return found.suspended_at, found.suspended_reason, int(entries or 0)


@pytest.mark.parametrize("action", ["suspend", "resume"])
def test_a_grant_change_without_its_csrf_token_is_refused_and_changes_nothing(
    session: Session, member: SignedIn, grant: AccessGrant, action: str
) -> None:
    _ready_for(session, grant, action)
    before = _state(session, grant)
    refused = member.client.post(f"/admin/grants/{grant.id}/{action}", data={"reason": "Because."})
    assert refused.status_code == 403
    assert CSRF_PAGE in refused.get_data(as_text=True)
    assert _state(session, grant) == before
    # The same form with its token goes through: the refusal above was the token's.
    token = form_csrf(member.client.get("/admin/access").get_data(as_text=True))
    done = member.client.post(
        f"/admin/grants/{grant.id}/{action}", data={"csrf_token": token, "reason": "Because."}
    )
    assert done.status_code == 302
    assert _state(session, grant) != before


@pytest.mark.parametrize("action", ["suspend", "resume"])
def test_a_citizen_off_the_committee_cannot_change_a_grant(
    session: Session, outsider: SignedIn, grant: AccessGrant, action: str
) -> None:
    _ready_for(session, grant, action)
    before = _state(session, grant)
    refused = outsider.client.post(
        f"/admin/grants/{grant.id}/{action}",
        data={"csrf_token": outsider.csrf, "reason": "I would like to."},
    )
    assert refused.status_code == 403
    assert NOT_COMMITTEE in refused.get_data(as_text=True)
    assert CSRF_PAGE not in refused.get_data(as_text=True)
    assert _state(session, grant) == before


def test_a_stranger_is_sent_to_sign_in_and_changes_nothing(
    client: FlaskClient, session: Session, grant: AccessGrant
) -> None:
    before = _state(session, grant)
    answer = client.post(f"/admin/grants/{grant.id}/suspend", data={"reason": "x"})
    assert answer.status_code == 403
    assert CSRF_PAGE in answer.get_data(as_text=True)  # no session, so no valid token either
    assert _state(session, grant) == before


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every start of `broker.probe_datasets` (not run: the test checks who may start it)."""
    started: list[Any] = []
    task = celery_app.tasks["broker.probe_datasets"]
    monkeypatch.setattr(task, "apply_async", lambda *a, **kw: started.append((a, kw)))
    return started


def test_the_probe_is_not_started_without_the_csrf_token(
    member: SignedIn, probes: list[Any]
) -> None:
    refused = member.client.post("/admin/datasets/probe")
    assert refused.status_code == 403
    assert CSRF_PAGE in refused.get_data(as_text=True)
    wrong = member.client.post("/admin/datasets/probe", data={"csrf_token": "forged"})
    assert wrong.status_code == 403
    assert probes == []
    token = form_csrf(member.client.get("/admin/datasets").get_data(as_text=True))
    assert (
        member.client.post("/admin/datasets/probe", data={"csrf_token": token}).status_code == 302
    )
    assert len(probes) == 1


def test_the_probe_is_not_started_by_a_citizen_off_the_committee(
    outsider: SignedIn, probes: list[Any]
) -> None:
    refused = outsider.client.post("/admin/datasets/probe", data={"csrf_token": outsider.csrf})
    assert refused.status_code == 403
    assert NOT_COMMITTEE in refused.get_data(as_text=True)
    assert probes == []
