"""Commands that span packages, composed here because only broker may import them all."""

from __future__ import annotations

from sqlalchemy.orm import Session

from audit import service as audit
from charter import service as charters


def publish_charter(session: Session, source: str, *, actor: str) -> tuple[charters.Charter, bool]:
    """Validate, store and audit a charter version in one transaction (see charters.load)."""
    loaded, new = charters.load(session, source)
    if new:
        audit.append(
            session,
            event="charter:version:publish",
            actor=actor,
            detail={"version": loaded.version, "sha256": loaded.row.sha256},
        )
    return loaded, new
