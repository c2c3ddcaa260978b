"""A territory for the ingestion: the demo electricity distributor served for real (the
gateway's fixtures), citizens linked to meters who consent to the energy observatory in
aggregate mode, and an observatory holding an aggregate grant on the daily dataset."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from broker import territory as builder
from broker.models import AccessGrant
from broker.service import datasets
from broker.territory import Citizen
from consent.models import Mode
from tests.anonymize.conftest import aggregate_grant
from tests.conftest import PASSWORD, bearer_for
from tests.gateway.conftest import (  # noqa: F401  (fixtures: the holder served for real)
    ServedHolder,
    electricity,
    electricity_data,
    jwks_url,
)

PURPOSE = "energy-observatory"


@dataclass
class Territory:
    session: Session
    holder: ServedHolder
    citizens: list[Citizen] = field(default_factory=list)

    def citizen(
        self,
        meter: str,
        *,
        recipient: str | None = "public_service",
        mode: Mode = Mode.AGGREGATE,
        purpose: str = PURPOSE,
    ) -> Citizen:
        """A citizen linked to `meter`, consenting (unless `recipient` is None)."""
        citizen = builder.citizen(
            self.session,
            datasets.as_holder(self.holder.organisation),
            meter,
            email=f"c-{uuid.uuid4().hex[:8]}@example.org",
            password=PASSWORD,
            actor="test",
            recipient=recipient,
            purpose=purpose,
            mode=mode,
        )
        self.session.commit()
        self.citizens.append(citizen)
        return citizen


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
