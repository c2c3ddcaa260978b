"""Organisations, managed by the charter committee, and the committee's own members.

Their OAuth2 clients and RFC 7591 registration live in broker.service.clients, which uses the
URL and name checks below. Every change appends an audit entry in the caller's transaction;
nothing commits here.
"""

from __future__ import annotations

import enum
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from anonymize import service as releases
from anonymize.service import Requester
from audit import service as audit
from broker.models import CommitteeMember, Organisation, OrganisationMember, Role
from broker.service import outbound
from charter import service as charters
from charter.document import CharterDocument
from common.clock import utcnow
from common.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from consent import accounts

SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*\Z")  # the charter's ids for named reusers
MAX_SLUG, MAX_NAME, MAX_URI = 64, 200, 500
# The charter's reuser category says who an organisation is to the citizens who consent.
CATEGORY_REQUIRED = frozenset({Role.REUSER, Role.CITY_SERVICE, Role.OBSERVATORY})
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})  # RFC 8252 §7.3
# Who receives statistics: their members see them on the portal too.
STATISTICS_ROLES = frozenset(Role(role) for role in releases.STATISTICS_ROLES)


class _Unset(enum.Enum):
    UNSET = enum.auto()


UNSET = _Unset.UNSET  # "leave as it is", distinct from None ("clear it")


# --- organisations ----------------------------------------------------------------------


def _coerce_role(role: Role | str, errors: dict[str, list[str]]) -> Role | None:
    try:
        return Role(role)
    except ValueError:
        errors["role"] = [f"Must be one of: {', '.join(r.value for r in Role)}."]
        return None


def called_url_problem(uri: object, *, what: str, query: bool = True) -> str | None:
    """`url_problem`, then for a URL Tiers itself will call (endpoints, resource URIs,
    webhooks, not redirect URIs) the outbound rules: no private or reserved address."""
    return url_problem(uri, what=what, query=query) or (
        outbound.registration_problem(str(uri), outbound.policy())
    )


def url_problem(uri: object, *, what: str, query: bool = True) -> str | None:
    """Why `uri` is not an acceptable absolute https URL (http only on loopback), or None."""
    if not isinstance(uri, str) or not uri:
        return f"A {what} must be a non-empty string."
    if len(uri) > MAX_URI:
        return f"{uri[:60]}…: a {what} has at most {MAX_URI} characters."
    if "*" in uri:
        return f"{uri}: wildcards are not allowed; a {what} is compared exactly."
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in uri):
        return f"{uri!r}: spaces and control characters are not allowed."
    try:
        parts = urlsplit(uri)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return f"{uri}: not a valid URL."
    if not parts.scheme or not host:
        return f"{uri}: a {what} must be an absolute URL."
    if "#" in uri:
        return f"{uri}: a {what} must not contain a fragment (RFC 6749 §3.1.2)."
    if parts.username is not None or parts.password is not None:
        return f"{uri}: a {what} must not contain credentials."
    if not query and parts.query:
        return f"{uri}: a {what} must not contain a query (RFC 8707 §2)."
    if parts.scheme == "https":
        return None
    if parts.scheme == "http":
        if host in LOOPBACK_HOSTS:
            return None
        return f"{uri}: http is allowed only on loopback (localhost, 127.0.0.1); use https."
    return f"{uri}: a {what} must use https."


def _named_category(doc: CharterDocument, slug: str) -> str | None:
    """The reuser category the charter gives `slug` when a purpose names it as a reuser."""
    for purpose in doc.purposes:
        for reuser in purpose.named_reusers:
            if reuser.id == slug:
                return reuser.category
    return None


def _check_category(
    session: Session,
    role: Role,
    category: str | None,
    slug: str,
    errors: dict[str, list[str]],
) -> None:
    """The reuser category must be one of the current charter's; some roles need one."""
    if category is None:
        if role in CATEGORY_REQUIRED:
            errors["reuser_category"] = [
                f"A {role.value} organisation needs a reuser category of the charter."
            ]
        return
    charter = charters.current_or_none(session)
    if charter is None:
        errors["reuser_category"] = ["No charter is published yet: publish one first."]
        return
    known = [c.id for c in charter.doc.reuser_categories]
    if category not in known:
        errors["reuser_category"] = [
            f'"{category}" is not a reuser category of charter {charter.version}; '
            f"must be one of: {', '.join(known)}."
        ]
        return
    named = _named_category(charter.doc, slug)
    if named is not None and named != category:
        errors["reuser_category"] = [f'The charter names "{slug}" as a {named} reuser.']


def check_name(name: object, errors: dict[str, list[str]], field: str = "name") -> str:
    """`name` stripped; why it is missing or not acceptable goes into `errors[field]`."""
    if not isinstance(name, str) or not name.strip():
        errors[field] = ["A name is required."]
        return ""
    if len(name.strip()) > MAX_NAME:
        errors[field] = [f"At most {MAX_NAME} characters."]
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        errors[field] = ["Control characters are not allowed."]
    return name.strip()


def _check_resource_uri(
    session: Session, uri: str | None, errors: dict[str, list[str]], *, own: uuid.UUID | None
) -> None:
    if uri is None:
        return
    problem = called_url_problem(uri, what="resource URI", query=False)
    if problem:
        errors["resource_uri"] = [problem]
        return
    taken = session.scalar(select(Organisation.id).where(Organisation.resource_uri == uri))
    if taken is not None and taken != own:
        errors["resource_uri"] = ["Another organisation already serves this resource URI."]


def _check_webhook(url: str | None, errors: dict[str, list[str]]) -> None:
    """Where signed notices go: https, or http on the loopback only (the demo, tests)."""
    if url is None:
        return
    problem = called_url_problem(url, what="webhook URL")
    if problem:
        errors["webhook_url"] = [problem]


def _flush_unique(session: Session, detail: str) -> None:
    """Flush now: unique indexes decide races the checks above could not see."""
    try:
        session.flush()
    except IntegrityError as exc:
        raise ConflictError(detail) from exc


def create_organisation(
    session: Session,
    *,
    slug: str,
    name: str,
    role: Role | str,
    reuser_category: str | None = None,
    resource_uri: str | None = None,
    webhook_url: str | None = None,
    actor: str,
) -> Organisation:
    """Register a party of the territory.

    InvalidInputError names every bad field; ConflictError (on `slug`) when the slug is taken.
    """
    errors: dict[str, list[str]] = {}
    if not isinstance(slug, str) or len(slug) > MAX_SLUG or not SLUG.match(slug):
        errors["slug"] = [f"A lowercase kebab-case id of at most {MAX_SLUG} characters."]
    clean_name = check_name(name, errors)
    kind = _coerce_role(role, errors)
    if kind is not None:
        _check_category(session, kind, reuser_category, slug, errors)
    _check_resource_uri(session, resource_uri, errors, own=None)
    _check_webhook(webhook_url, errors)
    if errors:
        raise InvalidInputError("The organisation is not valid.", fields=errors)
    assert kind is not None  # noqa: S101 (checked above; for the type checker)
    if session.scalar(select(Organisation.id).where(Organisation.slug == slug)) is not None:
        raise ConflictError(
            f'An organisation "{slug}" already exists.',
            fields={"slug": ["This slug is already taken."]},
        )
    organisation = Organisation(
        id=uuid.uuid4(),
        slug=slug,
        name=clean_name,
        role=kind,
        reuser_category=reuser_category,
        resource_uri=resource_uri,
        webhook_url=webhook_url,
        suspended_at=None,
    )
    session.add(organisation)
    _flush_unique(session, f'An organisation "{slug}" or its resource URI already exists.')
    audit.append(
        session,
        event="admin:organisation:create",
        actor=actor,
        detail={"organisation": slug, "role": kind.value, "reuser_category": reuser_category},
    )
    return organisation


def list_organisations(session: Session, *, role: Role | None = None) -> list[Organisation]:
    """Every organisation, by slug, optionally of one role."""
    query = select(Organisation).order_by(Organisation.slug)
    if role is not None:
        query = query.where(Organisation.role == role)
    return list(session.scalars(query))


def get_organisation(
    session: Session, organisation_id: uuid.UUID, *, lock: bool = False
) -> Organisation:
    """One organisation, or NotFoundError."""
    organisation = session.get(Organisation, organisation_id, with_for_update=lock)
    if organisation is None:
        raise NotFoundError("No such organisation.")
    return organisation


def get_organisation_by_slug(session: Session, slug: str) -> Organisation:
    """One organisation by its slug, or NotFoundError."""
    organisation = session.scalar(select(Organisation).where(Organisation.slug == slug))
    if organisation is None:
        raise NotFoundError(f'No organisation "{slug}".')
    return organisation


def update_organisation(
    session: Session,
    organisation_id: uuid.UUID,
    *,
    actor: str,
    name: str | _Unset = UNSET,
    reuser_category: str | _Unset | None = UNSET,
    resource_uri: str | _Unset | None = UNSET,
    webhook_url: str | _Unset | None = UNSET,
    suspended: bool | None = None,
) -> Organisation:
    """Change what the committee may change; the role never changes (its clients' scopes
    depend on it: create another organisation instead).

    Suspending is idempotent and keeps the first suspension time; the authorization server
    refuses tokens to a suspended organisation's clients.
    """
    organisation = get_organisation(session, organisation_id, lock=True)
    errors: dict[str, list[str]] = {}
    changed: dict[str, Any] = {}
    if name is not UNSET:
        clean = check_name(name, errors)
        if clean != organisation.name:
            changed["name"] = clean
    if reuser_category is not UNSET:
        _check_category(session, organisation.role, reuser_category, organisation.slug, errors)
        if reuser_category != organisation.reuser_category:
            changed["reuser_category"] = reuser_category
    if resource_uri is not UNSET:
        _check_resource_uri(session, resource_uri, errors, own=organisation.id)
        if resource_uri != organisation.resource_uri:
            changed["resource_uri"] = resource_uri
    if webhook_url is not UNSET:
        _check_webhook(webhook_url, errors)
        if webhook_url != organisation.webhook_url:
            changed["webhook_url"] = webhook_url
    if errors:
        raise InvalidInputError("The changes are not valid.", fields=errors)
    for key, value in changed.items():
        setattr(organisation, key, value)
    if changed:
        _flush_unique(session, "Another organisation already serves this resource URI.")
        audit.append(
            session,
            event="admin:organisation:update",
            actor=actor,
            detail={"organisation": organisation.slug, "changed": sorted(changed)},
        )
    if suspended is not None and suspended != (organisation.suspended_at is not None):
        organisation.suspended_at = utcnow() if suspended else None
        audit.append(
            session,
            event="admin:organisation:" + ("suspend" if suspended else "unsuspend"),
            actor=actor,
            detail={"organisation": organisation.slug},
        )
    return organisation


# --- the charter committee --------------------------------------------------------------


def add_committee_member(
    session: Session, email: str, *, note: str = "", actor: str = "cli"
) -> CommitteeMember:
    """Let the portal account with this e-mail use the admin pages. Idempotent;
    NotFoundError when no account has this address (the person signs up first)."""
    citizen = accounts.find_open(session, email)
    member = session.scalar(select(CommitteeMember).where(CommitteeMember.citizen_id == citizen.id))
    if member is not None:
        return member
    member = CommitteeMember(id=uuid.uuid4(), citizen_id=citizen.id, note=note)
    session.add(member)
    _flush_unique(session, "This account is already a committee member.")
    # The log names the member's account by its subject tag, never by e-mail.
    audit.append(
        session,
        event="admin:committee:add",
        actor=actor,
        subject_id=citizen.subject_id,
        detail={"member": str(member.id)},
    )
    return member


def remove_memberships(session: Session, citizen_id: uuid.UUID, *, actor: str) -> None:
    """This portal account no longer sits on the committee nor acts for an organisation (it
    was closed). Each removal is logged as its addition was, under no citizen: the account
    is going away."""
    roles: list[tuple[CommitteeMember | OrganisationMember, str]] = [
        (row, "admin:committee:remove")
        for row in session.scalars(
            select(CommitteeMember).where(CommitteeMember.citizen_id == citizen_id)
        )
    ]
    roles += [
        (row, "admin:member:remove")
        for row in session.scalars(
            select(OrganisationMember).where(OrganisationMember.citizen_id == citizen_id)
        )
    ]
    for member, event in roles:
        session.delete(member)
        audit.append(session, event=event, actor=actor, detail={"member": str(member.id)})


def get_committee_member(session: Session, citizen_id: uuid.UUID) -> CommitteeMember | None:
    """The membership of this portal account, or None."""
    return session.scalar(select(CommitteeMember).where(CommitteeMember.citizen_id == citizen_id))


def is_committee_member(session: Session, citizen_id: uuid.UUID) -> bool:
    """Whether this portal account may use the committee's admin pages."""
    return get_committee_member(session, citizen_id) is not None


# --- portal accounts acting for an organisation -----------------------------------------


def add_member(
    session: Session,
    email: str,
    organisation_slug: str,
    *,
    note: str = "",
    actor: str = "cli",
) -> OrganisationMember:
    """Let the portal account with this e-mail act for one organisation on its portal pages
    (an observatory's statistics). Idempotent.

    NotFoundError when no account has this address or no organisation this slug;
    ConflictError when the account already acts for another organisation (one per account,
    so that every page it sees belongs to one party); ForbiddenError for a suspended one.
    """
    citizen = accounts.find_open(session, email)
    organisation = get_organisation_by_slug(session, organisation_slug)
    if organisation.suspended_at is not None:
        raise ForbiddenError(
            f'The organisation "{organisation.slug}" is suspended: it gets no new members.',
            fields={"organisation": ["This organisation is suspended."]},
        )
    member = get_member(session, citizen.id)
    if member is not None:
        if member.organisation_id == organisation.id:
            return member
        raise ConflictError(
            "This account already acts for another organisation.",
            fields={"email": ["One organisation per account."]},
        )
    member = OrganisationMember(
        id=uuid.uuid4(), citizen_id=citizen.id, organisation_id=organisation.id, note=note
    )
    session.add(member)
    _flush_unique(session, "This account already acts for an organisation.")
    # The log names the member's account by its subject tag, never by e-mail.
    audit.append(
        session,
        event="admin:member:add",
        actor=actor,
        subject_id=citizen.subject_id,
        detail={"member": str(member.id), "organisation": organisation.slug},
    )
    return member


def get_member(session: Session, citizen_id: uuid.UUID) -> OrganisationMember | None:
    """The organisation membership of this portal account, or None."""
    return session.scalar(
        select(OrganisationMember).where(OrganisationMember.citizen_id == citizen_id)
    )


def member_requester(session: Session, citizen_id: uuid.UUID) -> Requester | None:
    """Who this portal account asks statistics for: its organisation as a release requester,
    with a client label of its own (`portal:<member id>`), or None when it acts for no
    organisation, one that receives no statistics, or a suspended one (whose clients get no
    token either). anonymize's views read it through `app.extensions` (it imports no broker).
    """
    found = session.execute(
        select(OrganisationMember, Organisation)
        .join(Organisation, Organisation.id == OrganisationMember.organisation_id)
        .where(OrganisationMember.citizen_id == citizen_id)
    ).first()
    if found is None:
        return None
    member, organisation = found
    if organisation.suspended_at is not None or organisation.role not in STATISTICS_ROLES:
        return None
    recipients = (organisation.slug, organisation.reuser_category)
    return Requester(
        organisation_id=organisation.id,
        client_id=f"portal:{member.id}",
        recipients=tuple(r for r in recipients if r is not None),
    )
