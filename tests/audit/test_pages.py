"""The access log on the portal and the filtered API: auditors' pages, the citizen's "who
accessed my data" and its receipts, `tiers auditor add`; forbidden callers and bad input."""

from __future__ import annotations

import base64
import io
import json
import uuid
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import func, select

from audit import notes
from audit import service as audit
from audit.models import AuditEntry, AuditorAccount
from broker.cli import main
from consent import accounts
from tests.conftest import PASSWORD, form_csrf

LOG, MINE, ENTRIES = "/audit/", "/me/access-log", "/api/v1/audit/entries"


def grow(session: Any, *events: str, **kw: Any) -> list[uuid.UUID]:
    made = [
        audit.append(session, event=e, actor=kw.get("actor", "test"), **kw.get("more", {}))
        for e in events
    ]
    session.commit()
    return made


def html(response: Any) -> str:
    return str(response.get_data(as_text=True))


# -- who may see the auditor pages --------------------------------------------------------


def test_anonymous_visitors_are_sent_to_sign_in(client):
    for path in (LOG, MINE, f"{MINE}/{uuid.uuid4()}/receipt"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert "/sign-in" in response.headers["Location"]
    assert client.post(f"{LOG}export.csv").status_code in (302, 403)  # no session, no token


def test_a_citizen_who_is_not_an_auditor_is_forbidden(citizen):
    response = citizen.client.get(LOG)
    assert response.status_code == 403
    assert "auditeurs" in html(response)
    exported = citizen.client.post(
        f"{LOG}export.csv", data={"event": "x"}, headers={"X-CSRFToken": citizen.csrf}
    )
    assert exported.status_code == 403
    assert "auditeurs" in html(exported)


def test_committee_members_may_read_the_log(member, session):
    grow(session, "test:pages:member")
    response = member.client.get(LOG)
    assert response.status_code == 200
    assert "test:pages:member" in html(response)


# -- the auditor's page --------------------------------------------------------------------


def test_an_auditor_sees_filtered_entries_with_their_verification(auditor, session, make_client):
    lab = make_client("reuser", slug="energy-lab")
    grow(session, "test:pages:one", "test:pages:two")
    grow(session, "oauth:token:issue", actor=f"client:{lab.client_id}")
    response = auditor.client.get(f"{LOG}?organisation=energy-lab")
    page = html(response)
    assert response.status_code == 200
    assert page.count('data-testid="audit-row"') == 1
    assert "Organisation reuser" in page  # the client's organisation, by name
    assert 'data-status="verified"' in page
    assert 'data-ok="true"' in page
    everything = html(auditor.client.get(f"{LOG}?event=test:pages"))
    assert everything.count('data-testid="audit-row"') == 2


def test_unsealed_entries_say_they_are_not_yet_sealed(auditor, session, monkeypatch):
    # The integrator is stopped: the entry is committed but gets no index.
    monkeypatch.setattr(audit, "integrate", lambda session, batch: 0)
    grow(session, "test:pages:late")
    page = html(auditor.client.get(f"{LOG}?event=test:pages:late"))
    assert 'data-status="unsealed"' in page
    assert 'data-status="verified"' not in page


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("since=not-a-date", "since"),
        ("until=2026-02-30", "until"),
        ("since=2026-05-02&until=2026-05-01", "until"),
        ("subject=abc", "subject"),
        ("organisation=nobody-here", "organisation"),
        ("colour=blue", "colour"),
        ("page=abc", "page"),
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=99999999999", "page"),
        ("page=2", "page"),  # past the last page
        ("page=%C2%B2", "page"),  # "²": str.isdigit() says yes, int() says no
        ("since=9999-12-31T23:59:59-14:00", "since"),  # parses, and UTC cannot hold it
        ("until=0001-01-01T00:00:00%2B14:00", "until"),
    ],
)
def test_bad_filters_and_pages_answer_a_form_with_the_error(auditor, query, field):
    response = auditor.client.get(f"{LOG}?{query}")
    assert response.status_code == 422
    page = html(response)
    assert 'data-testid="error-summary"' in page
    assert 'data-testid="audit-filters"' in page  # the form is back, to correct it
    if field not in ("colour", "page"):
        assert f'data-testid="error-{field}"' in page


def test_pages_follow_each_other_and_keep_the_filters(auditor, session):
    grow(session, *["test:pages:many"] * 51)
    first = html(auditor.client.get(f"{LOG}?event=test:pages:many"))
    assert first.count('data-testid="audit-row"') == 50
    assert 'href="/audit/?page=2&amp;event=test:pages:many"' in first
    second = auditor.client.get(f"{LOG}?event=test:pages:many&page=2")
    assert second.status_code == 200
    assert html(second).count('data-testid="audit-row"') == 1


def export(auditor, **filters):
    """The page's export button: its form, with the CSRF token and the page's filters."""
    page = html(auditor.client.get(LOG, query_string=filters))
    for name, value in filters.items():  # the form carries the page's filters
        assert f'name="{name}" value="{value}"' in page
    return auditor.client.post(f"{LOG}export.csv", data={"csrf_token": form_csrf(page), **filters})


def test_the_csv_export_downloads_the_filtered_log_and_is_itself_logged(auditor, session):
    grow(session, "test:csv:a", "test:csv:b", "test:other:c")
    response = export(auditor, event="test:csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    frame = pd.read_csv(io.StringIO(html(response)))
    assert list(frame["event"]) == ["test:csv:a", "test:csv:b"]
    session.expire_all()
    exported = session.scalars(
        select(AuditEntry.actor).where(AuditEntry.event == "audit:log:export")
    ).all()
    assert len(exported) == 1
    assert exported[0].startswith("auditor:")


def test_a_bad_filter_on_the_csv_export_is_a_form_error(auditor, session):
    page = html(auditor.client.get(LOG))
    response = auditor.client.post(
        f"{LOG}export.csv", data={"csrf_token": form_csrf(page), "since": "soon"}
    )
    assert response.status_code == 422
    assert 'data-testid="error-since"' in html(response)
    session.expire_all()
    assert session.scalar(select(func.count()).where(AuditEntry.event == "audit:log:export")) == 0


def test_the_export_cannot_be_triggered_by_a_link_or_without_the_csrf_token(auditor, session):
    assert auditor.client.get(f"{LOG}export.csv?event=x").status_code == 405
    assert auditor.client.post(f"{LOG}export.csv", data={"event": "x"}).status_code == 403
    session.expire_all()
    assert session.scalar(select(func.count()).where(AuditEntry.event == "audit:log:export")) == 0


# -- the citizen's page ---------------------------------------------------------------------


def test_who_accessed_my_data_names_the_organisation_and_offers_a_receipt(
    citizen, other_citizen, session, make_client
):
    lab = make_client("reuser", slug="energy-lab")
    mine = audit.append(
        session,
        event="oauth:token:introspect",
        actor=f"client:{lab.client_id}",
        subject_id=citizen.subject_id,
        purpose="energy-coaching",
    )
    theirs = audit.append(
        session, event="test:pages:theirs", actor="test", subject_id=other_citizen.subject_id
    )
    session.commit()
    response = citizen.client.get(MINE)
    page = html(response)
    assert response.status_code == 200
    assert "Organisation reuser" in page
    assert "Accompagnement personnalisé aux économies d&#39;énergie" in page
    assert str(mine) in page
    assert str(theirs) not in page
    assert "test:pages:theirs" not in page
    receipt = citizen.client.get(f"{MINE}/{mine}/receipt")
    assert receipt.status_code == 200
    assert receipt.mimetype == "text/plain"
    leaf = session.scalar(select(AuditEntry.leaf).where(AuditEntry.id == mine))
    vkey = citizen.client.get("/api/v1/audit/log-key").get_data(as_text=True).strip()
    assert notes.verify_tlog_proof(html(receipt), leaf, vkey, audit.log_origin())


def test_a_citizen_cannot_fetch_another_citizens_receipt(citizen, other_citizen, session):
    theirs = audit.append(
        session, event="test:idor", actor="test", subject_id=other_citizen.subject_id
    )
    session.commit()
    assert citizen.client.get(f"{MINE}/{theirs}/receipt").status_code == 404
    assert citizen.client.get(f"{MINE}/{uuid.uuid4()}/receipt").status_code == 404
    assert citizen.client.get(f"{MINE}/not-a-uuid/receipt").status_code == 404
    assert other_citizen.client.get(f"{MINE}/{theirs}/receipt").status_code == 200


def test_a_receipt_before_sealing_is_a_conflict_not_an_error(citizen, session, monkeypatch):
    entry = audit.append(
        session, event="test:unsealed", actor="test", subject_id=citizen.subject_id
    )
    session.commit()
    monkeypatch.setattr("audit.views.service.receipt", lambda session, entry_id: None)
    response = citizen.client.get(f"{MINE}/{entry}/receipt")
    assert response.status_code == 409
    assert "scellée" in html(response)


def test_an_erased_citizen_sees_an_empty_page(citizen, session):
    audit.append(session, event="test:erased", actor="test", subject_id=citizen.subject_id)
    session.commit()
    audit.erase_subject(session, citizen.subject_id)
    session.commit()
    response = citizen.client.get(MINE)
    assert response.status_code == 200
    assert 'data-testid="no-entries"' in html(response)


# -- the API's filters ------------------------------------------------------------------------


def test_the_entries_api_filters_and_pages_by_index(client, session, oauth_headers):
    grow(session, "test:api:a", "test:api:b", "test:api:a", "test:api:a")
    headers = oauth_headers("auditor", "audit:read", category=None)
    body = client.get(f"{ENTRIES}?event=test:api:a&limit=2", headers=headers).get_json()
    leaves = [json.loads(base64.b64decode(e["leaf"])) for e in body["entries"]]
    assert [leaf["event"] for leaf in leaves] == ["test:api:a", "test:api:a"]
    assert body["next"] == body["entries"][-1]["index"] + 1
    rest = client.get(
        f"{ENTRIES}?event=test:api:a&limit=2&start={body['next']}", headers=headers
    ).get_json()
    assert len(rest["entries"]) == 1
    assert rest["next"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("since=yesterday", "query.since"),
        ("subject=zz", "query.subject"),
        ("organisation=nobody-here", "query.organisation"),
        ("colour=blue", "query.colour"),
        ("start=-1", "query.start"),
        ("limit=abc", "query.limit"),
    ],
)
def test_bad_filters_on_the_api_are_problem_documents(client, oauth_headers, query, field):
    headers = oauth_headers("auditor", "audit:read", category=None)
    response = client.get(f"{ENTRIES}?{query}", headers=headers)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["errors"]


def test_the_entries_api_needs_audit_read(client, oauth_headers):
    assert client.get(ENTRIES).status_code == 401
    reuser = oauth_headers("reuser", "access:request")
    assert client.get(f"{ENTRIES}?event=x", headers=reuser).status_code == 403


def test_a_citizens_portal_session_is_not_an_auditor_token(citizen):
    assert citizen.client.get(ENTRIES).status_code == 401


# -- tiers auditor add --------------------------------------------------------------------------


def test_tiers_auditor_add_needs_an_account_and_a_known_organisation(
    app, session, charter, make_client
):
    runner = app.test_cli_runner()
    refused = runner.invoke(main, ["auditor", "add", "nobody@example.org"])
    assert refused.exit_code == 1
    assert "signs up first" in refused.stderr
    accounts.sign_up(session, email="auditor@example.org", password=PASSWORD)
    session.commit()
    unknown = runner.invoke(
        main, ["auditor", "add", "auditor@example.org", "--organisation", "nope"]
    )
    assert unknown.exit_code == 1
    make_client("auditor", slug="cour-des-comptes", category=None)
    added = runner.invoke(
        main, ["auditor", "add", "Auditor@Example.org", "--organisation", "cour-des-comptes"]
    )
    assert added.exit_code == 0, added.stderr
    session.expire_all()
    assert session.scalars(select(AuditorAccount.organisation)).all() == ["cour-des-comptes"]


def test_the_citizens_page_is_paged_and_refuses_bad_page_numbers(citizen, session):
    for i in range(51):
        audit.append(
            session,
            event="test:mine:many",
            actor="test",
            subject_id=citizen.subject_id,
            reason=str(i),
        )
    session.commit()
    first = html(citizen.client.get(MINE))
    assert first.count('data-testid="access-row"') == 50
    assert 'href="/me/access-log?page=2"' in first
    second = html(citizen.client.get(f"{MINE}?page=2"))
    assert second.count('data-testid="access-row"') >= 1
    for bad in ("0", "abc", "-3", "999"):
        response = citizen.client.get(f"{MINE}?page={bad}")
        assert response.status_code == 422, bad
        assert 'data-testid="error-page"' in html(response)


# -- in a real browser ---------------------------------------------------------------------------


@pytest.mark.browser
def test_a_citizen_downloads_a_receipt_that_verifies_in_a_real_browser(tmp_path):
    """Sign up in headless Chromium, open "who accessed my data", download an entry's receipt
    and check it offline against the published log key."""
    from tests.live import chromium, own_app, serve

    app = own_app(tmp_path, "pages")
    with serve(app) as server, chromium() as browser:
        page = browser.new_page(accept_downloads=True)
        page.goto(f"{server}/sign-up")
        page.fill("input[name=email]", "reader@example.org")
        page.fill("input[name=password]", PASSWORD)
        page.fill("input[name=password_again]", PASSWORD)
        page.get_by_test_id("sign-up").click()
        page.goto(f"{server}{MINE}")
        row = page.get_by_test_id("access-row").first
        entry_id = row.get_attribute("data-id")
        assert row.get_by_test_id("seal").get_attribute("data-status") == "verified"
        with page.expect_download() as download:
            row.get_by_test_id("receipt-link").click()
        receipt = download.value.path().read_text(encoding="utf-8")
        vkey = page.request.get(f"{server}/api/v1/audit/log-key").text().strip()
    with app.app_context():
        from common.db import get_session

        leaf = get_session().scalar(
            select(AuditEntry.leaf).where(AuditEntry.id == uuid.UUID(entry_id))
        )
        origin = audit.log_origin()
    assert notes.verify_tlog_proof(receipt, leaf, vkey, origin)
