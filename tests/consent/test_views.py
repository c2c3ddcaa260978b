"""The portal through HTTP: forms with CSRF, sign-up/in/out, consents, no IDOR, languages."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import func, select

from charter.document import terms_hash
from charter.notice import notice_hash
from consent.models import Citizen, Consent
from tests.conftest import PASSWORD, form_csrf


def count(session, model):
    return session.scalar(select(func.count()).select_from(model))


def sign_up(client, email="new@example.org", password=PASSWORD, again=None):
    token = form_csrf(client.get("/sign-up").get_data(as_text=True))
    return client.post(
        "/sign-up",
        data={
            "csrf_token": token,
            "email": email,
            "password": password,
            "password_again": again or password,
        },
    )


def test_a_portal_post_without_a_csrf_token_is_refused_and_creates_nothing(
    client, session, charter
):
    response = client.post(
        "/sign-up",
        data={"email": "x@example.org", "password": PASSWORD, "password_again": PASSWORD},
    )
    assert response.status_code == 403
    assert "text/html" in response.content_type
    assert count(session, Citizen) == 0


def test_sign_up_signs_in_and_lands_on_my_consents(client, session, charter):
    response = sign_up(client)
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/me/consents")
    page = client.get("/me/consents")
    assert page.status_code == 200
    assert "Mes consentements" in page.get_data(as_text=True)


def test_sign_up_errors_are_shown_by_field(client, session, charter):
    response = sign_up(client, email="not-an-address", password="short", again="other")
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'aria-invalid="true"' in html or "error" in html
    assert count(session, Citizen) == 0


def test_sign_in_refuses_a_wrong_password_and_then_rate_limits(client, session, charter, app):
    sign_up(client, email="b@example.org")
    client.post(
        "/sign-out",
        data={"csrf_token": form_csrf(client.get("/me/consents").get_data(as_text=True))},
    )
    statuses = []
    for _ in range(app.config["SIGN_IN_MAX_FAILURES"] + 1):
        token = form_csrf(client.get("/sign-in").get_data(as_text=True))
        statuses.append(
            client.post(
                "/sign-in",
                data={"csrf_token": token, "email": "b@example.org", "password": "wrong password"},
            ).status_code
        )
    assert statuses == [401] * app.config["SIGN_IN_MAX_FAILURES"] + [429]


def test_sign_in_never_redirects_off_site(client, session, charter):
    sign_up(client, email="c@example.org")
    client.post(
        "/sign-out",
        data={"csrf_token": form_csrf(client.get("/me/consents").get_data(as_text=True))},
    )
    token = form_csrf(client.get("/sign-in").get_data(as_text=True))
    response = client.post(
        "/sign-in",
        data={
            "csrf_token": token,
            "email": "c@example.org",
            "password": PASSWORD,
            "next": "//evil.example/",
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/me/consents")


def test_pages_for_citizens_send_strangers_to_sign_in(client, charter):
    response = client.get("/me/consents")
    assert response.status_code == 302
    assert "/sign-in?next=" in response.headers["Location"]


def test_give_withdraw_and_history_through_the_portal(citizen, session, charter):
    client = citizen.client
    form_page = client.get("/me/consents/new/energy-coaching").get_data(as_text=True)
    purpose = charter.require_purpose("energy-coaching")
    assert notice_hash(charter.doc, purpose, "fr") in form_page
    response = client.post(
        "/me/consents/new/energy-coaching",
        data={
            "csrf_token": form_csrf(form_page),
            "terms_hash": terms_hash(purpose),
            "notice_hash": notice_hash(charter.doc, purpose, "fr"),
            "language": "fr",
            "recipient_id": purpose.named_reusers[0].id,
            "data_categories": list(purpose.data_categories),
            "duration_days": "90",
        },
    )
    assert response.status_code == 302
    detail_url = response.headers["Location"]
    detail = client.get(detail_url).get_data(as_text=True)
    consent_id = re.search(r"/me/consents/([0-9a-f-]{36})", detail_url).group(1)
    receipt = client.get(f"/me/consents/{consent_id}/receipt")
    assert receipt.headers["Content-Disposition"].startswith("attachment")
    assert receipt.get_data(as_text=True).count(".") == 2
    withdrawn = client.post(
        f"/me/consents/{consent_id}/withdraw", data={"csrf_token": form_csrf(detail)}
    )
    assert withdrawn.status_code == 302
    history = client.get(detail_url).get_data(as_text=True)
    assert "Consentement retiré" in history
    assert "Consentement donné" in history


def test_a_stale_notice_is_refused_with_the_reason(citizen, session, charter):
    form_page = citizen.client.get("/me/consents/new/energy-coaching").get_data(as_text=True)
    purpose = charter.require_purpose("energy-coaching")
    response = citizen.client.post(
        "/me/consents/new/energy-coaching",
        data={
            "csrf_token": form_csrf(form_page),
            "terms_hash": "0" * 64,
            "notice_hash": "1" * 64,
            "recipient_id": purpose.named_reusers[0].id,
        },
    )
    assert response.status_code == 422
    assert count(session, Consent) == 0


def test_a_citizen_cannot_see_or_withdraw_another_citizens_consent_on_the_portal(
    citizen, other_citizen, session, charter
):
    purpose = charter.require_purpose("energy-coaching")
    created = citizen.client.post(
        "/api/v1/consents",
        headers=citizen.headers,
        json={
            "purpose_id": purpose.id,
            "terms_hash": terms_hash(purpose),
            "recipient_id": purpose.named_reusers[0].id,
        },
    ).get_json()
    own_page = other_citizen.client.get("/me/consents").get_data(as_text=True)
    assert other_citizen.client.get(f"/me/consents/{created['id']}").status_code == 404
    assert other_citizen.client.get(f"/me/consents/{created['id']}/receipt").status_code == 404
    response = other_citizen.client.post(
        f"/me/consents/{created['id']}/withdraw", data={"csrf_token": form_csrf(own_page)}
    )
    assert response.status_code == 404
    session.expire_all()
    assert session.scalars(select(Consent.status)).all()[0].value == "given"


def test_the_portal_speaks_french_first_and_english_on_request(client, charter):
    home = client.get("/").get_data(as_text=True)
    assert '<html lang="fr"' in home
    token = form_csrf(home)
    client.post("/language", data={"csrf_token": token, "lang": "en", "next": "/charter"})
    english = client.get("/charter").get_data(as_text=True)
    assert '<html lang="en"' in english
    assert charter.require_purpose("energy-coaching").title.en in english


def test_sign_out_kills_the_session(citizen, charter):
    page = citizen.client.get("/me/consents").get_data(as_text=True)
    citizen.client.post("/sign-out", data={"csrf_token": form_csrf(page)})
    assert citizen.client.get("/me/consents").status_code == 302
    assert citizen.client.get("/api/v1/consents").status_code == 401


def test_an_address_already_taken_is_refused_on_the_form(client, session, charter):
    sign_up(client, email="taken@example.org")
    other = client.application.test_client()
    response = sign_up(other, email="taken@example.org")
    assert response.status_code == 422
    assert count(session, Citizen) == 1


@pytest.mark.parametrize(
    "path", ["/me", "/me/consents/export.jsonld", "/me/consents/new/energy-coaching"]
)
def test_every_citizen_page_sends_strangers_to_sign_in(client, charter, path):
    response = client.get(path)
    assert response.status_code == 302
    assert "/sign-in?next=" in response.headers["Location"]


def test_sign_out_without_a_csrf_token_is_refused(citizen, charter):
    assert citizen.client.post("/sign-out").status_code == 403
    assert citizen.client.get("/me/consents").status_code == 200


def test_an_unknown_language_is_refused_and_changes_nothing(client, charter):
    home = client.get("/").get_data(as_text=True)
    response = client.post("/language", data={"csrf_token": form_csrf(home), "lang": "de"})
    assert response.status_code == 400
    assert '<html lang="fr"' in client.get("/").get_data(as_text=True)


def test_an_unknown_purpose_has_no_page_and_no_form(citizen, charter):
    assert citizen.client.get("/charter/no-such-purpose").status_code == 404
    assert citizen.client.get("/me/consents/new/no-such-purpose").status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"duration_days": "abc"}, "duration_days"),
        ({"duration_days": "99999"}, "duration_days"),
        ({"mode": "everything"}, "mode"),
        ({"recipient_id": "someone-else"}, "recipient_id"),
        ({"data_categories": "mobility.trips"}, "data_categories"),
    ],
)
def test_a_bad_give_form_shows_its_field_and_writes_nothing(
    citizen, session, charter, change, field
):
    form_page = citizen.client.get("/me/consents/new/energy-coaching").get_data(as_text=True)
    purpose = charter.require_purpose("energy-coaching")
    data = {
        "csrf_token": form_csrf(form_page),
        "terms_hash": terms_hash(purpose),
        "notice_hash": notice_hash(charter.doc, purpose, "fr"),
        "recipient_id": purpose.named_reusers[0].id,
        **change,
    }
    response = citizen.client.post("/me/consents/new/energy-coaching", data=data)
    assert response.status_code == 422
    assert 'data-testid="give-errors"' in response.get_data(as_text=True)
    assert count(session, Consent) == 0


def _give_by_api(citizen, charter):
    purpose = charter.require_purpose("energy-coaching")
    return citizen.client.post(
        "/api/v1/consents",
        headers=citizen.headers,
        json={
            "purpose_id": purpose.id,
            "terms_hash": terms_hash(purpose),
            "recipient_id": purpose.named_reusers[0].id,
        },
    ).get_json()


def test_another_citizens_consent_cannot_be_renewed_or_exported_on_the_portal(
    citizen, other_citizen, session, charter
):
    created = _give_by_api(citizen, charter)
    page = other_citizen.client.get("/me/consents").get_data(as_text=True)
    renewed = other_citizen.client.post(
        f"/me/consents/{created['id']}/renew",
        data={"csrf_token": form_csrf(page), "terms_hash": created["terms_hash"]},
    )
    assert renewed.status_code == 404
    assert (
        other_citizen.client.get(f"/me/consents/{created['id']}/record.jsonld").status_code == 404
    )
    session.expire_all()
    assert [e.type.value for e in session.get(Consent, uuid.UUID(created["id"])).events] == [
        "given"
    ]


def test_a_bad_renew_form_is_flashed_and_renews_nothing(citizen, session, charter):
    created = _give_by_api(citizen, charter)
    page = citizen.client.get(f"/me/consents/{created['id']}").get_data(as_text=True)
    response = citizen.client.post(
        f"/me/consents/{created['id']}/renew",
        data={"csrf_token": form_csrf(page), "terms_hash": "not-a-hash"},
        follow_redirects=True,
    )
    assert 'data-testid="flash-error"' in response.get_data(as_text=True)
    session.expire_all()
    assert [e.type.value for e in session.get(Consent, uuid.UUID(created["id"])).events] == [
        "given"
    ]


def test_renewing_on_the_portal_records_a_renewal(citizen, session, charter):
    created = _give_by_api(citizen, charter)
    page = citizen.client.get(f"/me/consents/{created['id']}").get_data(as_text=True)
    response = citizen.client.post(
        f"/me/consents/{created['id']}/renew",
        data={
            "csrf_token": form_csrf(page),
            "terms_hash": created["terms_hash"],
            "notice_hash": created["notice_hash"],
            "language": "fr",
        },
    )
    assert response.status_code == 302
    assert "Consentement renouvelé" in citizen.client.get(response.headers["Location"]).get_data(
        as_text=True
    )
