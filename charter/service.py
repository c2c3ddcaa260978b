"""Charter versions: load (validate, hash, store), read the current one, diff two, export ODRL.

Loading is all or nothing: an invalid file stores nothing and lists every error.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from charter import document
from charter.diff import CharterDiff, diff
from charter.document import CharterDocument, Purpose
from charter.models import CharterVersion
from charter.odrl import to_odrl
from common import outbox
from common.clock import utcnow
from common.errors import ConflictError, InvalidInputError, NotFoundError


@dataclass(frozen=True)
class Charter:
    """A stored version with its parsed document."""

    row: CharterVersion
    doc: CharterDocument

    @property
    def version(self) -> str:
        return self.row.version

    def require_purpose(self, purpose_id: str) -> Purpose:
        """The purpose, or InvalidInputError naming it (for commands that cite a purpose)."""
        found = self.doc.purpose(purpose_id)
        if found is None:
            raise InvalidInputError(
                f'No purpose "{purpose_id}" in charter {self.version}.',
                fields={"purpose_id": [f'unknown purpose "{purpose_id}"']},
            )
        return found

    def supersede_deadline(self) -> datetime:
        """When consents under terms this version changed stop being valid."""
        return self.row.published_at + timedelta(days=self.row.supersede_grace_days)


# sha256 -> parsed document. A stored version never changes, so the cache is always right.
_PARSED: dict[str, CharterDocument] = {}


def _wrap(row: CharterVersion) -> Charter:
    doc = _PARSED.get(row.sha256)
    if doc is None:
        doc = _PARSED[row.sha256] = document.parse(row.source_yaml)  # loads the deferred text
    return Charter(row=row, doc=doc)


def load(session: Session, source: str) -> tuple[Charter, bool]:
    """Validate and store a charter version; returns it and whether it is new.

    The charter imports nothing of ours, so the caller audits (broker.service.publish_charter).

    Raises CharterInvalidError listing every error (nothing stored). Loading the same
    content again is a no-op; a different content under an existing version is a conflict.
    """
    doc = document.parse(source)
    sha256 = document.document_hash(doc)
    existing = session.scalar(select(CharterVersion).where(CharterVersion.version == doc.version))
    if existing is not None:
        if existing.sha256 != sha256:
            raise ConflictError(
                f"Charter version {doc.version} already exists with other content; "
                "publish changes under a new version."
            )
        return _wrap(existing), False
    row = CharterVersion(
        version=doc.version,
        sha256=sha256,
        effective_from=doc.effective_from,
        published_at=utcnow(),
        supersede_grace_days=doc.supersede_grace_days,
        document=document.to_dict(doc),
        terms_hashes=document.terms_hashes(doc),
        source_yaml=source,
    )
    session.add(row)
    session.flush()
    outbox.publish(
        session,
        "charter.published",
        {"version": doc.version},
        idempotency_key=f"charter.published:{doc.version}",
    )
    return _wrap(row), True


def current(session: Session) -> Charter:
    """The charter in force: the version published last."""
    row = session.scalar(
        select(CharterVersion).order_by(CharterVersion.published_at.desc()).limit(1)
    )
    if row is None:
        raise NotFoundError("No charter has been published yet.")
    return _wrap(row)


def current_or_none(session: Session) -> Charter | None:
    """The charter in force, or None before the first publication (pages that still render)."""
    try:
        return current(session)
    except NotFoundError:
        return None


def get_version(session: Session, version: str) -> Charter:
    """One stored version, or NotFoundError."""
    row = session.scalar(select(CharterVersion).where(CharterVersion.version == version))
    if row is None:
        raise NotFoundError(f"No charter version {version}.")
    return _wrap(row)


def versions(session: Session) -> list[CharterVersion]:
    """Every published version, oldest first."""
    return list(session.scalars(select(CharterVersion).order_by(CharterVersion.published_at)))


def diff_versions(session: Session, old: str, new: str) -> CharterDiff:
    """Which purposes' terms changed between two stored versions, and how."""
    return diff(get_version(session, old).doc, get_version(session, new).doc)


def odrl(session: Session, version: str, *, base_url: str) -> dict[str, Any]:
    """The version as ODRL 2.2 JSON-LD: one Set per purpose."""
    return to_odrl(get_version(session, version).doc, base_url=base_url)
