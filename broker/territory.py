"""A territory built in a few calls, for tests, benches and the demo, never for the service:
the example charter, organisations, citizens linked to a holder's meters and consenting, a
reuser's grant and what it served. Only public services are called, so what it builds is what
the portal and the API would have made; nothing commits (the caller owns the transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.models import AccessGrant, Organisation, RequestStatus, Role
from broker.service import access, gateway, organisations, publish_charter
from charter import service as charters
from consent import accounts, links
from consent import service as consents
from consent.models import Mode

EXAMPLE_CHARTER = Path(__file__).resolve().parent.parent / "examples" / "charter.yaml"
PURPOSE = "energy-coaching"  # the example charter's purpose with individual reads
HOLDER = "brevanne-reseau-electrique"  # the demo electricity distributor (examples/holders)
REUSER = "ecowatt-conseil"  # the example charter names it for energy coaching


@dataclass
class Citizen:
    """A citizen of the territory: their account's subject, the holder's identifier they are
    linked to (a meter number), and their consent when they gave one."""

    subject_id: uuid.UUID
    meter: str
    consent_id: uuid.UUID | None = None


def publish_example_charter(session: Session, *, actor: str) -> charters.Charter:
    """The example charter (examples/charter.yaml) in force. Idempotent."""
    loaded, _ = publish_charter(session, EXAMPLE_CHARTER.read_text(encoding="utf-8"), actor=actor)
    return loaded


def organisation(
    session: Session,
    slug: str,
    name: str,
    role: Role,
    *,
    category: str | None = None,
    resource_uri: str | None = None,
    webhook_url: str | None = None,
    actor: str,
) -> Organisation:
    """An active organisation of the territory, registered as the committee would (flushed:
    its id is known)."""
    return organisations.create_organisation(
        session,
        slug=slug,
        name=name,
        role=role,
        reuser_category=category,
        resource_uri=resource_uri,
        webhook_url=webhook_url,
        actor=actor,
    )


def daily_settings(holder_url: str) -> dict[str, Any]:
    """The electricity distributor's daily energy per meter, in Tiers' terms (the shape
    `datasets.register` takes); `district` is sensitive, so asking for it goes to the
    committee."""
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
        "endpoint_url": f"{holder_url}/datasets/daily",
        "auth": "tiers_token",
        "refresh": "P1D",
    }


def load_curve_settings(holder_url: str) -> dict[str, Any]:
    """The distributor's load curve (48 half-hours per meter per day), in Tiers' terms; its
    power is sensitive, so a grant on it is the committee's decision."""
    return {
        "slug": "courbe-de-charge",
        "title": {"fr": "Courbe de charge", "en": "Load curve"},
        "description": {"fr": "Puissance moyenne par demi-heure.", "en": "Mean power per 30 min."},
        "data_category": "energy.electricity.load_curve",
        "schema": {
            "fields": [
                {"name": "prm", "type": "string", "personal": True},
                {"name": "start", "type": "datetime", "personal": True},
                {
                    "name": "power_w",
                    "type": "integer",
                    "unit": "W",
                    "personal": True,
                    "sensitive": True,
                    "min": 0,
                    "max": 12000,
                },
                {"name": "district", "type": "string", "personal": True, "sensitive": True},
            ],
            "subject_field": "prm",
            "time_field": "start",
        },
        "endpoint_url": f"{holder_url}/datasets/load_curve",
        "auth": "tiers_token",
        "refresh": "P1D",
    }


def give_consent(
    session: Session,
    subject_id: uuid.UUID,
    *,
    recipient: str = REUSER,
    purpose: str = PURPOSE,
    mode: Mode = Mode.INDIVIDUAL,
) -> uuid.UUID:
    """The citizen consents to `purpose` by `recipient`, on the terms of the charter in force."""
    charter = charters.current(session)
    given = consents.give(
        session,
        consents.GiveConsent(
            subject_id=subject_id,
            purpose_id=purpose,
            terms_hash=charter.row.terms_hashes[purpose],
            recipient_id=recipient,
            mode=mode,
        ),
    )
    return given.id


def citizen(
    session: Session,
    holder: links.Holder,
    meter: str,
    *,
    email: str,
    password: str,
    actor: str,
    recipient: str | None = REUSER,
    purpose: str = PURPOSE,
    mode: Mode = Mode.INDIVIDUAL,
) -> Citizen:
    """A new account linked to `meter` at `holder` (a pairing code issued, then redeemed as
    the holder's service would), consenting to `purpose` by `recipient` in `mode` unless
    `recipient` is None."""
    account = accounts.sign_up(session, email=email, password=password)
    issued = links.issue_code(session, subject_id=account.subject_id, holder=holder)
    links.redeem(
        session, holder=holder, code=issued.code, subject_ref=meter, actor=actor
    ).raise_refusal()
    made = Citizen(account.subject_id, meter)
    if recipient is not None:
        made.consent_id = give_consent(
            session, account.subject_id, recipient=recipient, purpose=purpose, mode=mode
        )
    return made


def grant(
    session: Session, reuser: Organisation, data: Mapping[str, Any], *, actor: str
) -> AccessGrant:
    """The reuser's request (`data` as the API takes it), approved by the committee when the
    charter leaves it the decision; refused requests raise, as a broken territory should."""
    filed = access.file_request(
        session, organisation_id=reuser.id, client_pk=None, data=dict(data), actor=actor
    )
    if filed.status is RequestStatus.PENDING:
        return access.approve(session, filed.id, actor=actor, reason="Territory built for a test.")
    made = session.scalar(select(AccessGrant).where(AccessGrant.request_id == filed.id))
    if made is None:
        raise ValueError(f"the charter refused the request: {filed.status.value}")
    return made


def served(session: Session, grant_id: uuid.UUID, subject_ids: Sequence[uuid.UUID]) -> None:
    """Record that the grant has served these citizens' data, as a gateway read does (their
    withdrawal then notifies the reuser too)."""
    gateway.record_deliveries(session, grant_id, subject_ids)
