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

from broker.models import AccessGrant
from broker.service import datasets
from charter import service as charters
from consent import accounts, links
from consent import service as consent_service
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
        self,
        meter: str,
        *,
        recipient: str | None = "public_service",
        mode: Mode = Mode.AGGREGATE,
        purpose: str = PURPOSE,
    ) -> Citizen:
        """A citizen linked to `meter`, consenting (unless `recipient` is None)."""
        account = accounts.sign_up(
            self.session, email=f"c-{uuid.uuid4().hex[:8]}@example.org", password=PASSWORD
        )
        holder = datasets.as_holder(self.holder.organisation)
        issued = links.issue_code(self.session, subject_id=account.subject_id, holder=holder)
        links.redeem(
            self.session, holder=holder, code=issued.code, subject_ref=meter, actor="test"
        ).raise_refusal()
        citizen = Citizen(account.subject_id, meter)
        if recipient is not None:
            charter = charters.current(self.session)
            citizen.consent_id = consent_service.give(
                self.session,
                consent_service.GiveConsent(
                    subject_id=citizen.subject_id,
                    purpose_id=purpose,
                    terms_hash=charter.row.terms_hashes[purpose],
                    recipient_id=recipient,
                    mode=mode,
                ),
            ).id
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
