"""A small territory for the gateway: the demo electricity distributor served for real on a
free port (it checks Tiers' tokens against Tiers' JWKS, also served for real), its daily
dataset registered at Tiers, citizens linked to meters, and reusers with their tokens."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask, jsonify
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from broker.models import Dataset, Organisation
from broker.service import datasets
from charter import service as charters
from common.clock import utcnow
from common.keyring import app_keyring
from consent import accounts, links
from consent import service as consent_service
from consent.models import Mode
from examples.holders import build
from examples.holders.app import create_app, set_fault
from examples.holders.tokens import TiersKeys
from tests.conftest import ISSUER, PASSWORD

PURPOSE = "energy-coaching"


@contextmanager
def serve(app: Any) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class Late:
    """A WSGI app set once the server's port is known (the holder must know its own URL)."""

    def __init__(self) -> None:
        self.app: Any = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)


@pytest.fixture(scope="session")
def electricity_data() -> Any:
    return build("electricity", "tests")


@pytest.fixture
def jwks_url(app: Flask) -> Iterator[str]:
    with app.app_context():
        app_keyring().active()  # the key is made on first use: make it before publishing
        published = app_keyring().jwks(publish_for=timedelta(days=400))
    keys_app = Flask("tiers_jwks")
    keys_app.add_url_rule("/.well-known/jwks.json", "jwks", lambda: jsonify(published))
    with serve(keys_app) as url:
        yield url


@dataclass
class ServedHolder:
    url: str
    app: Flask
    organisation: Organisation
    dataset: Dataset
    subjects: list[str]  # the holder's meter numbers, for linking citizens

    def fault(self, spec: str) -> None:
        set_fault(self.app, spec)


@pytest.fixture
def electricity(
    app: Flask, session: Session, make_client: Any, jwks_url: str, electricity_data: Any
) -> Iterator[ServedHolder]:
    late = Late()
    with serve(late) as url:
        late.app = create_app(
            electricity_data, tiers_url=ISSUER, resource_uri=url, keys=TiersKeys(jwks_url)
        )
        registered = make_client(
            "holder",
            category=None,
            scope="datasets:write",
            grant_types=("client_credentials",),
            redirect_uris=(),
            resource_uri=url,
        )
        organisation = registered.model.organisation
        with app.test_request_context():
            dataset = datasets.register(
                session,
                holder_id=organisation.id,
                settings=daily_settings(url),
                actor="test",
            )
        session.commit()
        meters = [s["prm"] for s in electricity_data.demo_subjects()]
        yield ServedHolder(url, late.app, organisation, dataset, meters)


def daily_settings(url: str) -> dict[str, Any]:
    return {
        "slug": "consommation-quotidienne",
        "title": {"fr": "Consommation quotidienne", "en": "Daily consumption"},
        "description": {"fr": "Énergie par jour et par compteur.", "en": "Energy per day."},
        "data_category": "energy.electricity.daily",
        "schema": {
            "fields": [
                {"name": "prm", "type": "string", "personal": True},
                {"name": "date", "type": "date", "personal": True},
                {
                    "name": "energy_wh",
                    "type": "integer",
                    "unit": "W.h",
                    "personal": True,
                    "min": 0,
                    "max": 500000,
                },
                {"name": "district", "type": "string", "personal": True, "sensitive": True},
            ],
            "subject_field": "prm",
            "time_field": "date",
        },
        "endpoint_url": f"{url}/datasets/daily",
        "auth": "tiers_token",
        "refresh": "P1D",
    }


@dataclass
class Citizen:
    subject_id: uuid.UUID
    meter: str
    consent_id: uuid.UUID | None = None


@dataclass
class Territory:
    session: Session
    holder: ServedHolder
    citizens: list[Citizen] = field(default_factory=list)

    def citizen(
        self, meter: str, *, recipient: str = "ecowatt-conseil", consent: bool = True
    ) -> Citizen:
        """A citizen linked to `meter`, consenting to energy coaching by `recipient`."""
        account = accounts.sign_up(
            self.session, email=f"c-{uuid.uuid4().hex[:8]}@example.org", password=PASSWORD
        )
        holder = datasets.as_holder(self.holder.organisation)
        issued = links.issue_code(self.session, subject_id=account.subject_id, holder=holder)
        links.redeem(
            self.session, holder=holder, code=issued.code, subject_ref=meter, actor="test"
        ).raise_refusal()
        citizen = Citizen(account.subject_id, meter)
        if consent:
            citizen.consent_id = self.consent(citizen, recipient)
        self.session.commit()
        self.citizens.append(citizen)
        return citizen

    def consent(self, citizen: Citizen, recipient: str) -> uuid.UUID:
        charter = charters.current(self.session)
        given = consent_service.give(
            self.session,
            consent_service.GiveConsent(
                subject_id=citizen.subject_id,
                purpose_id=PURPOSE,
                terms_hash=charter.row.terms_hashes[PURPOSE],
                recipient_id=recipient,
                mode=Mode.INDIVIDUAL,
            ),
        )
        self.session.commit()
        return given.id


@pytest.fixture
def territory(session: Session, electricity: ServedHolder) -> Territory:
    return Territory(session, electricity)


@pytest.fixture
def reuser(oauth_headers: Callable[..., dict[str, str]]) -> dict[str, str]:
    """EcoWatt Conseil, a company the charter names for energy coaching."""
    return oauth_headers("reuser", "access:request", slug="ecowatt-conseil", category="company")


@pytest.fixture
def other_reuser(oauth_headers: Callable[..., dict[str, str]]) -> dict[str, str]:
    """The local energy agency, an association the charter also names."""
    return oauth_headers("reuser", "access:request", slug="alec-brevanne", category="association")


def request_body(dataset: Dataset, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "purpose": PURPOSE,
        "mode": "individual",
        "datasets": [str(dataset.id)],
        "justification": "Coaching the households who asked us to, as the charter allows.",
        "period_end": (utcnow() + timedelta(days=90)).isoformat(),
    }
    body.update(overrides)
    return body
