"""Organisations, their OAuth2 clients, and what the authorization server remembers.

Secrets, codes, request URIs and tokens are stored only as SHA-256 hashes: a copy of the
database gives nobody a usable credential (they are 256-bit random values, so a fast hash
is enough; passwords are another matter and live in consent/).
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from common.db import Base, HasId, str_enum


class Role(enum.StrEnum):
    """What an organisation is to the territory; it decides the scopes its clients may hold."""

    HOLDER = "holder"
    REUSER = "reuser"
    OBSERVATORY = "observatory"
    CITY_SERVICE = "city_service"
    AUDITOR = "auditor"
    COMMITTEE = "committee"


class AuthMethod(enum.StrEnum):
    CLIENT_SECRET_BASIC = "client_secret_basic"  # noqa: S105 (a method name)
    PRIVATE_KEY_JWT = "private_key_jwt"
    NONE = "none"  # a public client (a citizen's native app): PKCE, no PAR requirement


class Organisation(HasId, Base):
    """A party of the territory. `slug` is the id the charter names (e.g. named reusers)."""

    __tablename__ = "organisation"
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(str_enum(Role))
    reuser_category: Mapped[str | None] = mapped_column(String(64))
    # RFC 8707: a holder's own API, which tokens may name as their audience.
    resource_uri: Mapped[str | None] = mapped_column(String(500), unique=True)
    suspended_at: Mapped[datetime | None]
    # Where Tiers POSTs signed notices (withdrawals) for this organisation; none: no notices.
    webhook_url: Mapped[str | None] = mapped_column(String(500))
    clients: Mapped[list[OAuthClient]] = relationship(back_populates="organisation")


class OAuthClient(HasId, Base):
    """An OAuth2 client of one organisation (RFC 7591 metadata, secret hashed)."""

    __tablename__ = "oauth_client"
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    auth_method: Mapped[AuthMethod] = mapped_column(str_enum(AuthMethod, 32))
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    redirect_uris: Mapped[list[str]] = mapped_column(JSON)
    grant_types: Mapped[list[str]] = mapped_column(JSON)
    scope: Mapped[str] = mapped_column(String(500))
    dpop_bound: Mapped[bool] = mapped_column(Boolean, default=False)
    registered_by: Mapped[str] = mapped_column(String(16))  # "committee" | "dcr"
    revoked_at: Mapped[datetime | None]
    organisation: Mapped[Organisation] = relationship(back_populates="clients", lazy="joined")


class InitialAccessToken(HasId, Base):
    """RFC 7591 §3: lets one organisation register one client by itself, once."""

    __tablename__ = "initial_access_token"
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"))
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class PushedRequest(HasId, Base):
    """RFC 9126: an authorization request pushed by an authenticated client; single-use."""

    __tablename__ = "pushed_request"
    uri_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("oauth_client.id"), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class AuthorizationCode(HasId, Base):
    """An authorization code (hashed), bound to its client, redirect URI, PKCE and DPoP key."""

    __tablename__ = "authorization_code"
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("oauth_client.id"), index=True)
    subject_id: Mapped[uuid.UUID]
    redirect_uri: Mapped[str] = mapped_column(String(500))
    scope: Mapped[str] = mapped_column(String(500))
    code_challenge: Mapped[str] = mapped_column(String(128))
    authorization_details: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    consent_ids: Mapped[list[str]] = mapped_column(JSON)
    resource: Mapped[str | None] = mapped_column(String(500))
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class Grant(HasId, Base):
    """One authorization: every token issued from one code or one client_credentials call.

    Revoking the grant (code replay, refresh replay, withdrawal) revokes all its tokens.
    """

    __tablename__ = "oauth_grant"
    client_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("oauth_client.id"), index=True)
    code_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("authorization_code.id"))
    subject_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    scope: Mapped[str] = mapped_column(String(500))
    authorization_details: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    consent_ids: Mapped[list[str]] = mapped_column(JSON)
    audience: Mapped[str] = mapped_column(String(500))
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(64))
    client: Mapped[OAuthClient] = relationship(lazy="joined")
    consent_links: Mapped[list[GrantConsent]] = relationship(cascade="all, delete-orphan")


class GrantConsent(Base):
    """Which consents a grant relies on: the index that withdrawal follows to its tokens."""

    __tablename__ = "oauth_grant_consent"
    grant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("oauth_grant.id"), primary_key=True)
    consent_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, index=True)


class TokenKind(enum.StrEnum):
    ACCESS = "access"
    REFRESH = "refresh"


class Token(HasId, Base):
    """An issued token, by hash. An access token's `jti` lets the resource side find it."""

    __tablename__ = "oauth_token"
    grant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("oauth_grant.id"), index=True)
    kind: Mapped[TokenKind] = mapped_column(str_enum(TokenKind))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    jti: Mapped[str | None] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]  # a refresh token, once rotated
    revoked_at: Mapped[datetime | None]
    grant: Mapped[Grant] = relationship(lazy="joined")


class SeenJti(Base):
    """Replay cache of client assertions and DPoP proofs: kept in the database, so it
    survives a restart and is shared by every worker. Rows past `expires_at` are purged."""

    __tablename__ = "seen_jti"
    __table_args__ = (UniqueConstraint("issuer", "jti"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    issuer: Mapped[str] = mapped_column(String(128))  # client_id, or "dpop:" + key thumbprint
    jti: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(index=True)


class CommitteeMember(HasId, Base):
    """A portal account that may use the committee's admin pages (`tiers committee add`)."""

    __tablename__ = "committee_member"
    citizen_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("citizen.id"), unique=True)
    note: Mapped[str] = mapped_column(Text, default="")


class OrganisationMember(HasId, Base):
    """A portal account that acts for one organisation on its pages (an observatory's
    statistics, say): `tiers member add EMAIL SLUG`. One organisation per account."""

    __tablename__ = "organisation_member"
    citizen_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("citizen.id"), unique=True)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"), index=True)
    note: Mapped[str] = mapped_column(Text, default="")


# --- holders' datasets (issue #5) --------------------------------------------------------


class FieldType(enum.StrEnum):
    """The types a dataset's schema may declare (JSON values on the holder's endpoint)."""

    INTEGER = "integer"
    NUMBER = "number"
    STRING = "string"
    DATE = "date"
    DATETIME = "datetime"
    BOOLEAN = "boolean"


class DatasetAuth(enum.StrEnum):
    """How Tiers authenticates to a holder's endpoint (docs/holder-protocol.md)."""

    TIERS_TOKEN = "tiers_token"  # noqa: S105 (a method name): a JWT from Tiers, aud = resource URI
    NONE = "none"  # open data only


class Health(enum.StrEnum):
    """What the last probe of a dataset's service (`{origin}/health`) found."""

    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


class Dataset(HasId, Base):
    """A dataset a holder registered: what it holds, where, and how Tiers reads it.

    `fields` is the normalised schema: one object per field (name, type, unit, personal,
    sensitive, min, max). `personal` is derived from it: a dataset without personal fields is
    open data, served without a token under `licence`. The slug is unique per holder.
    """

    __tablename__ = "dataset"
    __table_args__ = (UniqueConstraint("holder_id", "slug"),)
    holder_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"), index=True)
    slug: Mapped[str] = mapped_column(String(64))
    title: Mapped[dict[str, str]] = mapped_column(JSON)  # {"fr": …, "en": …}
    description: Mapped[dict[str, str]] = mapped_column(JSON)
    data_category: Mapped[str] = mapped_column(String(64), index=True)
    fields: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    subject_field: Mapped[str | None] = mapped_column(String(64))
    time_field: Mapped[str | None] = mapped_column(String(64))
    personal: Mapped[bool] = mapped_column(Boolean)
    endpoint_url: Mapped[str] = mapped_column(String(500))
    auth: Mapped[DatasetAuth] = mapped_column(str_enum(DatasetAuth))
    refresh: Mapped[str] = mapped_column(String(32))  # an ISO 8601 duration, e.g. P1D
    licence: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[datetime]
    health: Mapped[Health] = mapped_column(str_enum(Health), default=Health.UNKNOWN)
    health_checked_at: Mapped[datetime | None]
    health_detail: Mapped[str | None] = mapped_column(String(200))
    holder: Mapped[Organisation] = relationship(lazy="joined")


# --- access requests, grants and what the gateway served (issue #5) ---------------------


class Decision(enum.StrEnum):
    """What the policy decision point answers to an access request (policies/access.py)."""

    PERMIT = "permit"
    DENY = "deny"
    NEEDS_APPROVAL = "needs_approval"


class RequestStatus(enum.StrEnum):
    """Where a request stands: decided by the charter alone, or by the committee."""

    PENDING = "pending"  # needs_approval: waiting for the committee
    APPROVED = "approved"  # a grant exists
    REJECTED = "rejected"  # the committee said no
    DENIED = "denied"  # the charter said no


class AccessRequest(HasId, Base):
    """A reuser's request for datasets under one charter purpose, with the decision on it.

    `obligations` and `reasons` are what the policy decision point answered, each naming the
    charter clause behind it; they are kept as decided, even if the charter changes later.
    """

    __tablename__ = "access_request"
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"), index=True)
    client_pk: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("oauth_client.id"))
    purpose_id: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    dataset_ids: Mapped[list[str]] = mapped_column(JSON)
    fields: Mapped[dict[str, list[str]]] = mapped_column(JSON)  # dataset id -> fields served
    justification: Mapped[str] = mapped_column(Text)
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    charter_version: Mapped[str] = mapped_column(String(32))
    decision: Mapped[Decision] = mapped_column(str_enum(Decision))
    obligations: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    status: Mapped[RequestStatus] = mapped_column(str_enum(RequestStatus), index=True)
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decision_note: Mapped[str | None] = mapped_column(Text)
    organisation: Mapped[Organisation] = relationship(lazy="joined")


class AccessGrant(HasId, Base):
    """An approved request: what the gateway serves to one reuser, from when until when.

    `recipient_id` is what consents name for this reuser (its slug for a purpose with named
    reusers, its category otherwise): only citizens whose consent names it are served.
    """

    __tablename__ = "access_grant"
    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("access_request.id"), unique=True)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"), index=True)
    purpose_id: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    recipient_id: Mapped[str] = mapped_column(String(64))
    dataset_ids: Mapped[list[str]] = mapped_column(JSON)
    fields: Mapped[dict[str, list[str]]] = mapped_column(JSON)
    obligations: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    starts_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    suspended_at: Mapped[datetime | None]
    suspended_reason: Mapped[str | None] = mapped_column(Text)
    organisation: Mapped[Organisation] = relationship(lazy="joined")
    request: Mapped[AccessRequest] = relationship(lazy="joined")


class GrantDelivery(Base):
    """Which citizens' data a grant has served: whom to tell when one of them withdraws."""

    __tablename__ = "grant_delivery"
    grant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("access_grant.id"), primary_key=True)
    subject_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, index=True)
    first_served_at: Mapped[datetime]
    last_served_at: Mapped[datetime]


class NoticeStatus(enum.StrEnum):
    PENDING = "pending"  # not yet acknowledged; retried with backoff
    DELIVERED = "delivered"  # the recipient answered 2xx
    DEAD = "dead"  # gave up after NOTICE_MAX_ATTEMPTS: the committee's dead-letter list


class Notice(HasId, Base):
    """A signed notice owed to one organisation about one citizen's consent (a withdrawal).

    One row per (consent, organisation, kind): planning it twice changes nothing. Its id is
    the Idempotency-Key of every delivery attempt. The citizen's identifier for the recipient
    (the holder's own, or the reuser's pseudonym) is computed at each attempt, never stored.
    """

    __tablename__ = "notice"
    __table_args__ = (UniqueConstraint("consent_id", "organisation_id", "kind"),)
    consent_id: Mapped[uuid.UUID] = mapped_column(index=True)
    subject_id: Mapped[uuid.UUID] = mapped_column(index=True)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # consent.withdrawn
    purpose_id: Mapped[str] = mapped_column(String(64))
    recipient_role: Mapped[str] = mapped_column(String(16))  # holder | reuser
    status: Mapped[NoticeStatus] = mapped_column(str_enum(NoticeStatus), index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(index=True)
    last_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(300))
    delivered_at: Mapped[datetime | None]
    deletion_confirmed_at: Mapped[datetime | None]
    organisation: Mapped[Organisation] = relationship(lazy="joined")
