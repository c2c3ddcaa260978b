"""Citizens, consents and links to holder accounts. A consent's current state is a projection of
its append-only events."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from common.db import Base, HasId, str_enum


class ConsentStatus(enum.StrEnum):
    GIVEN = "given"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"


class EventType(enum.StrEnum):
    """What happened; each maps to a DPV consent status (shared/DESIGN.md "Consents")."""

    GIVEN = "given"
    RENEWED = "renewed"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"


class RecipientKind(enum.StrEnum):
    ORGANISATION = "organisation"
    CATEGORY = "category"


class Mode(enum.StrEnum):
    INDIVIDUAL = "individual"
    AGGREGATE = "aggregate"


class Citizen(HasId, Base):
    """A portal account. `subject_id` is the pseudonymous id used everywhere else.

    A closed account keeps its row (consent records point at its subject id, as proof of what
    was consented) but no longer its address or password: `closed_at` says when, `erased_at`
    when the erasure sweep shredded the rest (consent.closing, broker.service.erasure).
    """

    __tablename__ = "citizen"
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    subject_id: Mapped[uuid.UUID] = mapped_column(unique=True, default=uuid.uuid4)
    language: Mapped[str] = mapped_column(String(2), default="fr")
    closed_at: Mapped[datetime | None] = mapped_column(index=True)
    erased_at: Mapped[datetime | None]


class CitizenSession(Base):
    """A signed-in browser. The cookie holds a random token; only its hash is stored."""

    __tablename__ = "citizen_session"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    citizen_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("citizen.id"), index=True)
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


class SignInFailure(HasId, Base):
    """A failed sign-in, keyed by tags (keyed HMACs), never the address in clear."""

    __tablename__ = "sign_in_failure"
    email_tag: Mapped[str] = mapped_column(String(64), index=True)
    client_tag: Mapped[str] = mapped_column(String(64), index=True)
    occurred_at: Mapped[datetime] = mapped_column(index=True)


class Consent(HasId, Base):
    """Current state of one consent: a projection of its ConsentEvent rows (see service.replay).

    At most one consent in force per subject, purpose, recipient and mode (partial index).
    """

    __tablename__ = "consent"
    __table_args__ = (
        Index(
            "uq_consent_in_force",
            "subject_id",
            "purpose_id",
            "recipient_kind",
            "recipient_id",
            "mode",
            unique=True,
            sqlite_where=text("status = 'given'"),
            postgresql_where=text("status = 'given'"),
        ),
    )
    subject_id: Mapped[uuid.UUID] = mapped_column(index=True)
    purpose_id: Mapped[str] = mapped_column(String(64))
    recipient_kind: Mapped[RecipientKind] = mapped_column(str_enum(RecipientKind))
    recipient_id: Mapped[str] = mapped_column(String(64))
    mode: Mapped[Mode] = mapped_column(str_enum(Mode))
    data_categories: Mapped[list[str]] = mapped_column(JSON)
    datasets: Mapped[list[str]] = mapped_column(JSON)
    legal_basis: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(32))
    language: Mapped[str] = mapped_column(String(2))
    # The terms in force for this consent: set at give, moved forward by a renewal.
    charter_version: Mapped[str] = mapped_column(String(32))
    terms_hash: Mapped[str] = mapped_column(String(64))
    notice_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[ConsentStatus] = mapped_column(str_enum(ConsentStatus), index=True)
    given_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    withdrawn_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    receipt: Mapped[str] = mapped_column(Text)
    events: Mapped[list[ConsentEvent]] = relationship(
        back_populates="consent", order_by="ConsentEvent.seq"
    )


class ConsentEvent(HasId, Base):
    """Append-only: every state change of a consent (a trigger refuses UPDATE and DELETE)."""

    __tablename__ = "consent_event"
    __table_args__ = (UniqueConstraint("consent_id", "seq"),)
    consent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("consent.id"), index=True)
    seq: Mapped[int]  # 1, 2, 3… within one consent: the order of its history
    type: Mapped[EventType] = mapped_column(str_enum(EventType))
    method: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime]
    charter_version: Mapped[str] = mapped_column(String(32))
    terms_hash: Mapped[str] = mapped_column(String(64))
    notice_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime]
    consent: Mapped[Consent] = relationship(back_populates="events")


# --- links to holder accounts (issue #5) -------------------------------------------------
# `holder_id` and `dataset_id` name broker's organisations and datasets. No foreign key: the
# schema follows the packages' arrows (consent never depends on broker, shared/DESIGN.md).


class PairingCode(HasId, Base):
    """A one-time code a citizen gives one holder to link their account there.

    Stored only as a keyed HMAC (`code_tag`): 8 characters are too few to survive an offline
    search of a plain hash. Valid until `expires_at`, once; `ended_reason` says why it ended
    early ("used", "replaced" by a newer code for the same holder, or "account_closed").
    """

    __tablename__ = "pairing_code"
    code_tag: Mapped[str] = mapped_column(String(64), unique=True)
    subject_id: Mapped[uuid.UUID] = mapped_column(index=True)
    holder_id: Mapped[uuid.UUID] = mapped_column(index=True)
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    ended_reason: Mapped[str | None] = mapped_column(String(16))


class HolderLink(HasId, Base):
    """A citizen's account at a holder: the holder's own identifier for them.

    The identifier is kept only for asking that holder (sealed with AES-GCM under a key
    derived from SECRET_KEY); `ref_tag`, a keyed HMAC of holder and identifier, makes it
    unique per holder without showing it; `ref_last4` is all a page ever shows.
    """

    __tablename__ = "holder_link"
    __table_args__ = (UniqueConstraint("holder_id", "ref_tag"),)
    subject_id: Mapped[uuid.UUID] = mapped_column(index=True)
    holder_id: Mapped[uuid.UUID] = mapped_column(index=True)
    dataset_id: Mapped[uuid.UUID | None]
    ref_tag: Mapped[str] = mapped_column(String(64))
    ref_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    ref_last4: Mapped[str] = mapped_column(String(4))


class PairingFailure(HasId, Base):
    """A refused pairing attempt by a holder (unknown, used or expired code): the rate limit."""

    __tablename__ = "pairing_failure"
    holder_id: Mapped[uuid.UUID] = mapped_column(index=True)
    occurred_at: Mapped[datetime] = mapped_column(index=True)
