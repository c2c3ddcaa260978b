"""Links between citizens and their accounts at data holders, made with one-time pairing codes.

The citizen asks the portal for a code for one holder and types it into that holder's own
service, which sends it to Tiers with its identifier for them (docs/holder-protocol.md).
Holder identifiers are sealed at rest, never shown in full, never given to reusers and never
written to the audit log (shared/DESIGN.md "Consents"). Holders are broker's organisations:
callers pass them in as `Holder` values, so this module never imports broker. Nothing
commits here.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audit import service as audit
from common.clock import utcnow
from common.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    TooManyRequestsError,
)
from common.settings import derived_key, keyed_tag
from consent.models import HolderLink, PairingCode, PairingFailure

# No 0/O, 1/I/L or U/V look-alikes: a code is read on one screen and typed on another.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTWXYZ"
CODE_LENGTH = 8
CODE_TTL = timedelta(minutes=15)
MAX_REF = 128  # a 14-digit PRM, a card number: holder identifiers are short
_NONCE = 12  # AES-GCM's 96-bit nonce (NIST SP 800-38D §8.2.2)
CODE_TAG = "pairing-code"
REF_TAG = "holder-subject-ref"
REF_KEY = "holder-subject-ref-seal"


class PairingCodeUsedError(ConflictError):
    code = "pairing-code-used"


class PairingCodeExpiredError(ConflictError):
    code = "pairing-code-expired"


@dataclass(frozen=True)
class Holder:
    """A data holder as this module needs it (broker's organisation of role holder)."""

    id: uuid.UUID
    slug: str
    name: str


@dataclass(frozen=True)
class IssueLimit:
    """How many codes one citizen may ask for in a window (codes are cheap to ask for, and
    each one is a guess target for as long as it lives)."""

    max_codes: int = 5
    window: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class RedeemLimit:
    """How many refused codes one holder may send in a window before every try is refused."""

    max_failures: int = 20
    window: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class IssuedCode:
    """A code in clear: it exists only in the response that shows it to the citizen."""

    code: str  # XXXX-XXXX
    holder: Holder
    expires_at: datetime


@dataclass(frozen=True)
class Redemption:
    """The outcome of a holder sending a code. A refusal is returned, not raised, so that
    the failure row (the rate limit) and its audit entry commit."""

    link: HolderLink | None
    refusal: str | None = None  # "unknown" | "used" | "expired" | "rate_limited"
    created: bool = False
    retry_after: int = 0

    def raise_refusal(self) -> None:
        """The refusal as the domain error the HTTP layer answers with (after commit)."""
        if self.refusal == "rate_limited":
            raise TooManyRequestsError(
                "Too many refused pairing codes: try again later.", retry_after=self.retry_after
            )
        if self.refusal == "used":
            raise PairingCodeUsedError("This pairing code was already used.")
        if self.refusal == "expired":
            raise PairingCodeExpiredError(
                "This pairing code has expired: the citizen asks the portal for a new one."
            )
        if self.refusal is not None:
            # A code of another holder is answered like an unknown one (no oracle).
            raise NotFoundError("No such pairing code for your organisation.")


# --- codes ------------------------------------------------------------------------------


def format_code(raw: str) -> str:
    """XXXXXXXX -> XXXX-XXXX, the form the citizen reads."""
    return f"{raw[:4]}-{raw[4:]}"


def normalize_code(text: str) -> str | None:
    """A typed code as stored (upper case, no dash or spaces), or None if it cannot be one."""
    raw = "".join(text.split()).replace("-", "").upper()
    if len(raw) != CODE_LENGTH or any(c not in ALPHABET for c in raw):
        return None
    return raw


def issue_code(
    session: Session, *, subject_id: uuid.UUID, holder: Holder, limit: IssueLimit | None = None
) -> IssuedCode:
    """A fresh one-time code for linking this citizen at `holder`, valid CODE_TTL, once.

    A newer code replaces the citizen's live code for the same holder. TooManyRequestsError
    past `limit` codes in its window.
    """
    limit = limit or IssueLimit()
    now = utcnow()
    recent = session.scalar(
        select(func.count(PairingCode.id)).where(
            PairingCode.subject_id == subject_id, PairingCode.created_at > now - limit.window
        )
    )
    if (recent or 0) >= limit.max_codes:
        raise TooManyRequestsError(
            "Too many pairing codes asked for: try again later.",
            retry_after=int(limit.window.total_seconds()),
        )
    session.execute(
        update(PairingCode)
        .where(
            PairingCode.subject_id == subject_id,
            PairingCode.holder_id == holder.id,
            PairingCode.ended_at.is_(None),
        )
        .values(ended_at=now, ended_reason="replaced")
        .execution_options(synchronize_session=False)
    )
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    row = PairingCode(
        id=uuid.uuid4(),
        code_tag=keyed_tag(CODE_TAG, raw),
        subject_id=subject_id,
        holder_id=holder.id,
        expires_at=now + CODE_TTL,
        ended_at=None,
        ended_reason=None,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:  # two live codes with one tag: 29^8 makes it a bug
        raise ConflictError("Could not make a pairing code: try again.") from exc
    audit.append(
        session,
        event="consent:pairing:issue",
        actor="citizen",
        subject_id=subject_id,
        detail={"holder": str(holder.id), "pairing": str(row.id)},
    )
    return IssuedCode(format_code(raw), holder, row.expires_at)


def _check_ref(subject_ref: object) -> str:
    if not isinstance(subject_ref, str) or not subject_ref.strip():
        raise InvalidInputError(
            "The subject identifier is not valid.",
            fields={"subject": ["The holder's identifier for this citizen is required."]},
        )
    ref = subject_ref.strip()
    if len(ref) > MAX_REF or any(ord(c) < 0x21 or ord(c) == 0x7F for c in ref):
        raise InvalidInputError(
            "The subject identifier is not valid.",
            fields={"subject": [f"At most {MAX_REF} printable characters, without spaces."]},
        )
    return ref


def redeem(
    session: Session,
    *,
    holder: Holder,
    code: str,
    subject_ref: str,
    dataset_id: uuid.UUID | None = None,
    actor: str,
    limit: RedeemLimit | None = None,
) -> Redemption:
    """A holder sends a citizen's code with its identifier for them: link them.

    The code must be this holder's, live and unused; it is consumed by one UPDATE, so two
    concurrent redemptions cannot both succeed. Sending the same identifier again for the
    same citizen is idempotent (the code is consumed, the link stays). InvalidInputError for
    a bad identifier; ConflictError when another citizen is linked to that identifier here.
    Refusals of the code itself are returned (see Redemption), and counted per holder.
    """
    limit = limit or RedeemLimit()
    ref = _check_ref(subject_ref)
    now = utcnow()
    failures = session.scalar(
        select(func.count(PairingFailure.id)).where(
            PairingFailure.holder_id == holder.id,
            PairingFailure.occurred_at > now - limit.window,
        )
    )
    if (failures or 0) >= limit.max_failures:
        audit.append(
            session,
            event="consent:pairing:redeem",
            actor=actor,
            decision="deny",
            reason="rate_limited",
        )
        return Redemption(None, "rate_limited", retry_after=int(limit.window.total_seconds()))
    raw = normalize_code(code)
    row = (
        session.scalar(
            select(PairingCode)
            .where(PairingCode.code_tag == keyed_tag(CODE_TAG, raw))
            .with_for_update()
        )
        if raw is not None
        else None
    )
    refusal = _refusal(row, holder, now)
    if refusal is not None:
        session.add(PairingFailure(id=uuid.uuid4(), holder_id=holder.id, occurred_at=now))
        audit.append(
            session,
            event="consent:pairing:redeem",
            actor=actor,
            # Known codes are the citizen's business: their own log shows who tried them.
            subject_id=row.subject_id if row is not None else None,
            decision="deny",
            reason=refusal,
            detail={"holder": str(holder.id)},
        )
        return Redemption(None, refusal)
    assert row is not None  # noqa: S101 (_refusal answered None only for a live code)
    consumed = session.execute(
        update(PairingCode)
        .where(PairingCode.id == row.id, PairingCode.ended_at.is_(None))
        .values(ended_at=now, ended_reason="used")
        .execution_options(synchronize_session=False)
    )
    if getattr(consumed, "rowcount", 0) != 1:
        return Redemption(None, "used")
    return _link(session, row.subject_id, holder, ref, dataset_id, row.id, actor)


def _refusal(row: PairingCode | None, holder: Holder, now: datetime) -> str | None:
    if row is None or row.holder_id != holder.id:
        return "unknown"
    if row.ended_reason == "used":
        return "used"
    if row.ended_at is not None or row.expires_at <= now:
        return "expired"  # replaced by a newer code, or too old
    return None


def _link(
    session: Session,
    subject_id: uuid.UUID,
    holder: Holder,
    ref: str,
    dataset_id: uuid.UUID | None,
    pairing_id: uuid.UUID,
    actor: str,
) -> Redemption:
    tag = keyed_tag(REF_TAG, f"{holder.id}:{ref}")
    existing = session.scalar(
        select(HolderLink).where(HolderLink.holder_id == holder.id, HolderLink.ref_tag == tag)
    )
    if existing is not None:
        if existing.subject_id != subject_id:
            # One identifier, one citizen: the gateway maps each record back to one person.
            raise ConflictError(
                "This identifier is already linked to another account.",
                fields={"subject": ["Already linked to another Tiers account."]},
            )
        return Redemption(existing, created=False)
    link_id = uuid.uuid4()
    link = HolderLink(
        id=link_id,
        subject_id=subject_id,
        holder_id=holder.id,
        dataset_id=dataset_id,
        ref_tag=tag,
        ref_sealed=_seal(holder.id, link_id, ref),
        ref_last4=ref[-4:],
    )
    session.add(link)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent pairing of the same identifier won
        raise ConflictError(
            "This identifier is already linked.",
            fields={"subject": ["Already linked to a Tiers account."]},
        ) from exc
    # The holder's identifier stays out of the log, even encrypted (shared/DESIGN.md "Audit").
    audit.append(
        session,
        event="consent:link:create",
        actor=actor,
        subject_id=subject_id,
        detail={
            "link": str(link_id),
            "holder": str(holder.id),
            "dataset": str(dataset_id) if dataset_id else None,
            "pairing": str(pairing_id),
        },
    )
    return Redemption(link, created=True)


# --- the citizen's links ----------------------------------------------------------------


def list_links(session: Session, subject_id: uuid.UUID) -> list[HolderLink]:
    """This citizen's links, oldest first."""
    return list(
        session.scalars(
            select(HolderLink)
            .where(HolderLink.subject_id == subject_id)
            .order_by(HolderLink.created_at, HolderLink.id)
        )
    )


def unlink(session: Session, *, subject_id: uuid.UUID, link_id: uuid.UUID) -> None:
    """Forget one of this citizen's links, identifier included; effective at commit.

    NotFoundError for a link that is not theirs (no IDOR).
    """
    link = session.get(HolderLink, link_id, with_for_update=True)
    if link is None or link.subject_id != subject_id:
        raise NotFoundError("No such linked account.")
    session.execute(delete(HolderLink).where(HolderLink.id == link_id))
    audit.append(
        session,
        event="consent:link:remove",
        actor="citizen",
        subject_id=subject_id,
        detail={"link": str(link_id), "holder": str(link.holder_id)},
    )


def end_codes(session: Session, subject_id: uuid.UUID) -> None:
    """A closing account: its open pairing codes end, so no new link can be made."""
    session.execute(
        update(PairingCode)
        .where(PairingCode.subject_id == subject_id, PairingCode.ended_at.is_(None))
        .values(ended_at=utcnow(), ended_reason="account_closed")
    )


def forget_subject(session: Session, subject_id: uuid.UUID) -> int:
    """An erased account: forget all of this citizen's links, identifiers included. Only
    once its withdrawal notices are settled: a holder's notice names the citizen by the
    identifier its link keeps. Returns how many links went; effective at commit."""
    gone = session.execute(delete(HolderLink).where(HolderLink.subject_id == subject_id))
    return int(getattr(gone, "rowcount", 0) or 0)


def linked_subjects(
    session: Session,
    holder_id: uuid.UUID,
    subject_ids: Collection[uuid.UUID],
    *,
    dataset_id: uuid.UUID | None = None,
) -> dict[str, uuid.UUID]:
    """The holder's identifiers for these citizens, each mapped to its citizen.

    For the gateway, which asks the holder for exactly these identifiers and maps each record
    back to a citizen (then to a reuser's pseudonym): nothing here ever goes to a reuser.
    With `dataset_id`, links made for another dataset of the holder are left out.
    """
    if not subject_ids:
        return {}
    query = select(HolderLink).where(
        HolderLink.holder_id == holder_id, HolderLink.subject_id.in_(list(subject_ids))
    )
    if dataset_id is not None:
        query = query.where(
            (HolderLink.dataset_id.is_(None)) | (HolderLink.dataset_id == dataset_id)
        )
    return {_open(link): link.subject_id for link in session.scalars(query)}


def holders_by_id(holders: Sequence[Holder]) -> dict[uuid.UUID, Holder]:
    """Index holders by id (pages name each link's holder)."""
    return {holder.id: holder for holder in holders}


# --- sealing ----------------------------------------------------------------------------


def _aad(holder_id: uuid.UUID, link_id: uuid.UUID) -> bytes:
    # Bound to its row: a sealed identifier copied to another link or holder does not open.
    return f"tiers/holder-link/{holder_id}/{link_id}".encode()


def _seal(holder_id: uuid.UUID, link_id: uuid.UUID, ref: str) -> bytes:
    nonce = os.urandom(_NONCE)
    sealed = AESGCM(derived_key(REF_KEY)).encrypt(nonce, ref.encode(), _aad(holder_id, link_id))
    return nonce + sealed


def _open(link: HolderLink) -> str:
    box = AESGCM(derived_key(REF_KEY))
    data = link.ref_sealed
    return box.decrypt(data[:_NONCE], data[_NONCE:], _aad(link.holder_id, link.id)).decode()
