"""What the access log's pages need to name and cannot know: organisations behind actors,
purposes' titles, consents' terms, committee membership. broker/app.py installs it as
`app.extensions["audit.directory"]`, so audit keeps importing nothing of ours (DESIGN.md)."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from audit.service.browse import ConsentTerms
from broker.models import CommitteeMember, Grant, OAuthClient, Organisation
from charter import service as charters
from consent.models import Consent

CLIENT, ORG = "client:", "org:"


class AuditDirectory:
    """audit.service.browse.Directory over broker's, charter's and consent's tables."""

    def actors_of(self, session: Session, organisation: str) -> tuple[str, ...] | None:
        found = session.scalar(select(Organisation).where(Organisation.slug == organisation))
        if found is None:
            return None
        clients = session.scalars(
            select(OAuthClient.client_id).where(OAuthClient.organisation_id == found.id)
        )
        return (f"{ORG}{found.slug}", *(f"{CLIENT}{c}" for c in clients))

    def names(self, session: Session, actors: Collection[str]) -> dict[str, str]:
        client_ids = {a.removeprefix(CLIENT) for a in actors if a.startswith(CLIENT)}
        slugs = {a.removeprefix(ORG) for a in actors if a.startswith(ORG)}
        named: dict[str, str] = {}
        if client_ids:
            rows = session.execute(
                select(OAuthClient.client_id, Organisation.name)
                .join(Organisation, Organisation.id == OAuthClient.organisation_id)
                .where(OAuthClient.client_id.in_(client_ids))
            )
            named.update({f"{CLIENT}{r.client_id}": r.name for r in rows})
        if slugs:
            rows = session.execute(
                select(Organisation.slug, Organisation.name).where(Organisation.slug.in_(slugs))
            )
            named.update({f"{ORG}{r.slug}": r.name for r in rows})
        return named

    def purpose_titles(
        self, session: Session, purposes: Collection[str], lang: str
    ) -> dict[str, str]:
        charter = charters.current_or_none(session)
        if charter is None:
            return {}
        titles = {}
        for purpose_id in purposes:
            purpose = charter.doc.purpose(purpose_id)
            if purpose is not None:
                titles[purpose_id] = purpose.title.get(lang)
        return titles

    def consent_terms(
        self, session: Session, consent_ids: Collection[uuid.UUID]
    ) -> dict[uuid.UUID, ConsentTerms]:
        rows = session.scalars(select(Consent).where(Consent.id.in_(consent_ids)))
        return {
            c.id: ConsentTerms(c.legal_basis, tuple(c.data_categories), c.recipient_id)
            for c in rows
        }

    def grant_consents(self, session: Session, grant_ids: Collection[str]) -> dict[str, list[str]]:
        ids = set()
        for value in grant_ids:
            try:
                ids.add(uuid.UUID(value))
            except ValueError:
                continue
        rows = session.execute(select(Grant.id, Grant.consent_ids).where(Grant.id.in_(ids)))
        return {str(r.id): [str(c) for c in r.consent_ids] for r in rows}

    def committee_member(self, session: Session, citizen_id: uuid.UUID) -> uuid.UUID | None:
        return session.scalar(
            select(CommitteeMember.id).where(CommitteeMember.citizen_id == citizen_id)
        )
