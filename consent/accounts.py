"""Citizens' accounts: sign-up, sign-in (rate-limited), server-side sessions that expire,
and closing an account.

Passwords are hashed with Argon2id; the subject id, never the e-mail, identifies a citizen
everywhere else in Tiers.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from audit import service as audit
from common.auth import CitizenIdentity
from common.clock import as_utc, utcnow
from common.errors import ConflictError, InvalidInputError, NotFoundError
from common.settings import keyed_tag
from consent.models import Citizen, CitizenSession, SignInFailure

_hasher = PasswordHasher()  # Argon2id with argon2-cffi's RFC 9106 "low memory" profile
# Verified against when the e-mail is unknown, so timing does not reveal which accounts exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
MIN_PASSWORD = 12
# What a closed account keeps instead of a password hash: no Argon2 hash, so nothing verifies.
CLOSED_HASH = "!"


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta
    max_age: timedelta


@dataclass(frozen=True)
class RateLimit:
    """Failed sign-ins allowed per address, and per client (a client tries many addresses)."""

    max_failures: int
    window: timedelta
    max_failures_per_client: int = 20


def normalize_email(email: str) -> str:
    return email.strip().lower()


def sign_up(session: Session, *, email: str, password: str, language: str = "fr") -> Citizen:
    """Create an account with a fresh pseudonymous subject id. Conflict if the e-mail is taken."""
    email = normalize_email(email)
    if len(password) < MIN_PASSWORD:
        raise InvalidInputError(
            "The password is too short.",
            fields={"password": [f"At least {MIN_PASSWORD} characters."]},
        )
    if session.scalar(select(Citizen.id).where(Citizen.email == email)) is not None:
        raise ConflictError(
            "An account already exists for this address.",
            fields={"email": ["An account already exists for this address."]},
        )
    citizen = Citizen(
        id=uuid.uuid4(),
        email=email,
        password_hash=_hasher.hash(password),
        subject_id=uuid.uuid4(),
        language=language,
    )
    session.add(citizen)
    session.flush()
    audit.append(
        session, event="consent:citizen:sign_up", actor="citizen", subject_id=citizen.subject_id
    )
    return citizen


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in. A refusal is returned, not raised, so that the failure and its
    audit entry commit (a raised error would roll them back and defeat the rate limit)."""

    citizen: Citizen | None
    refusal: str | None = None  # "bad_credentials" | "rate_limited"
    retry_after: int = 0


def authenticate(
    session: Session,
    *,
    email: str,
    password: str,
    client: str,
    limit: RateLimit,
    action: str = "sign_in",
) -> SignIn:
    """Check a password. Failures are counted per address and per client; past `limit`
    every attempt is refused until the window passes, even with the right password.
    `action` names the audit event (`consent:citizen:<action>`): a sign-in, or a signed-in
    citizen confirming their password before closing their account."""
    event = f"consent:citizen:{action}"
    email = normalize_email(email)
    email_tag = keyed_tag("sign-in-email", email)
    client_tag = keyed_tag("sign-in-client", client)
    since = utcnow() - limit.window
    recent = session.scalar(
        select(func.count(SignInFailure.id)).where(
            SignInFailure.occurred_at >= since, SignInFailure.email_tag == email_tag
        )
    )
    from_client = session.scalar(
        select(func.count(SignInFailure.id)).where(
            SignInFailure.occurred_at >= since, SignInFailure.client_tag == client_tag
        )
    )
    if (recent or 0) >= limit.max_failures or (from_client or 0) >= limit.max_failures_per_client:
        audit.append(
            session,
            event=event,
            actor="anonymous",
            decision="deny",
            reason="rate_limited",
        )
        return SignIn(None, "rate_limited", int(limit.window.total_seconds()))
    citizen = open_account(session, email)
    if citizen is None:
        _verify(_DUMMY_HASH, password)  # unknown accounts must not answer faster
    if citizen is None or not _verify(citizen.password_hash, password):
        session.add(SignInFailure(email_tag=email_tag, client_tag=client_tag, occurred_at=utcnow()))
        audit.append(
            session,
            event=event,
            actor="anonymous",
            subject_id=citizen.subject_id if citizen else None,
            decision="deny",
            reason="bad_credentials",
        )
        return SignIn(None, "bad_credentials")
    if _hasher.check_needs_rehash(citizen.password_hash):
        citizen.password_hash = _hasher.hash(password)
    audit.append(
        session,
        event=event,
        actor="citizen",
        subject_id=citizen.subject_id,
        decision="permit",
    )
    return SignIn(citizen)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(session: Session, citizen: Citizen, *, policy: SessionPolicy) -> str:
    """Open a browser session; returns the token for the cookie (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        CitizenSession(
            token_hash=_token_hash(token),
            citizen_id=citizen.id,
            created_at=now,
            last_seen_at=now,
            expires_at=now + policy.max_age,
            ended_at=None,
        )
    )
    return token


@dataclass(frozen=True)
class LiveSession:
    """A live browser session's citizen; `slid` when this read moved its idle timeout (the
    caller commits it)."""

    citizen: CitizenIdentity
    slid: bool


# Built once (their cache keys too): they run before every request a citizen makes. Columns,
# not entities: no ORM objects are built for a read that only needs five values.
_LIVE = (
    select(
        CitizenSession.ended_at,
        CitizenSession.expires_at,
        CitizenSession.last_seen_at,
        Citizen.id,
        Citizen.subject_id,
        Citizen.email,
        Citizen.language,
    )
    .join(Citizen, Citizen.id == CitizenSession.citizen_id)
    # A session that a sign-in racing the account's closing opened is dead all the same.
    .where(CitizenSession.token_hash == bindparam("token_hash"), Citizen.closed_at.is_(None))
)
_SLIDE = (
    update(CitizenSession)
    .where(CitizenSession.token_hash == bindparam("b_token_hash"))
    .values(last_seen_at=bindparam("b_now"))
)
SLIDE_EVERY = timedelta(minutes=1)  # reads stay reads; the idle timeout moves once a minute


def resolve_session(session: Session, token: str, *, policy: SessionPolicy) -> LiveSession | None:
    """The citizen of a live session, or None if ended or expired. One read; when the last
    one is over a minute old, also one write that slides the idle timeout (`slid`). It reads
    through the session's connection, with no autoflush: a session started or ended in the
    same transaction is seen only once flushed."""
    token_hash = _token_hash(token)
    connection = session.connection()
    row = connection.execute(_LIVE, {"token_hash": token_hash}).first()
    now = utcnow()
    if row is None:
        return None
    last_seen = as_utc(row.last_seen_at)
    if row.ended_at is not None or now >= as_utc(row.expires_at) or now >= last_seen + policy.idle:
        return None
    slid = now - last_seen > SLIDE_EVERY
    if slid:
        connection.execute(_SLIDE, {"b_token_hash": token_hash, "b_now": now})
    return LiveSession(CitizenIdentity(row.id, row.subject_id, row.email, row.language), slid)


def end_session(session: Session, token: str) -> None:
    """Sign out: the session is dead server-side, whatever the browser keeps."""
    row = session.get(CitizenSession, _token_hash(token))
    if row is not None and row.ended_at is None:
        row.ended_at = utcnow()
        citizen = session.get(Citizen, row.citizen_id)
        audit.append(
            session,
            event="consent:citizen:sign_out",
            actor="citizen",
            subject_id=citizen.subject_id if citizen else None,
        )


def set_language(session: Session, citizen_id: uuid.UUID, language: str) -> None:
    """Remember the citizen's portal language."""
    citizen = session.get(Citizen, citizen_id)
    if citizen is not None and language in ("fr", "en"):
        citizen.language = language


def open_account(session: Session, email: str, *, lock: bool = False) -> Citizen | None:
    """The open account with this address, or None: a closed account has no address."""
    query = select(Citizen).where(Citizen.email == normalize_email(email))
    citizen = session.scalar(query.with_for_update() if lock else query)
    return citizen if citizen is not None and citizen.closed_at is None else None


def find_open(session: Session, email: str, *, lock: bool = False) -> Citizen:
    """`open_account`, for the committee's and the operator's commands: NotFoundError if
    there is none."""
    citizen = open_account(session, email, lock=lock)
    if citizen is None:
        raise NotFoundError(
            "No portal account has this address: the person signs up first.",
            fields={"email": ["No account with this address."]},
        )
    return citizen


# Closed, and not erased yet: what the erasure sweep still has to settle.
AWAITING_ERASURE = Citizen.closed_at.is_not(None) & Citizen.erased_at.is_(None)


def closed_awaiting_erasure(session: Session) -> list[uuid.UUID]:
    """The ids of closed accounts not erased yet, oldest closing first."""
    return list(
        session.scalars(select(Citizen.id).where(AWAITING_ERASURE).order_by(Citizen.closed_at))
    )


def lock_closed(session: Session, citizen_id: uuid.UUID) -> Citizen | None:
    """This closed, not yet erased account, row locked; None if it is not one, or if another
    run of the erasure sweep holds it."""
    return session.scalar(
        select(Citizen)
        .where(Citizen.id == citizen_id, AWAITING_ERASURE)
        .with_for_update(skip_locked=True)
    )


def erased(session: Session, subject_id: uuid.UUID) -> bool:
    """Whether this citizen's account was closed and erased."""
    found = session.scalar(select(Citizen.erased_at).where(Citizen.subject_id == subject_id))
    return found is not None


def scrub(session: Session, citizen: Citizen) -> None:
    """End every session of this account and drop its address and password: nobody signs
    in to it again, and the address may sign up afresh. Sets `closed_at`."""
    now = utcnow()
    session.execute(
        update(CitizenSession)
        .where(CitizenSession.citizen_id == citizen.id, CitizenSession.ended_at.is_(None))
        .values(ended_at=now)
    )
    citizen.email = f"closed:{citizen.id}"  # not an address: sign-up only takes addresses
    citizen.password_hash = CLOSED_HASH
    citizen.closed_at = now


def mark_erased(citizen: Citizen) -> None:
    """Record that the erasure sweep is done with this closed account."""
    citizen.erased_at = utcnow()
