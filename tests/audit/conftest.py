"""Fixtures of the access log's pages: an auditor's and a committee member's portal accounts."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from audit.service import browse
from broker.service import organisations
from charter import service as charters
from consent.models import Citizen
from tests.conftest import SignedIn, sign_in


@pytest.fixture
def auditor(app: Flask, session: Session, charter: charters.Charter) -> SignedIn:
    """A signed-in portal account that may read the whole log (`tiers auditor add`)."""
    signed_in = sign_in(app, session)
    citizen = session.scalar(select(Citizen).where(Citizen.email == signed_in.email))
    assert citizen is not None
    browse.add_auditor(
        session,
        citizen_id=citizen.id,
        subject_id=citizen.subject_id,
        organisation=None,
        actor="test",
    )
    session.commit()
    return signed_in


@pytest.fixture
def member(app: Flask, session: Session, charter: charters.Charter) -> SignedIn:
    """A signed-in member of the charter committee (who may also read the log)."""
    signed_in = sign_in(app, session)
    organisations.add_committee_member(session, signed_in.email, actor="test")
    session.commit()
    return signed_in
