"""Fixtures of the committee's organisations and clients: members, tokens, registration."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from broker.service import organisations
from charter import service as charters
from tests.conftest import SignedIn, sign_in


@pytest.fixture
def member(app: Flask, session: Session, charter: charters.Charter) -> SignedIn:
    """A signed-in portal account that the committee counts as one of its members."""
    signed_in = sign_in(app, session)
    organisations.add_committee_member(session, signed_in.email, actor="test")
    session.commit()
    return signed_in


@pytest.fixture
def admin_headers(oauth_headers: Any) -> dict[str, str]:
    """A committee client's token holding `admin`."""
    headers: dict[str, str] = oauth_headers("committee", "admin", category=None)
    return headers


@pytest.fixture
def reuser_headers(oauth_headers: Any) -> dict[str, str]:
    """A reuser client's token: a party of the territory, not the committee."""
    headers: dict[str, str] = oauth_headers("reuser", "access:request")
    return headers
