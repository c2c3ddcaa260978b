"""A small territory for the gateway: the demo electricity distributor served for real on a
free port (it checks Tiers' tokens against Tiers' JWKS, also served for real), its daily
dataset registered at Tiers, citizens linked to meters, and reusers with their tokens.

The territory's pieces come from broker/territory.py, the builder the benches share."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask, jsonify
from sqlalchemy.orm import Session

from broker import territory as builder
from broker.models import Dataset, Organisation
from broker.service import datasets
from broker.territory import PURPOSE, REUSER, Citizen, daily_settings
from common.clock import utcnow
from common.keyring import app_keyring
from consent.models import Mode
from examples.holders import build
from examples.holders.app import create_app, set_fault
from examples.holders.tokens import TiersKeys
from tests.conftest import ISSUER, PASSWORD
from tests.live import serve


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


@dataclass
class Territory:
    session: Session
    holder: ServedHolder
    citizens: list[Citizen] = field(default_factory=list)

    def citizen(
        self,
        meter: str,
        *,
        recipient: str | None = REUSER,
        consent: bool = True,
        purpose: str = PURPOSE,
        mode: Mode = Mode.INDIVIDUAL,
    ) -> Citizen:
        """A citizen linked to `meter`, consenting to `purpose` (energy coaching) by
        `recipient` in `mode`, unless `consent` is False or `recipient` None."""
        made = builder.citizen(
            self.session,
            datasets.as_holder(self.holder.organisation),
            meter,
            email=f"c-{uuid.uuid4().hex[:8]}@example.org",
            password=PASSWORD,
            actor="test",
            recipient=recipient if consent else None,
            purpose=purpose,
            mode=mode,
        )
        self.session.commit()
        self.citizens.append(made)
        return made

    def consent(self, citizen: Citizen, recipient: str) -> uuid.UUID:
        given = builder.give_consent(self.session, citizen.subject_id, recipient=recipient)
        self.session.commit()
        return given


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
