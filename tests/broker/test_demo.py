"""`tiers demo-seed` against the four demo holders served for real: each holder's datasets
registered from its own `GET /datasets`, under its organisation, idempotently; EcoWatt's
API client able to file an access request for energy coaching on them; and the API clients of
the holders with personal data, able to redeem a citizen's pairing code."""

from __future__ import annotations

import base64
import json
import re
import stat
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from requests.structures import CaseInsensitiveDict
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audit.models import AuditEntry
from broker import demo
from broker.models import AuthMethod, Dataset, DatasetAuth, OAuthClient, Organisation
from broker.service import access, organisations
from common.clock import utcnow
from consent import links
from consent.models import Citizen
from examples.holders import NAMES, build
from examples.holders.__main__ import read_credentials
from examples.holders.app import create_app
from examples.holders.pairing import Pairing, TiersClient
from tests.conftest import ISSUER, browser_for, form_csrf, sign_in
from tests.gateway.conftest import Late, serve

CHARTER = Path(__file__).resolve().parents[2] / "examples" / "charter.yaml"
ETALAB = "https://www.etalab.gouv.fr/licence-ouverte-open-licence/"


@pytest.fixture(scope="module")
def holders() -> Iterator[dict[str, str]]:
    """The four demo holders, each on its own free port: name -> base URL."""
    with ExitStack() as stack:
        urls: dict[str, str] = {}
        for name in NAMES:
            late = Late()
            url = stack.enter_context(serve(late))
            late.app = create_app(build(name, "tests"), tiers_url=ISSUER, resource_uri=url)
            urls[name] = url
        yield urls


def _seed(app: Flask, folder: Path, urls: list[str]) -> list[str]:
    with app.app_context():
        return list(demo.seed(CHARTER, instance_dir=folder, holder_urls=urls, wait=5))


def _registered(session: Session) -> dict[tuple[str, str], Dataset]:
    rows = session.execute(select(Organisation.slug, Dataset).join(Dataset.holder)).all()
    return {(slug, dataset.slug): dataset for slug, dataset in rows}


def test_the_seed_registers_every_demo_holders_datasets_once(
    app: Flask, session: Session, tmp_path: Path, holders: dict[str, str]
) -> None:
    first = _seed(app, tmp_path, list(holders.values()))
    registered = _registered(session)
    assert set(registered) == {
        ("brevanne-reseaux", "electricity-load-curve"),
        ("brevanne-reseaux", "electricity-daily"),
        ("brevanne-gaz", "gas-daily"),
        ("brevanne-mobilites", "transit-trips"),
        ("ville-de-brevanne", "buildings-daily"),
        ("ville-de-brevanne", "buildings-sites"),
    }, first
    load_curve = registered[("brevanne-reseaux", "electricity-load-curve")]
    assert load_curve.endpoint_url == f"{holders['electricity']}/datasets/load_curve"
    assert load_curve.auth is DatasetAuth.TIERS_TOKEN
    assert load_curve.personal
    assert load_curve.subject_field == "prm"
    assert load_curve.licence is None
    power = next(f for f in load_curve.fields if f["name"] == "power_w")
    assert (power["min"], power["max"], power["sensitive"]) == (0, 12000, True)
    for slug in ("buildings-daily", "buildings-sites"):
        sensors = registered[("ville-de-brevanne", slug)]
        assert sensors.auth is DatasetAuth.NONE
        assert not sensors.personal
        assert sensors.licence == ETALAB
    # Each holder's tokens name its own service as their audience (RFC 8707).
    for name, slug in demo.DEMO_HOLDERS.items():
        organisation = session.scalar(select(Organisation).where(Organisation.slug == slug))
        assert organisation is not None
        assert organisation.resource_uri == holders[name]

    def entries() -> int:
        return int(session.scalar(select(func.count()).select_from(AuditEntry)) or 0)

    before = entries()
    again = _seed(app, tmp_path, list(holders.values()))
    assert entries() == before  # nothing written the second time
    assert {k: d.id for k, d in _registered(session).items()} == {
        k: d.id for k, d in registered.items()
    }
    assert sum("already registered" in line for line in again) == 6
    assert not [x for x in again if x.startswith("dataset") and "already registered" not in x]
    assert not any(x.startswith("organisation") and "resource URI" in x for x in again)


def test_a_holder_that_moved_has_its_endpoints_updated(
    app: Flask, session: Session, tmp_path: Path, holders: dict[str, str]
) -> None:
    _seed(app, tmp_path, [holders["gas"]])
    with ExitStack() as stack:  # the same holder, now on another port
        late = Late()
        moved = stack.enter_context(serve(late))
        late.app = create_app(build("gas", "tests"), tiers_url=ISSUER, resource_uri=moved)
        lines = _seed(app, tmp_path, [moved])
    assert any("gas-daily updated: endpoint_url" in line for line in lines), lines
    (gas,) = [d for (slug, _), d in _registered(session).items() if slug == "brevanne-gaz"]
    assert gas.endpoint_url == f"{moved}/datasets/daily"
    assert gas.holder.resource_uri == moved


def test_a_holder_that_does_not_answer_is_skipped_and_said(
    app: Flask, session: Session, tmp_path: Path, holders: dict[str, str]
) -> None:
    with ExitStack() as stack:
        late = Late()
        gone = stack.enter_context(serve(late))
    with app.app_context():
        lines = list(demo.seed(CHARTER, instance_dir=tmp_path, holder_urls=[gone], wait=0))
    assert any(f"holder {gone} does not answer" in line for line in lines)
    assert _registered(session) == {}


def test_ecowatt_files_an_access_request_for_energy_coaching_with_its_api_client(
    app: Flask, client: FlaskClient, session: Session, tmp_path: Path, holders: dict[str, str]
) -> None:
    _seed(app, tmp_path, [holders["electricity"]])
    path = tmp_path / demo.REUSER_API_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    credentials = json.loads(path.read_text())
    again = _seed(app, tmp_path, [holders["electricity"]])
    assert any(
        f"API client {credentials['client_id']} of ecowatt-conseil already" in x for x in again
    )
    assert json.loads(path.read_text()) == credentials

    pair = f"{credentials['client_id']}:{credentials['client_secret']}".encode()
    answer = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "access:request"},
        headers={"Authorization": "Basic " + base64.b64encode(pair).decode()},
    )
    assert answer.status_code == 200, answer.get_json()
    bearer = {"Authorization": f"Bearer {answer.get_json()['access_token']}"}
    daily = _registered(session)[("brevanne-reseaux", "electricity-daily")]
    filed = client.post(
        "/api/v1/access-requests",
        json={
            "purpose": "energy-coaching",
            "mode": "individual",
            "datasets": [str(daily.id)],
            "justification": "Coaching the households who asked us to, as the charter allows.",
            "period_end": (utcnow() + timedelta(days=90)).isoformat(),
        },
        headers=bearer,
    )
    assert filed.status_code == 201, filed.get_json()
    assert filed.get_json()["status"] == "approved"
    grants = client.get("/api/v1/grants", headers=bearer).get_json()
    assert [g["purpose"] for g in grants] == ["energy-coaching"]


def test_each_holder_with_personal_data_gets_an_api_client_to_pair_once(
    app: Flask, session: Session, tmp_path: Path
) -> None:
    first = _seed(app, tmp_path, [])
    saved = {}
    for slug in demo.PAIRING_HOLDERS:
        path = tmp_path / demo.holder_api_file(slug)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, first
        saved[slug] = json.loads(path.read_text())
        assert f"API client {saved[slug]['client_id']} of {slug} registered; secret in {path}" in (
            first
        )
        model = session.scalar(
            select(OAuthClient).where(OAuthClient.client_id == saved[slug]["client_id"])
        )
        assert model is not None
        assert model.organisation.slug == slug
        assert model.auth_method is AuthMethod.CLIENT_SECRET_BASIC
        assert (model.grant_types, model.scope) == (["client_credentials"], "datasets:write")
    # The city's building sensors are open data: nobody to pair, no client.
    assert not (tmp_path / demo.holder_api_file("ville-de-brevanne")).exists()
    assert len({c["client_id"] for c in saved.values()}) == 3

    def clients() -> int:
        return int(session.scalar(select(func.count()).select_from(OAuthClient)) or 0)

    before = clients()
    again = _seed(app, tmp_path, [])
    assert clients() == before
    for slug, credentials in saved.items():
        assert f"API client {credentials['client_id']} of {slug} already exists" in again
        assert json.loads((tmp_path / demo.holder_api_file(slug)).read_text()) == credentials
    assert not [line for line in again if "registered; secret in" in line]


class _ThroughFlask(requests.adapters.BaseAdapter):
    """Hands the holder's real HTTP calls (examples/holders/pairing.py) to Tiers' test client,
    so that they run in the test's transaction."""

    def __init__(self, client: FlaskClient) -> None:
        super().__init__()
        self.client = client

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        url = urlsplit(request.url or "")
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        answer = self.client.open(
            url.path,
            method=request.method or "GET",
            query_string=url.query,
            headers=headers,
            data=request.body,
        )
        response = requests.Response()
        response.status_code = answer.status_code
        response._content = answer.get_data()
        response.headers = CaseInsensitiveDict(dict(answer.headers))
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def test_a_holder_redeems_a_citizens_pairing_code_with_the_client_the_seed_made(
    app: Flask, client: FlaskClient, session: Session, tmp_path: Path, holders: dict[str, str]
) -> None:
    _seed(app, tmp_path, [holders["electricity"]])
    daily = _registered(session)[("brevanne-reseaux", "electricity-daily")]
    reseaux = organisations.get_organisation_by_slug(session, "brevanne-reseaux")
    prm = requests.get(f"{holders['electricity']}/demo/subjects", timeout=5).json()["subjects"]
    prm = prm[0]["prm"]
    citizen = sign_in(app, session)
    page = citizen.client.get("/me/links").get_data(as_text=True)
    asked = citizen.client.post(
        "/me/links/codes", data={"csrf_token": form_csrf(page), "holder": str(reseaux.id)}
    )
    assert asked.status_code == 200, asked.get_data(as_text=True)
    found = re.search(r'data-testid="pairing-code">([0-9A-Z]{4}-[0-9A-Z]{4})<', asked.text)
    assert found, "no pairing code on the page"

    client_id, client_secret = read_credentials(tmp_path / demo.holder_api_file("brevanne-reseaux"))
    http = requests.Session()
    http.mount(ISSUER, _ThroughFlask(client))
    holder = TiersClient(ISSUER, client_id, client_secret, http=http)
    try:
        paired = holder.pair(Pairing(found.group(1), prm, str(daily.id)))
    finally:
        holder.close()
    assert paired["created"] is True
    assert paired["dataset"] == str(daily.id)
    assert links.linked_subjects(session, reseaux.id, [citizen.subject_id]) == {
        prm: citizen.subject_id
    }
    assert "Brévanne Réseaux" in citizen.client.get("/me/links").get_data(as_text=True)


def test_the_observatorys_account_sees_its_statistics_under_an_aggregate_grant(
    app: Flask, session: Session, tmp_path: Path, holders: dict[str, str]
) -> None:
    # Without holders: the member is made, the grant waits for the datasets.
    lines = _seed(app, tmp_path, [])
    assert f"{demo.DEMO_OBSERVATORY_MEMBER} acts for {demo.OBSERVATORY_SLUG}" in lines
    assert any("no energy dataset registered yet" in line for line in lines), lines
    first = _seed(app, tmp_path, [holders["electricity"], holders["gas"]])
    assert f"aggregate access request of {demo.OBSERVATORY_SLUG}: approved" in first, first
    again = _seed(app, tmp_path, [holders["electricity"], holders["gas"]])
    assert any("already exists" in line and "aggregate grant" in line for line in again)
    observatory = organisations.get_organisation_by_slug(session, demo.OBSERVATORY_SLUG)
    (grant,) = access.own_grants(session, observatory.id)
    assert (grant.purpose_id, grant.mode) == ("energy-observatory", "aggregate")
    covered = {
        d.slug for d in session.scalars(select(Dataset).where(Dataset.id.in_(
            [uuid.UUID(i) for i in grant.dataset_ids])))
    }  # fmt: skip
    assert covered == {"electricity-load-curve", "electricity-daily", "gas-daily"}
    citizen = session.scalar(select(Citizen).where(Citizen.email == demo.DEMO_OBSERVATORY_MEMBER))
    assert citizen is not None
    requester = organisations.member_requester(session, citizen.id)
    assert requester is not None
    assert requester.organisation_id == observatory.id
    assert requester.recipients == (demo.OBSERVATORY_SLUG, "public_service")
    browser = browser_for(app, session, citizen)
    assert browser.get("/statistics/releases").status_code == 200


def test_a_database_seeded_from_another_demo_charter_is_told_how_to_start_again(
    app: Flask, session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from broker.cli import main
    from charter import service as charters

    other = CHARTER.read_text(encoding="utf-8").replace("min_cohort: 10", "min_cohort: 11")
    charters.load(session, other)
    session.commit()
    monkeypatch.setenv("TIERS_DEMO_HOLDERS", "")
    monkeypatch.setenv("TIERS_INSTANCE", str(tmp_path))
    seeded = app.test_cli_runner().invoke(main, ["demo-seed", "--charter", str(CHARTER)])
    assert seeded.exit_code == 1
    assert "already exists with other content" in seeded.stderr
    assert "remove instance/" in seeded.stderr
    assert "Traceback" not in seeded.output
