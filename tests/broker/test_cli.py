"""`tiers committee|org|client|iat`: the same rules as the API, refusals listed, exit 1."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from broker.cli import main
from broker.models import CommitteeMember, OAuthClient, Organisation
from broker.service import clients, credentials, organisations
from consent import accounts
from tests.broker import keys
from tests.conftest import PASSWORD


@pytest.fixture
def run(app):
    runner = app.test_cli_runner()  # click 8.2+: stdout and stderr apart

    def invoke(*args):
        return runner.invoke(main, list(args))

    return invoke


def rows(session, model):
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model))


def test_committee_add_needs_an_existing_account(run, session, charter):
    refused = run("committee", "add", "nobody@example.org")
    assert refused.exit_code == 1
    assert "signs up first" in refused.stderr
    accounts.sign_up(session, email="chair@example.org", password=PASSWORD)
    session.commit()
    added = run("committee", "add", "chair@example.org")
    assert added.exit_code == 0, added.stderr
    assert rows(session, CommitteeMember) == 1


def test_org_create_and_its_refusals(run, session, charter):
    made = run(
        "org",
        "create",
        "--slug",
        "energy-lab",
        "--name",
        "Energy Lab",
        "--role",
        "reuser",
        "--category",
        "research",
    )
    assert made.exit_code == 0, made.stderr
    assert "energy-lab" in made.stdout
    again = run("org", "create", "--slug", "energy-lab", "--name", "Twin", "--role", "holder")
    assert again.exit_code == 1
    assert "slug:" in again.stderr
    nameless = run("org", "create", "--slug", "lab-two", "--name", "Lab", "--role", "reuser")
    assert nameless.exit_code == 1
    assert "reuser_category:" in nameless.stderr
    wrong_role = run("org", "create", "--slug", "x", "--name", "X", "--role", "king")
    assert wrong_role.exit_code == 2
    assert rows(session, Organisation) == 1


@pytest.fixture
def lab(session, charter):
    org = organisations.create_organisation(
        session,
        slug="energy-lab",
        name="Energy Lab",
        role="reuser",
        reuser_category="research",
        actor="test",
    )
    session.commit()
    return org


def test_client_create_prints_the_secret_once_and_stores_its_hash(run, session, lab):
    result = run(
        "client",
        "create",
        "energy-lab",
        "--name",
        "Lab app",
        "--redirect-uri",
        "https://lab.example.org/callback",
        "--grant-type",
        "authorization_code",
        "--grant-type",
        "refresh_token",
        "--scope",
        "access:request",
        "--dpop",
    )
    assert result.exit_code == 0, result.stderr
    client_id = re.search(r"client_id: (\S+)", result.stdout).group(1)
    secret = re.search(r"client_secret: (\S+)", result.stdout).group(1)
    stored = session.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id))
    assert stored.secret_hash == credentials.hash_value(secret)
    assert stored.dpop_bound is True


def test_client_create_lists_every_refusal(run, session, lab):
    result = run(
        "client",
        "create",
        "energy-lab",
        "--name",
        "Lab app",
        "--redirect-uri",
        "http://lab.example.org/callback",
        "--grant-type",
        "implicit",
        "--scope",
        "admin",
    )
    assert result.exit_code == 1
    for field in ("grant_types:", "scope:"):
        assert field in result.stderr
    assert (
        run(
            "client",
            "create",
            "nobody",
            "--name",
            "X",
            "--grant-type",
            "client_credentials",
            "--scope",
            "x",
        ).exit_code
        == 1
    )
    assert rows(session, OAuthClient) == 0


def test_client_create_reads_public_keys_from_a_file(run, session, lab, tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(keys.jwks(keys.ec_private_jwk())))
    arguments = [
        "client",
        "create",
        "energy-lab",
        "--name",
        "Lab app",
        "--auth-method",
        "private_key_jwt",
        "--grant-type",
        "client_credentials",
        "--scope",
        "access:request",
        "--jwks-file",
        str(path),
    ]
    refused = run(*arguments)
    assert refused.exit_code == 1
    assert "private members" in refused.stderr
    path.write_text("{not json")
    assert run(*arguments).exit_code == 1
    path.write_text(json.dumps(keys.jwks(keys.ec_public_jwk())))
    made = run(*arguments)
    assert made.exit_code == 0, made.stderr
    assert "client_secret" not in made.stdout


def test_iat_issue_prints_a_token_that_registers_once(run, session, lab):
    result = run("iat", "issue", "energy-lab", "--hours", "2")
    assert result.exit_code == 0, result.stderr
    token = re.search(r"initial_access_token: (\S+)", result.stdout).group(1)
    assert clients.initial_access_token_is_valid(session, token)
    assert run("iat", "issue", "nobody").exit_code == 1
    assert run("iat", "issue", "energy-lab", "--hours", "0").exit_code == 2


def test_citizen_close_needs_an_open_account_and_confirmation(run, app, session, charter):
    refused = run("citizen", "close", "nobody@example.org", "--yes")
    assert refused.exit_code == 1
    assert "signs up first" in refused.stderr
    citizen = accounts.sign_up(session, email="ana@example.org", password=PASSWORD)
    session.commit()
    unconfirmed = run("citizen", "close", "ana@example.org")  # no --yes, no answer: aborted
    assert unconfirmed.exit_code == 1
    session.refresh(citizen)
    assert citizen.closed_at is None
    closed = run("citizen", "close", "ana@example.org", "--yes")
    assert closed.exit_code == 0, closed.stderr
    session.refresh(citizen)
    assert citizen.closed_at is not None
    assert run("citizen", "close", "ana@example.org", "--yes").exit_code == 1  # once
    assert run("citizen", "erase-due").stdout.strip() == "0 closed account(s) erased"  # grace
    app.config["ACCOUNT_ERASURE_GRACE"] = timedelta(0)
    assert run("citizen", "erase-due").stdout.strip() == "1 closed account(s) erased"
    session.refresh(citizen)
    assert citizen.erased_at is not None
