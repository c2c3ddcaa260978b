"""Shared arrangements for the datasets, pairing and catalog tests."""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from typing import Any

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from broker.api import datasets_blp
from broker.models import Organisation
from broker.service.datasets import ETALAB_2_0
from tests.conftest import bearer_for


def with_datasets_api(app: Flask) -> Flask:
    """Register the datasets blueprint on a test app, until broker/app.py does it itself."""
    if "datasets" not in app.blueprints:
        api = app.extensions["flask-smorest"]["apis"][""]["ext_obj"]
        api.register_blueprint(datasets_blp)
    return app


@dataclass
class Holder:
    """A holder organisation with a client_credentials token holding datasets:write."""

    organisation: Organisation
    headers: dict[str, str]
    resource_uri: str | None

    @property
    def id(self) -> uuid.UUID:
        return self.organisation.id

    @property
    def slug(self) -> str:
        return self.organisation.slug


def make_holder(
    session: Session, make_client: Any, *, resource_uri: str | None = "default", **kw: Any
) -> Holder:
    """A new holder organisation, its client and a token minted directly (no HTTP)."""
    if resource_uri == "default":
        resource_uri = f"https://{uuid.uuid4().hex[:8]}.holder.example"
    registered = make_client(
        "holder",
        category=None,
        scope="datasets:write",
        grant_types=("client_credentials",),
        redirect_uris=(),
        resource_uri=resource_uri,
        **kw,
    )
    return Holder(
        registered.model.organisation,
        bearer_for(session, registered.model, "datasets:write"),
        resource_uri,
    )


def personal_body(resource_uri: str, **overrides: Any) -> dict[str, Any]:
    """A valid personal dataset in the manner of an electricity distributor's load curve."""
    body: dict[str, Any] = {
        "slug": "courbe-de-charge",
        "title": {"fr": "Courbe de charge", "en": "Load curve"},
        "description": {
            "fr": "Puissance moyenne active toutes les 30 minutes, par compteur.",
            "en": "Mean active power every 30 minutes, per meter.",
        },
        "data_category": "energy.electricity.load_curve",
        "schema": {
            "fields": [
                {"name": "prm", "type": "string", "personal": True},
                {"name": "ts", "type": "datetime", "personal": True},
                {
                    "name": "power_w",
                    "type": "number",
                    "unit": "W",
                    "personal": True,
                    "min": 0,
                    "max": 36000,
                },
                {"name": "heating", "type": "boolean", "personal": True, "sensitive": False},
            ],
            "subject_field": "prm",
            "time_field": "ts",
        },
        "endpoint_url": f"{resource_uri}/datasets/load-curve",
        "auth": "tiers_token",
        "refresh": "P1D",
    }
    return {**copy.deepcopy(body), **overrides}


def open_body(endpoint_url: str, **overrides: Any) -> dict[str, Any]:
    """A valid open dataset in the manner of the city's public building sensors."""
    body: dict[str, Any] = {
        "slug": "batiments-publics",
        "title": {"fr": "Consommations des bâtiments publics", "en": "Public buildings' use"},
        "description": {
            "fr": "Eau, gaz, électricité et éclairage public de 30 bâtiments.",
            "en": "Water, gas, electricity and public lighting of 30 buildings.",
        },
        "data_category": "buildings.sensors",
        "schema": {
            "fields": [
                {"name": "building", "type": "string", "personal": False},
                {"name": "day", "type": "date", "personal": False},
                {"name": "kwh", "type": "number", "unit": "kWh", "personal": False},
            ],
            "time_field": "day",
        },
        "endpoint_url": endpoint_url,
        "auth": "none",
        "refresh": "PT1H",
        "licence": ETALAB_2_0,
    }
    return {**copy.deepcopy(body), **overrides}


def count(session: Session, model: Any, *where: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)
