"""Charter versions: load (validate, hash, store), read the current one, diff two, export ODRL.

Loading is all or nothing: an invalid file stores nothing and lists every error.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from charter import document
from charter.diff import CharterDiff, diff
from charter.document import CharterDocument, Purpose
from charter.models import CharterVersion
from charter.notice import notice_hash
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

    def terms_hash(self, purpose: Purpose) -> str:
        """`document.terms_hash(purpose)` for a purpose of this version, computed once."""
        return _derived(self.row.sha256, self.doc).terms[purpose.id]

    def notice_hash(self, purpose: Purpose, lang: str) -> str:
        """`notice.notice_hash` of a purpose of this version, computed once per language."""
        lang = "en" if lang == "en" else "fr"  # as notice_text does: any other is French
        notices = _derived(self.row.sha256, self.doc).notices
        key = (purpose.id, lang)
        found = notices.get(key)
        if found is None:
            found = notices[key] = notice_hash(self.doc, purpose, lang)
        return found


@dataclass(frozen=True)
class _Derived:
    """What a parsed version implies, worked out once: RFC 8785 and SHA-256 per consent add up."""

    doc: CharterDocument
    terms: dict[str, str]  # purpose id -> terms hash
    notices: dict[tuple[str, str], str]  # (purpose id, language) -> notice hash, filled on use


# sha256 -> parsed document and its hashes. A stored version never changes, so the cache is
# always right; a newly published version has a new sha256, so it is parsed on its first read.
_PARSED: dict[str, _Derived] = {}


def _derived(sha256: str, doc: CharterDocument) -> _Derived:
    found = _PARSED.get(sha256)
    if found is None or found.doc is not doc:
        found = _PARSED[sha256] = _Derived(doc, document.terms_hashes(doc), {})
    return found


def _wrap(row: CharterVersion) -> Charter:
    found = _PARSED.get(row.sha256)
    if found is None:
        doc = document.parse(row.source_yaml)  # loads the deferred text
        found = _PARSED[row.sha256] = _Derived(doc, document.terms_hashes(doc), {})
    return Charter(row=row, doc=found.doc)


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


_TABLE = cast(Table, CharterVersion.__table__)
# The id and hash of the version in force: one read of the published_at index per call.
_LATEST = select(_TABLE.c.id, _TABLE.c.sha256).order_by(_TABLE.c.published_at.desc()).limit(1)
_FULL_ROW = select(_TABLE).where(_TABLE.c.id == bindparam("version_id"))
# The charter in force as last read by this process (None before the first read).
_current: Charter | None = None


def current(session: Session) -> Charter:
    """The charter in force: the version published last.

    One indexed read of its id and hash per call, so a newly published version is in force
    at once, in every process; the rest of the row and its parsed document are read once
    per version. Its `row` is a transient, fully loaded copy shared by callers: read it,
    never change it or add it to a session.
    """
    latest = session.connection().execute(_LATEST).first()
    if latest is None:
        raise NotFoundError("No charter has been published yet.")
    global _current
    cached = _current
    if cached is None or cached.row.id != latest.id or cached.row.sha256 != latest.sha256:
        stored = session.connection().execute(_FULL_ROW, {"version_id": latest.id}).one()
        cached = _current = _wrap(CharterVersion(**stored._mapping))
    return cached


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
