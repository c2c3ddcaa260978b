"""Closing an account on the portal: a form that asks for the password again, with CSRF; a
wrong password changes nothing; the right one withdraws everything and signs the browser out."""

from __future__ import annotations

from sqlalchemy import select

from consent.models import Citizen, Consent, ConsentStatus
from tests.conftest import PASSWORD, browser_for, form_csrf
from tests.consent.test_api import give


def close(signed_in, password=PASSWORD, csrf=True):
    page = signed_in.client.get("/me/close").get_data(as_text=True)
    data = {"password": password}
    if csrf:
        data["csrf_token"] = form_csrf(page)
    return signed_in.client.post("/me/close", data=data)


def statuses(session, subject_id):
    session.expire_all()
    return [
        c.status for c in session.scalars(select(Consent).where(Consent.subject_id == subject_id))
    ]


def test_closing_needs_a_signed_in_citizen(client, charter):
    response = client.get("/me/close")
    assert response.status_code == 302
    assert "/sign-in" in response.headers["Location"]


def test_the_page_says_what_closing_does_before_anything_happens(citizen, charter, session):
    give(citizen, charter)
    page = citizen.client.get("/me/close")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Fermer mon compte" in html
    assert "consentement encore en vigueur est retiré" in html
    assert 'autocomplete="current-password"' in html
    assert statuses(session, citizen.subject_id) == [ConsentStatus.GIVEN]
    assert "/me/close" in citizen.client.get("/me").get_data(as_text=True)  # linked from my account


def test_closing_without_a_csrf_token_is_refused_and_changes_nothing(citizen, charter, session):
    give(citizen, charter)
    response = close(citizen, csrf=False)
    assert response.status_code == 403
    assert statuses(session, citizen.subject_id) == [ConsentStatus.GIVEN]
    assert citizen.client.get("/me").status_code == 200  # still signed in


def test_a_wrong_or_missing_password_changes_nothing(citizen, charter, session):
    give(citizen, charter)
    wrong = close(citizen, password="not my password")
    assert wrong.status_code == 401
    assert "Le mot de passe est incorrect." in wrong.get_data(as_text=True)
    assert close(citizen, password="").status_code == 422
    assert statuses(session, citizen.subject_id) == [ConsentStatus.GIVEN]
    assert citizen.client.get("/me").status_code == 200


def test_the_right_password_closes_the_account_and_ends_every_session(
    app, citizen, other_citizen, charter, session
):
    give(citizen, charter)
    give(other_citizen, charter)
    account = session.scalar(select(Citizen).where(Citizen.subject_id == citizen.subject_id))
    phone = browser_for(app, session, account)  # the same citizen, on another device
    assert phone.get("/me").status_code == 200
    response = close(citizen)
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/")
    assert statuses(session, citizen.subject_id) == [ConsentStatus.WITHDRAWN]
    assert statuses(session, other_citizen.subject_id) == [ConsentStatus.GIVEN]  # theirs only
    closed = session.scalar(select(Citizen).where(Citizen.subject_id == citizen.subject_id))
    assert closed is not None
    assert closed.closed_at is not None
    refused = phone.get("/me")  # every session of the account ended, not only this browser's
    assert refused.status_code == 302
    me = citizen.client.get("/me")
    assert me.status_code == 302
    assert "/sign-in" in me.headers["Location"]
    api = citizen.client.get("/api/v1/consents", headers=citizen.headers)
    assert api.status_code == 401
    # The address is free again: its owner may come back with a new, unrelated account.
    page = citizen.client.get("/sign-up").get_data(as_text=True)
    again = citizen.client.post(
        "/sign-up",
        data={
            "csrf_token": form_csrf(page),
            "email": citizen.email,
            "password": PASSWORD,
            "password_again": PASSWORD,
        },
    )
    assert again.status_code == 302


def test_a_token_acting_for_the_citizen_cannot_close_the_account(citizen, charter, session):
    # An app holding the citizen's token, without their browser session: no page, no POST.
    app_only = citizen.client.application.test_client()
    bearer = {"Authorization": "Bearer not-a-session"}
    assert app_only.get("/me/close", headers=bearer).status_code == 302  # to sign-in
    refused = app_only.post("/me/close", data={"password": PASSWORD}, headers=bearer)
    assert refused.status_code in (302, 403)
    closed = session.scalar(
        select(Citizen.closed_at).where(Citizen.subject_id == citizen.subject_id)
    )
    assert closed is None


def test_too_many_wrong_passwords_are_refused_for_a_while(app, citizen, charter, session):
    for _ in range(app.config["SIGN_IN_MAX_FAILURES"]):
        assert close(citizen, password="not my password").status_code == 401
    limited = close(citizen)  # even the right one, for a while
    assert limited.status_code == 429
    assert "Trop de tentatives" in limited.get_data(as_text=True)
    closed = session.scalar(
        select(Citizen.closed_at).where(Citizen.subject_id == citizen.subject_id)
    )
    assert closed is None


def test_the_page_speaks_english_when_asked(citizen, charter):
    home = citizen.client.get("/").get_data(as_text=True)
    citizen.client.post("/language", data={"csrf_token": form_csrf(home), "lang": "en"})
    html = citizen.client.get("/me/close").get_data(as_text=True)
    assert "Close my account for good" in html
