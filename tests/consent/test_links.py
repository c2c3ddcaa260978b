"""Linking a citizen to their account at a data holder with a one-time pairing code: the happy
path, the wrong holder, reused and expired codes, unlinking, rate limits, and the holder's
identifier kept out of pages, reusers' reach and the audit log."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from audit import service as audit
from audit.models import AuditDetail, AuditEntry
from common.clock import frozen, utcnow
from consent import links
from consent.models import HolderLink, PairingCode
from tests.conftest import form_csrf
from tests.datasets.helpers import count, make_holder, personal_body, with_datasets_api

PRM = "09876543210987"  # a 14-digit meter number, the holder's identifier for the citizen
CODE = re.compile(r'data-testid="pairing-code">([0-9A-Z]{4}-[0-9A-Z]{4})<')


@pytest.fixture
def app(app):
    return with_datasets_api(app)


@pytest.fixture
def holder(session, make_client, charter):
    return make_holder(session, make_client)


@pytest.fixture
def other_holder(session, make_client, charter):
    return make_holder(session, make_client)


def ask_code(signed_in, holder) -> str:
    page = signed_in.client.get("/me/links")
    assert page.status_code == 200
    assert holder.organisation.name in page.get_data(as_text=True)
    response = signed_in.client.post(
        "/me/links/codes",
        data={"csrf_token": form_csrf(page.get_data(as_text=True)), "holder": str(holder.id)},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    match = CODE.search(response.get_data(as_text=True))
    assert match, "no pairing code on the page"
    return match.group(1)


def pair(client, holder, code, subject=PRM, **extra):
    return client.post(
        "/api/v1/pairings",
        json={"code": code, "subject": subject, **extra},
        headers=holder.headers,
    )


def test_a_citizen_links_an_account_with_a_code_the_holder_sends_back(
    client, session, citizen, holder
):
    code = ask_code(citizen, holder)
    assert re.fullmatch(r"[2-9A-HJKMNP-TW-Z]{4}-[2-9A-HJKMNP-TW-Z]{4}", code)

    response = pair(client, holder, code)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["created"] is True
    assert PRM not in response.get_data(as_text=True)  # the identifier is not echoed

    page = citizen.client.get("/me/links").get_data(as_text=True)
    assert holder.organisation.name in page
    assert "…0987" in page
    assert PRM not in page  # only the last 4 characters are ever shown
    assert links.linked_subjects(session, holder.id, [citizen.subject_id]) == {
        PRM: citizen.subject_id
    }


def test_the_code_is_stored_only_as_a_keyed_hash(session, citizen, holder):
    code = ask_code(citizen, holder)
    (row,) = session.scalars(select(PairingCode))
    raw = code.replace("-", "")
    assert raw not in row.code_tag
    assert len(row.code_tag) == 64


def test_a_code_for_one_holder_is_unknown_to_another(
    client, session, citizen, holder, other_holder
):
    code = ask_code(citizen, holder)
    response = pair(client, other_holder, code)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["type"] == "/problems/not-found"
    assert count(session, HolderLink) == 0
    # The rightful holder can still use it.
    assert pair(client, holder, code).status_code == 201


def test_a_code_works_once(client, session, citizen, holder):
    code = ask_code(citizen, holder)
    assert pair(client, holder, code).status_code == 201
    again = pair(client, holder, code, subject="11112222333344")
    assert again.status_code == 409
    assert again.get_json()["type"] == "/problems/pairing-code-used"
    assert count(session, HolderLink) == 1


def test_a_code_is_good_for_15_minutes(client, citizen, holder):
    with frozen(utcnow() - timedelta(minutes=14, seconds=50)):
        code = ask_code(citizen, holder)
    assert pair(client, holder, code).status_code == 201


def test_a_code_expires_after_15_minutes(client, session, citizen, holder):
    with frozen(utcnow() - timedelta(minutes=15, seconds=1)):
        code = ask_code(citizen, holder)
    response = pair(client, holder, code)
    assert response.status_code == 409
    assert response.get_json()["type"] == "/problems/pairing-code-expired"
    assert count(session, HolderLink) == 0


def test_a_newer_code_for_the_same_holder_replaces_the_older_one(client, citizen, holder):
    first = ask_code(citizen, holder)
    second = ask_code(citizen, holder)
    assert pair(client, holder, first).get_json()["type"] == "/problems/pairing-code-expired"
    assert pair(client, holder, second).status_code == 201


def test_codes_are_typed_forgivingly_but_checked_strictly(client, citizen, holder):
    code = ask_code(citizen, holder)
    malformed = pair(client, holder, "not a code")
    assert malformed.status_code == 422
    assert "code" in malformed.get_json()["errors"]
    assert pair(client, holder, code.lower().replace("-", "")).status_code == 201


def test_a_bad_identifier_is_refused_with_its_field_and_the_code_stays_usable(
    client, session, citizen, holder
):
    code = ask_code(citizen, holder)
    for subject in ("", "has space", "x" * 200):
        response = pair(client, holder, code, subject=subject)
        assert response.status_code == 422
        assert "subject" in response.get_json()["errors"]
    assert pair(client, holder, code).status_code == 201


def test_a_link_may_name_one_of_the_holders_datasets_only(
    client, session, citizen, holder, other_holder
):
    created = client.post(
        "/api/v1/datasets", json=personal_body(holder.resource_uri), headers=holder.headers
    ).get_json()
    theirs = client.post(
        "/api/v1/datasets",
        json=personal_body(other_holder.resource_uri),
        headers=other_holder.headers,
    ).get_json()
    code = ask_code(citizen, holder)
    refused = pair(client, holder, code, dataset=theirs["id"])
    assert refused.status_code == 422
    assert "dataset" in refused.get_json()["errors"]
    linked = pair(client, holder, code, dataset="courbe-de-charge")
    assert linked.status_code == 201
    assert linked.get_json()["dataset"] == created["id"]
    other_dataset = uuid.UUID(theirs["id"])
    assert (
        links.linked_subjects(session, holder.id, [citizen.subject_id], dataset_id=other_dataset)
        == {}
    )


def test_one_identifier_belongs_to_one_citizen(client, citizen, other_citizen, holder):
    assert pair(client, holder, ask_code(citizen, holder)).status_code == 201
    again = pair(client, holder, ask_code(citizen, holder))
    assert again.status_code == 200  # the same person pairing again: nothing new
    assert again.get_json()["created"] is False
    taken = pair(client, holder, ask_code(other_citizen, holder))
    assert taken.status_code == 409
    assert "subject" in taken.get_json()["errors"]


def test_a_citizen_unlinks_and_tiers_forgets_the_identifier(client, session, citizen, holder):
    link_id = pair(client, holder, ask_code(citizen, holder)).get_json()["id"]
    page = citizen.client.get("/me/links").get_data(as_text=True)
    response = citizen.client.post(
        f"/me/links/{link_id}/unlink", data={"csrf_token": form_csrf(page)}
    )
    assert response.status_code == 302
    assert count(session, HolderLink) == 0
    assert links.linked_subjects(session, holder.id, [citizen.subject_id]) == {}
    assert 'data-testid="no-links"' in citizen.client.get("/me/links").get_data(as_text=True)


def test_nobody_unlinks_someone_elses_account(client, session, citizen, other_citizen, holder):
    link_id = pair(client, holder, ask_code(citizen, holder)).get_json()["id"]
    page = other_citizen.client.get("/me/links").get_data(as_text=True)
    response = other_citizen.client.post(
        f"/me/links/{link_id}/unlink", data={"csrf_token": form_csrf(page)}
    )
    assert response.status_code == 404
    assert count(session, HolderLink) == 1


def test_an_unlink_without_csrf_is_refused(client, session, citizen, holder):
    link_id = pair(client, holder, ask_code(citizen, holder)).get_json()["id"]
    assert citizen.client.post(f"/me/links/{link_id}/unlink").status_code == 403
    assert count(session, HolderLink) == 1


def test_holder_identifiers_never_reach_the_audit_log(client, session, citizen, holder):
    code = ask_code(citizen, holder)
    pair(client, holder, code)
    pair(client, holder, code, subject="55556666777788")  # refused: used
    link_id = pair(client, holder, ask_code(citizen, holder)).get_json()["id"]
    page = citizen.client.get("/me/links").get_data(as_text=True)
    citizen.client.post(f"/me/links/{link_id}/unlink", data={"csrf_token": form_csrf(page)})

    entries = list(session.scalars(select(AuditEntry)))
    events = {e.event for e in entries}
    assert {"consent:pairing:issue", "consent:link:create", "consent:link:remove"} <= events
    assert "consent:pairing:redeem" in events  # the refusal is on record too
    for identifier in (PRM, "55556666777788"):
        for entry in entries:
            for stored in (entry.leaf, entry.actor.encode(), (entry.reason or "").encode()):
                assert identifier.encode() not in stored
        for body in session.scalars(select(AuditDetail.body)):
            assert identifier.encode() not in body
        # Not even in the detail the citizen can decrypt.
        for entry in audit.entries_for_subject(session, citizen.subject_id):
            assert identifier not in repr(entry.detail)


def test_the_identifier_is_sealed_at_rest(client, session, citizen, holder):
    pair(client, holder, ask_code(citizen, holder))
    (link,) = session.scalars(select(HolderLink))
    assert PRM.encode() not in link.ref_sealed
    assert PRM not in link.ref_tag
    assert link.ref_last4 == "0987"


def test_a_citizen_cannot_ask_for_codes_without_end(citizen, holder):
    for _ in range(links.IssueLimit().max_codes):
        ask_code(citizen, holder)
    page = citizen.client.get("/me/links").get_data(as_text=True)
    response = citizen.client.post(
        "/me/links/codes", data={"csrf_token": form_csrf(page), "holder": str(holder.id)}
    )
    assert response.status_code == 429
    assert CODE.search(response.get_data(as_text=True)) is None


def test_a_holder_guessing_codes_is_stopped(client, session, citizen, holder):
    code = ask_code(citizen, holder)
    for _ in range(links.RedeemLimit().max_failures):
        assert pair(client, holder, "2222-2222").status_code == 404
    refused = pair(client, holder, code)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"]
    assert count(session, HolderLink) == 0


def test_a_citizen_can_only_ask_for_a_code_for_a_holder(client, session, citizen, oauth_headers):
    page = citizen.client.get("/me/links").get_data(as_text=True)
    for holder_id in ("not-a-uuid", str(uuid.uuid4())):
        response = citizen.client.post(
            "/me/links/codes", data={"csrf_token": form_csrf(page), "holder": holder_id}
        )
        assert response.status_code == 422
    assert count(session, PairingCode) == 0


def test_the_pairing_api_is_for_holders_only(client, citizen, holder, oauth_headers):
    code = ask_code(citizen, holder)
    reuser = oauth_headers("reuser", "access:request")
    response = client.post("/api/v1/pairings", json={"code": code, "subject": PRM}, headers=reuser)
    assert response.status_code == 403
    assert client.post("/api/v1/pairings", json={"code": code, "subject": PRM}).status_code == 401


def test_the_links_page_needs_a_signed_in_citizen(client, charter):
    response = client.get("/me/links")
    assert response.status_code == 302
    assert "/sign-in" in response.headers["Location"]
