"""The public privacy statement: the charter's figures, and the budget left this period."""

from __future__ import annotations

from tests.anonymize.conftest import spec

RHO = "\N{GREEK SMALL LETTER RHO}"


def test_the_privacy_statement_needs_a_charter(client):
    response = client.get("/statistics")
    assert response.status_code == 404
    assert "Aucune charte" in response.get_data(as_text=True)


def test_the_privacy_statement_shows_the_budget_and_what_is_left(client, observatory, stage):
    page = client.get("/statistics").get_data(as_text=True)
    assert f"{RHO} = 0 / 1\n" in page
    assert "Vous êtes l&#39;unité protégée" in page or "Vous êtes l'unité protégée" in page
    assert "inférieur à 10" in page  # the charter's minimum cohort
    staged = stage()
    made = client.post("/api/v1/releases", json=spec(staged, rho="0.1"), headers=observatory)
    assert made.status_code == 201
    page = client.get("/statistics").get_data(as_text=True)
    assert f"{RHO} = {made.get_json()['rho']} / 1\n" in page
    assert '<dd data-testid="releases-made">1</dd>' in page


def test_the_privacy_statement_is_in_english_too(client, charter):
    with client.session_transaction() as browser:
        browser["lang"] = "en"
    page = client.get("/statistics").get_data(as_text=True)
    assert "You are the protected unit" in page
    assert "at δ = 1e-07" in page
