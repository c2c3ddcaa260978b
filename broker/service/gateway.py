"""The data gateway: serve an individual-mode grant from the holders, one holder page at a time.

At the moment of each read it takes the citizens who hold a consent in force for the grant's
purpose and recipient and are linked to the dataset's holder, asks the holder for exactly
their identifiers (docs/holder-protocol.md), keeps only the fields the grant allows, and puts
the reuser's pseudonym in place of the holder's identifier. Memory stays flat whatever the
size: one holder page at a time, never the whole extract.

Order matters for "nothing half written": the grant, the access log's sealing lag and the first
page of every source are checked *before* anything is recorded, so a holder that is down,
slow or broken gets a 503/502 and no "served" entry. Then the access and each citizen's share
of it are appended to the log in the caller's transaction, which the caller commits before the
first byte leaves. A holder failing later, mid-stream, ends the stream without its closing
bracket (the reuser cannot mistake it for complete) and is recorded as an interruption.
"""

from __future__ import annotations

import http.client
import json
import logging
import secrets
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from anonymize.pseudonyms import Pseudonymiser
from audit import service as audit
from broker.models import AccessGrant, Dataset, DatasetAuth, GrantDelivery
from broker.service import access, outbound
from broker.service.tokens import Issuer
from common.clock import utcnow
from common.errors import BadGatewayError, ConflictError, ServiceUnavailableError
from common.keyring import sign
from consent import links
from consent import service as consents
from consent.models import Mode

log = logging.getLogger(__name__)
SUBJECTS_PER_CALL = 500  # the protocol's cap on `subject` per request
PAGE_LIMIT = 1000
MAX_PAGE_BYTES = 16 * 1024 * 1024
TOKEN_TTL = 120  # seconds: a holder token's life, for this holder only
# Seconds of life a token must have left to be sent: less, and a fresh one is minted first, since
# a read of millions of records outlives one token and a page may take GATEWAY_HOLDER_TIMEOUT.
TOKEN_RENEW_MARGIN = 30
RETRY_AFTER = 30


class HolderUnavailableError(ServiceUnavailableError):
    code = "holder-unavailable"


class HolderAnswerError(BadGatewayError):
    code = "holder-bad-answer"


@dataclass
class Source:
    """One dataset of the grant, with the citizens it will be asked for."""

    dataset_id: str
    holder_slug: str
    url: str
    token: HolderToken | None  # None: the holder's dataset needs no token
    subject_field: str
    fields: Sequence[str]
    pseudonyms: dict[str, str]  # the holder's identifier -> the reuser's pseudonym
    since: datetime | None
    until: datetime | None
    first: Page | None = None


@dataclass
class Page:
    records: list[dict[str, Any]]
    next_cursor: str | None


@dataclass
class Read:
    """A read that has been checked and recorded; `pages()` streams it."""

    grant: AccessGrant
    sources: list[Source]
    entry_id: uuid.UUID
    subjects: int
    served_at: datetime = field(default_factory=utcnow)


class HolderConnection:
    """One keep-alive HTTP connection to a holder's service, for the pages of one read."""

    def __init__(self, url: str, timeout: float) -> None:
        if outbound.connection_problem(url, outbound.policy()):
            raise HolderAnswerError(
                "The data holder's service is at an address Tiers does not call."
            )
        parts = urlsplit(url)
        kind = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        self._conn = kind(parts.hostname or "", parts.port, timeout=timeout)
        self._path = parts.path or "/"
        self._host = parts.netloc

    def page(self, query: Sequence[tuple[str, str]], token: str | None) -> Page:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            self._conn.request("GET", f"{self._path}?{urlencode(query)}", headers=headers)
            response = self._conn.getresponse()
            body = response.read(MAX_PAGE_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:  # timeouts are OSErrors
            self._conn.close()
            raise HolderUnavailableError(
                f"The data holder's service cannot be reached ({type(exc).__name__}).",
                retry_after=RETRY_AFTER,
            ) from None
        if response.status in (429, 502, 503, 504):
            raise HolderUnavailableError(
                f"The data holder's service is unavailable ({response.status}).",
                retry_after=_retry_after(response.getheader("Retry-After")),
            )
        if response.status != 200:
            log.warning(  # the body may echo holders' identifiers: its size only
                "holder %s answered %s (%d bytes)", self._host, response.status, len(body)
            )
            raise HolderAnswerError(f"The data holder's service answered {response.status}.")
        if len(body) > MAX_PAGE_BYTES:
            raise HolderAnswerError("The data holder's service sent a page that is too large.")
        return _parse_page(body)

    def close(self) -> None:
        self._conn.close()


def _retry_after(value: str | None) -> int:
    try:
        return max(1, min(3600, int(value or RETRY_AFTER)))
    except ValueError:
        return RETRY_AFTER


def _parse_page(body: bytes) -> Page:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HolderAnswerError("The data holder's service sent a page that is not JSON.") from None
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise HolderAnswerError("The data holder's page has no `records` list.")
    cursor = data.get("next_cursor")
    if cursor is not None and (not isinstance(cursor, str) or not cursor):
        raise HolderAnswerError("The data holder's `next_cursor` is not a string.")
    if not all(isinstance(r, dict) for r in data["records"]):
        raise HolderAnswerError("The data holder's records are not JSON objects.")
    return Page(data["records"], cursor)


@dataclass
class HolderToken:
    """The RFC 9068 token a read sends to one holder, minted again as the read goes on: every
    token has the same audience, purpose and claims, only `iat`, `exp` and `jti` change."""

    issuer: Issuer
    claims: dict[str, Any]  # all but the three that change
    value: str = ""
    expires_at: int = 0  # seconds since the epoch, as `exp`

    def current(self) -> str:
        """The token to send now: a fresh one when this one has less than TOKEN_RENEW_MARGIN
        left, so the holder never sees an expired token however long the read lasts."""
        now = int(utcnow().timestamp())
        if now >= self.expires_at - TOKEN_RENEW_MARGIN:
            self.expires_at = now + TOKEN_TTL
            claims = {
                **self.claims,
                "iat": now,
                "exp": self.expires_at,
                "jti": secrets.token_urlsafe(16),
            }
            self.value = sign(claims, self.issuer.keyring.active(), typ="at+jwt")
        return self.value


def holder_credential(issuer: Issuer, dataset: Dataset, grant: AccessGrant) -> HolderToken | None:
    """Tokens for this holder's resource only, naming the grant and its purpose; None for a
    dataset served without one. The claims are read here, once: the read streams after its
    transaction has ended."""
    if dataset.auth is DatasetAuth.NONE:
        return None
    claims = {
        "iss": issuer.issuer,
        "aud": dataset.holder.resource_uri,
        "sub": f"grant:{grant.id}",
        "client_id": "tiers-gateway",
        "scope": "records:read",
        "authorization_details": [
            {
                "type": "https://tiers-territorial.fr/oauth/data-access",
                "purpose": grant.purpose_id,
                "mode": grant.mode,
                "datasets": [str(dataset.id)],
            }
        ],
    }
    return HolderToken(issuer, claims)


def bearer(source: Source) -> str | None:
    """The token to send with the source's next page, renewed if it is about to expire."""
    return None if source.token is None else source.token.current()


def holder_query(source: Source, refs: Sequence[str], cursor: str | None) -> list[tuple[str, str]]:
    query = [("subject", ref) for ref in refs]
    if source.since is not None:
        query.append(("since", source.since.isoformat()))
    if source.until is not None:
        query.append(("until", source.until.isoformat()))
    if cursor:
        query.append(("cursor", cursor))
    query.append(("limit", str(PAGE_LIMIT)))
    return query


def subject_chunks(refs: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(refs), SUBJECTS_PER_CALL):
        yield refs[start : start + SUBJECTS_PER_CALL]


def open_read(
    session: Session,
    *,
    organisation_id: uuid.UUID,
    grant_id: uuid.UUID,
    since: datetime | None,
    until: datetime | None,
    issuer: Issuer,
    actor: str,
    timeout: float,
) -> Read:
    """Check and record one read of a grant; the caller commits, then streams `records`.

    NotFoundError for a grant that is not the caller's; GrantUnavailableError (403) for a
    suspended, expired or not yet started one; ConflictError for an aggregate grant (served by
    the DP releases); ServiceUnavailableError when the log lags or a holder is down.
    """
    grant = access.own_grant(session, organisation_id, grant_id)
    state = access.grant_state(grant)
    if not state.usable:
        raise access.GrantUnavailableError(f"This grant is {state.status.replace('_', ' ')}.")
    if grant.mode != Mode.INDIVIDUAL.value:
        raise ConflictError(
            "This grant is for aggregate statistics only: ask for a release at /api/v1/releases."
        )
    audit.require_sealed(session)
    pseudonym = Pseudonymiser(grant.organisation_id)
    sources: list[Source] = []
    subjects: dict[uuid.UUID, tuple[uuid.UUID, str]] = {}  # citizen -> (consent, dataset)
    for ref in grant.dataset_ids:
        dataset = session.get(Dataset, uuid.UUID(ref))
        if dataset is None or dataset.subject_field is None:
            continue
        in_force = consents.in_force_for(
            session,
            purpose_id=grant.purpose_id,
            recipient_id=grant.recipient_id,
            mode=Mode.INDIVIDUAL,
            dataset_id=ref,
            data_category=dataset.data_category,
        )
        linked = links.linked_subjects(session, dataset.holder_id, in_force, dataset_id=dataset.id)
        if not linked:
            continue
        for subject_id in linked.values():
            subjects.setdefault(subject_id, (in_force[subject_id], ref))
        sources.append(
            Source(
                dataset_id=ref,
                holder_slug=dataset.holder.slug,
                url=f"{dataset.endpoint_url.rstrip('/')}/records",
                token=holder_credential(issuer, dataset, grant),
                subject_field=dataset.subject_field,
                fields=list(grant.fields.get(ref, [])),
                pseudonyms={ref_: pseudonym(subject) for ref_, subject in sorted(linked.items())},
                since=since,
                until=until,
            )
        )
    # Every holder answers its first page before anything is recorded as served.
    for source in sources:
        connection = HolderConnection(source.url, timeout)
        try:
            refs = list(source.pseudonyms)
            source.first = connection.page(
                holder_query(source, refs[:SUBJECTS_PER_CALL], None), bearer(source)
            )
        finally:
            connection.close()
        shape_page(source, source.first)  # a broken first page: 502, nothing recorded
    entry_id = _record(session, grant, sources, subjects, actor)
    return Read(grant=grant, sources=sources, entry_id=entry_id, subjects=len(subjects))


def _record(
    session: Session,
    grant: AccessGrant,
    sources: Sequence[Source],
    subjects: Mapping[uuid.UUID, tuple[uuid.UUID, str]],
    actor: str,
) -> uuid.UUID:
    """The access, and each citizen's share of it (their own chain), in the log; and who got
    whose data, for withdrawal notices."""
    entry_id = audit.append(
        session,
        event="broker:records:serve",
        actor=actor,
        purpose=grant.purpose_id,
        decision="permit",
        detail={
            "grant": str(grant.id),
            "datasets": [s.dataset_id for s in sources],
            "subjects": len(subjects),
        },
    )
    for subject_id, (consent_id, dataset_id) in subjects.items():
        audit.append(
            session,
            event="broker:records:serve",
            actor=actor,
            subject_id=subject_id,
            purpose=grant.purpose_id,
            consent_id=consent_id,
            decision="permit",
            detail={"grant": str(grant.id), "dataset": dataset_id, "access": str(entry_id)},
        )
    record_deliveries(session, grant.id, list(subjects))
    return entry_id


def record_deliveries(
    session: Session, grant_id: uuid.UUID, subject_ids: Sequence[uuid.UUID]
) -> None:
    """Note that the grant served these citizens' data (first and last time): whom a
    withdrawal must notify besides the holder. Idempotent per (grant, citizen)."""
    if not subject_ids:
        return
    now = utcnow()
    known = set(
        session.scalars(
            select(GrantDelivery.subject_id).where(
                GrantDelivery.grant_id == grant_id, GrantDelivery.subject_id.in_(subject_ids)
            )
        )
    )
    if known:
        session.execute(
            update(GrantDelivery)
            .where(GrantDelivery.grant_id == grant_id, GrantDelivery.subject_id.in_(known))
            .values(last_served_at=now)
        )
    session.add_all(
        GrantDelivery(grant_id=grant_id, subject_id=s, first_served_at=now, last_served_at=now)
        for s in subject_ids
        if s not in known
    )
    session.flush()


def pages(read: Read, *, timeout: float) -> Iterator[list[dict[str, Any]]]:
    """Every record of the read, as the reuser receives it (`dataset`, `subject` (the
    pseudonym) and the allowed fields), one holder page at a time: the caller encodes and
    writes a page at once, not a record at a time. Each page goes with a token that has at least
    TOKEN_RENEW_MARGIN left. Raises the holder's errors as they happen."""
    for source in read.sources:
        connection = HolderConnection(source.url, timeout)
        try:
            refs = list(source.pseudonyms)
            for index, chunk in enumerate(subject_chunks(refs)):
                page = source.first if index == 0 and source.first is not None else None
                if page is None:
                    page = connection.page(holder_query(source, chunk, None), bearer(source))
                while True:
                    shaped = shape_page(source, page)
                    if shaped:
                        yield shaped
                    if page.next_cursor is None:
                        break
                    page = connection.page(
                        holder_query(source, chunk, page.next_cursor), bearer(source)
                    )
            source.first = None
        finally:
            connection.close()


def shape_page(source: Source, page: Page) -> list[dict[str, Any]]:
    """One page as the reuser receives it; all or nothing, so a page holding a record of
    someone Tiers did not ask for is never passed on, not even in part."""
    fields, subject_field, pseudonyms = source.fields, source.subject_field, source.pseudonyms
    dataset_id = source.dataset_id
    shaped: list[dict[str, Any]] = []
    append = shaped.append  # a million records: the lookups are hoisted out of the loop
    for record in page.records:
        pseudonym = pseudonyms.get(str(record.get(subject_field)))
        if pseudonym is None:
            raise HolderAnswerError(
                "The data holder sent a record of a subject it was not asked for."
            )
        out: dict[str, Any] = {"dataset": dataset_id, "subject": pseudonym}
        for name in fields:
            if name in record:
                out[name] = record[name]
        append(out)
    return shaped


def record_interruption(session: Session, read: Read, actor: str, reason: str) -> None:
    """A stream that broke after it began: the log says so, next to the access it cut short."""
    audit.append(
        session,
        event="broker:records:interrupt",
        actor=actor,
        purpose=read.grant.purpose_id,
        decision="error",
        reason=reason[:200],
        detail={"grant": str(read.grant.id), "access": str(read.entry_id)},
    )
