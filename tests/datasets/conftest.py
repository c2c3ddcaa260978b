"""The datasets API is on its own blueprint: registered here until broker/app.py does."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from charter import service as charters
from tests.datasets.helpers import Holder, make_holder, with_datasets_api


@pytest.fixture
def app(app: Flask) -> Flask:
    return with_datasets_api(app)


@pytest.fixture
def holder(session: Session, make_client: Any, charter: charters.Charter) -> Holder:
    return make_holder(session, make_client)


@pytest.fixture
def other_holder(session: Session, make_client: Any, charter: charters.Charter) -> Holder:
    return make_holder(session, make_client)
