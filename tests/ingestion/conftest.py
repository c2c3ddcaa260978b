"""A territory for the ingestion: the demo electricity distributor served for real (the
gateway's fixtures), citizens linked to meters who consent to the energy observatory in
aggregate mode, and an observatory holding an aggregate grant on the daily dataset."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from broker.models import AccessGrant
from broker.territory import Citizen
from consent.models import Mode
from tests.anonymize.conftest import aggregate_grant
from tests.conftest import bearer_for
from tests.gateway.conftest import (  # noqa: F401  (fixtures: the holder served for real)
    ServedHolder,
    electricity,
    electricity_data,
    jwks_url,
)
from tests.gateway.conftest import Territory as GatewayTerritory

PURPOSE = "energy-observatory"


class Territory(GatewayTerritory):
    """The gateway's territory, whose citizens consent to the energy observatory."""

    def citizen(
        self,
        meter: str,
        *,
        recipient: str | None = "public_service",
        consent: bool = True,
        purpose: str = PURPOSE,
        mode: Mode = Mode.AGGREGATE,
    ) -> Citizen:
        return super().citizen(
            meter, recipient=recipient, consent=consent, purpose=purpose, mode=mode
        )


@pytest.fixture
def territory(session: Session, electricity: ServedHolder) -> Territory:  # noqa: F811
    return Territory(session, electricity)


@dataclass
class Observatory:
    organisation_id: uuid.UUID
    headers: dict[str, str]


@pytest.fixture
def make_observatory(
    arranging_app: Flask, session: Session, make_client: Any
) -> Callable[..., Observatory]:
    scope = "releases:read releases:write"

    def make(category: str = "public_service") -> Observatory:
        registered = make_client("observatory", scope=scope, category=category)
        return Observatory(
            registered.model.organisation.id, bearer_for(session, registered.model, scope)
        )

    return make


@pytest.fixture
def granted(
    session: Session, territory: Territory, make_observatory: Callable[..., Observatory]
) -> tuple[Observatory, AccessGrant]:
    """An observatory with an active aggregate grant on the daily dataset."""
    observatory = make_observatory()
    grant = aggregate_grant(
        session, observatory.organisation_id, [str(territory.holder.dataset.id)]
    )
    session.commit()
    return observatory, grant
