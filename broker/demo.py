"""Demo territory: the demo charter and a few citizens with consents. Idempotent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import select

from broker.service import publish_charter
from charter.document import terms_hash
from common.db import unit_of_work
from consent import accounts
from consent import service as consents
from consent.models import Citizen

DEMO_PASSWORD = "demo-tiers-2026"  # noqa: S105 (published on purpose: demo accounts only)
DEMO_CITIZENS = {
    "camille@demo.tiers.local": ["energy-coaching", "energy-observatory"],
    "yanis@demo.tiers.local": ["mobility-planning", "carbon-aggregator"],
    "lea@demo.tiers.local": [],
}


def seed(charter_path: Path) -> Iterator[str]:
    """Publish the demo charter and create the demo citizens; yields what it did."""
    with unit_of_work() as session:
        loaded, new = publish_charter(
            session, charter_path.read_text(encoding="utf-8"), actor="demo"
        )
    yield f"charter {loaded.version} {'published' if new else 'already published'}"
    for email, wanted in DEMO_CITIZENS.items():
        with unit_of_work() as session:
            if session.scalar(select(Citizen.id).where(Citizen.email == email)):
                yield f"citizen {email} already exists"
                continue
            citizen = accounts.sign_up(session, email=email, password=DEMO_PASSWORD)
            for purpose_id in wanted:
                purpose = loaded.require_purpose(purpose_id)
                consents.give(
                    session,
                    consents.GiveConsent(
                        subject_id=citizen.subject_id,
                        purpose_id=purpose.id,
                        terms_hash=terms_hash(purpose),
                        recipient_id=purpose.recipient_ids[0],
                        method="demo",
                    ),
                )
        yield f"citizen {email} created with {len(wanted)} consent(s)"
