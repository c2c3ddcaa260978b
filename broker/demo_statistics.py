"""The demo's statistics: a panel of residents linked to the demo electricity distributor's
meters who consented to the energy observatory, their daily energy ingested as the beat would,
and one release of the observatory, so that its pages show a map from the first visit.

Run once Tiers serves its JWKS: the distributor checks the ingestion's token against it.
`make demo` runs `tiers demo-statistics` right after starting the server. Idempotent.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date
from decimal import Decimal

from flask import current_app
from sqlalchemy import select

from anonymize import service as releases
from anonymize.models import Release
from broker import territory
from broker.demo import (
    DEMO_OBSERVATORY_MEMBER,
    DEMO_PASSWORD,
    OBSERVATORY_PURPOSE,
    OBSERVATORY_SLUG,
    read_json,
)
from broker.models import Dataset, Organisation
from broker.service import datasets, ingestion, organisations
from common.db import unit_of_work
from common.errors import DomainError
from consent import accounts, links
from consent.models import Mode

PANEL_SIZE = 300  # about 15 a district: most cells clear the charter's minimum cohort
PANEL_EMAIL = "habitant-{:03d}@demo.tiers.local"
DAILY_ENERGY = "energy.electricity.daily"
PANEL_RECIPIENT = "public_service"  # the observatory's reuser category in the demo charter
FIRST_QUARTER = (date(2025, 1, 1), date(2025, 4, 1))  # the demo holders' data is of 2025
DEMO_RHO = Decimal("0.1")


def statistics(*, size: int = PANEL_SIZE, wait: float = 30.0) -> Iterator[str]:
    """Make the panel (each resident signs up, pairs their meter and consents, as on the
    portal), ingest their daily energy, then ask one release as the observatory's member
    would; yields what it did. `wait`: seconds to wait for Tiers' JWKS."""
    with unit_of_work() as session:
        dataset = session.scalar(
            select(Dataset).where(Dataset.data_category == DAILY_ENERGY, Dataset.personal)
        )
        if dataset is None:
            yield "no daily electricity dataset registered: no demo statistics (start the holders)"
            return
        holder = datasets.as_holder(session.get_one(Organisation, dataset.holder_id))
        base_url = dataset.endpoint_url.rsplit("/datasets/", 1)[0]
        dataset_id = dataset.id
        done = session.scalar(select(Release.id).where(Release.dataset_id == dataset_id))
    if done is not None:
        yield f"release {done} of {OBSERVATORY_SLUG} already made"
        return
    meters = _meters(base_url, size)
    if meters is None:
        yield f"the distributor did not answer at {base_url}: no demo statistics"
        return
    yield _panel(holder, meters)
    if not _serving_jwks(wait):
        yield f"Tiers did not answer at {current_app.config['ISSUER']}: no demo statistics"
        return
    try:
        staged = _ingest(dataset_id)
    except DomainError as exc:  # the distributor went down, or answered nonsense
        yield f"the panel's daily energy could not be ingested ({exc.detail}): no demo release"
        return
    yield f"daily energy of the panel ingested: {staged} rows staged"
    try:
        made_id = _release(dataset_id)
    except DomainError as exc:  # the budget spent by hand, the log lagging: said, not raised
        yield f"no demo release: {exc.detail}"
        return
    if made_id is None:
        yield f"{DEMO_OBSERVATORY_MEMBER} acts for no observatory: no demo release"
        return
    yield f"release {made_id} of {OBSERVATORY_SLUG}: the panel's households by district, 2025 Q1"


def _release(dataset_id: uuid.UUID) -> uuid.UUID | None:
    """The observatory's release, asked as its member would on the portal; None when the
    member acts for no observatory. A refusal raises, and its transaction rolls back."""
    with unit_of_work() as session:
        member = accounts.find_open(session, DEMO_OBSERVATORY_MEMBER)
        requester = organisations.member_requester(session, member.id)
        if requester is None:
            return None
        # Households by district: a count is what a panel this size can publish precisely
        # (a mean of energy, bounded at 500 kWh a day, drowns in its own noise).
        spec = releases.ReleaseSpec(
            dataset_id=dataset_id,
            purpose=OBSERVATORY_PURPOSE,
            measure="count",
            start=FIRST_QUARTER[0],
            end=FIRST_QUARTER[1],
            bucket="quarter",
            partition="districts",
            rho=DEMO_RHO,
        )
        made, _ = releases.release(session, spec, requester, grants=ingestion.has_aggregate_grant)
        return made.id


def _meters(base_url: str, size: int) -> list[str] | None:
    """`size` meters the distributor names for the demo; None if it does not answer."""
    answer = read_json(f"{base_url}/demo/subjects?count={size}")
    try:
        return [s["prm"] for s in answer["subjects"]][:size] if answer else None
    except (KeyError, TypeError):
        return None


def _panel(holder: links.Holder, meters: list[str]) -> str:
    """One resident per meter: an account linked to it, consenting to the observatory."""
    made = 0
    for index, meter in enumerate(meters, start=1):
        email = PANEL_EMAIL.format(index)
        with unit_of_work() as session:
            if accounts.open_account(session, email) is not None:
                continue
            territory.citizen(
                session,
                holder,
                meter,
                email=email,
                password=DEMO_PASSWORD,
                actor="demo",
                recipient=PANEL_RECIPIENT,
                purpose=OBSERVATORY_PURPOSE,
                mode=Mode.AGGREGATE,
            )
        made += 1
    return f"panel: {made} resident(s) linked to a meter and consenting ({len(meters)} in all)"


def _serving_jwks(wait: float) -> bool:
    """Whether Tiers answers at its issuer within `wait` seconds."""
    issuer = current_app.config["ISSUER"].rstrip("/")
    return read_json(f"{issuer}/.well-known/jwks.json", wait=wait) is not None


def _ingest(dataset_id: uuid.UUID) -> int:
    """What the beat's `broker.ingest_dataset` does for the daily energy, now, in this
    process: rows staged. Only that dataset: the load curve (48 readings a day) would take
    minutes, and the demo release does not read it."""
    from broker.tasks import ingest_dataset

    with unit_of_work() as session:
        found = [t for t in ingestion.targets(session) if t.dataset_id == dataset_id]
    staged = 0
    for target in found:
        staged += int(
            ingest_dataset.apply(
                kwargs={
                    "dataset_id": str(target.dataset_id),
                    "purpose_id": target.purpose_id,
                    "grant_id": str(target.grant_id),
                }
            ).get()
        )
    return staged
