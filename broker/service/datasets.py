"""Holders' datasets: registration and changes with every rule checked, endpoint health, and
the pairing of citizens' accounts that holders send in.

Every refusal names its field by path (`schema.fields[2].min`), as charter errors do. A holder
only ever sees its own datasets' settings: another holder's dataset answers NotFound, like one
that does not exist. Changes are audited in the caller's transaction; nothing commits here.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib import error as urlerror
from urllib import request as urlrequest
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audit import service as audit
from broker.models import Dataset, DatasetAuth, FieldType, Health, Organisation, Role
from broker.service import outbound
from broker.service.organisations import LOOPBACK_HOSTS, SLUG, called_url_problem
from charter import service as charters
from common.clock import utcnow
from common.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from consent import links

MAX_SLUG, MAX_TITLE, MAX_DESCRIPTION, MAX_UNIT = 64, 200, 5000, 32
MAX_FIELDS = 100
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
NUMERIC = frozenset({FieldType.INTEGER, FieldType.NUMBER})
SUBJECT_TYPES = frozenset({FieldType.STRING, FieldType.INTEGER})
TIME_TYPES = frozenset({FieldType.DATE, FieldType.DATETIME})
FIELD_KEYS = frozenset({"name", "type", "unit", "personal", "sensitive", "min", "max"})
LANGUAGES = ("fr", "en")
# ISO 8601 durations (no fractions, no negative values), e.g. P1D, PT1H, P1W.
DURATION = re.compile(
    r"^P(?!\Z)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?\Z"
)
MIN_REFRESH, MAX_REFRESH = timedelta(minutes=5), timedelta(days=366)
_CAP_SECONDS = 10 * 366 * 86400
# Décret n° 2017-638: the licences the French public sector may use for its open data.
# The Licence Ouverte 2.0 (Etalab) is the expected one; the ODbL is the other one allowed.
ETALAB_2_0 = "https://www.etalab.gouv.fr/licence-ouverte-open-licence/"
OPEN_LICENCES: dict[str, str] = {
    ETALAB_2_0: "Licence Ouverte 2.0 (Etalab)",
    "https://www.etalab.gouv.fr/wp-content/uploads/2017/04/ETALAB-Licence-Ouverte-v2.0.pdf": (
        "Licence Ouverte 2.0 (Etalab)"
    ),
    "https://spdx.org/licenses/etalab-2.0.html": "Licence Ouverte 2.0 (Etalab)",
    "https://opendatacommons.org/licenses/odbl/1-0/": "Open Database License 1.0 (ODbL)",
    "https://spdx.org/licenses/ODbL-1.0.html": "Open Database License 1.0 (ODbL)",
}
SETTINGS = (
    "slug",
    "title",
    "description",
    "data_category",
    "schema",
    "endpoint_url",
    "auth",
    "refresh",
    "licence",
)

Errors = dict[str, list[str]]


# --- reading ----------------------------------------------------------------------------


def list_own(session: Session, holder_id: uuid.UUID) -> list[Dataset]:
    """A holder's datasets, by slug."""
    return list(
        session.scalars(
            select(Dataset).where(Dataset.holder_id == holder_id).order_by(Dataset.slug)
        )
    )


def get_own(session: Session, holder_id: uuid.UUID, dataset_id: uuid.UUID) -> Dataset:
    """One of this holder's datasets; NotFoundError for another holder's (no IDOR)."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.holder_id != holder_id:
        raise NotFoundError("No such dataset.")
    return dataset


def find_own(session: Session, holder_id: uuid.UUID, ref: str) -> Dataset | None:
    """One of this holder's datasets by id or slug, or None."""
    try:
        dataset_id = uuid.UUID(ref)
    except ValueError:
        return session.scalar(
            select(Dataset).where(Dataset.holder_id == holder_id, Dataset.slug == ref)
        )
    dataset = session.get(Dataset, dataset_id)
    return dataset if dataset is not None and dataset.holder_id == holder_id else None


def list_all(session: Session) -> list[Dataset]:
    """Every dataset, by holder and slug (the catalog, the committee's pages)."""
    return list(
        session.scalars(
            select(Dataset)
            .join(Organisation, Organisation.id == Dataset.holder_id)
            .order_by(Organisation.slug, Dataset.slug)
        )
    )


def settings_of(dataset: Dataset) -> dict[str, Any]:
    """A dataset's settings in the shape `register` takes (the base a change applies to)."""
    return {
        "slug": dataset.slug,
        "title": dict(dataset.title),
        "description": dict(dataset.description),
        "data_category": dataset.data_category,
        "schema": {
            "fields": [dict(f) for f in dataset.fields],
            "subject_field": dataset.subject_field,
            "time_field": dataset.time_field,
        },
        "endpoint_url": dataset.endpoint_url,
        "auth": dataset.auth.value,
        "refresh": dataset.refresh,
        "licence": dataset.licence,
    }


def licence_label(url: str | None) -> str | None:
    """The name of an open licence we accept, for pages."""
    return OPEN_LICENCES.get(url) if url else None


# --- checking ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Checked:
    """Settings that passed every rule, normalised for storage."""

    slug: str
    title: dict[str, str]
    description: dict[str, str]
    data_category: str
    fields: list[dict[str, Any]]
    subject_field: str | None
    time_field: str | None
    personal: bool
    endpoint_url: str
    auth: DatasetAuth
    refresh: str
    licence: str | None


def _text(value: object, path: str, limit: int, errors: Errors) -> dict[str, str]:
    if not isinstance(value, Mapping):
        errors[path] = ['A text in French and English: {"fr": …, "en": …}.']
        return {}
    out: dict[str, str] = {}
    for lang in LANGUAGES:
        text = value.get(lang)
        if not isinstance(text, str) or not text.strip():
            errors[f"{path}.{lang}"] = ["Required."]
        elif len(text.strip()) > limit:
            errors[f"{path}.{lang}"] = [f"At most {limit} characters."]
        else:
            out[lang] = text.strip()
    for extra in sorted(set(map(str, value)) - set(LANGUAGES)):
        errors[f"{path}.{extra}"] = ["Only fr and en."]
    return out


def _bound(value: object, path: str, errors: Errors) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        errors[path] = ["A finite number."]
        return None
    return float(value) if isinstance(value, float) else value


def _field(raw: object, path: str, errors: Errors) -> dict[str, Any] | None:
    """One schema field, normalised; its problems go to `errors` under `path`."""
    if not isinstance(raw, Mapping):
        errors[path] = ["A field: an object with name and type."]
        return None
    before = len(errors)
    name = raw.get("name")
    if not isinstance(name, str) or not FIELD_NAME.match(name):
        errors[f"{path}.name"] = [
            "A name of 1 to 64 characters among A-Z a-z 0-9 _, not starting with a digit."
        ]
    try:
        kind: FieldType | None = FieldType(str(raw.get("type")))
    except ValueError:
        kind = None
        errors[f"{path}.type"] = [f"One of: {', '.join(t.value for t in FieldType)}."]
    unit = raw.get("unit")
    if unit is not None and (not isinstance(unit, str) or not 0 < len(unit.strip()) <= MAX_UNIT):
        errors[f"{path}.unit"] = [f"A unit of 1 to {MAX_UNIT} characters (e.g. W, Wh, km)."]
    personal, sensitive = raw.get("personal", True), raw.get("sensitive", False)
    for key, flag in (("personal", personal), ("sensitive", sensitive)):
        if not isinstance(flag, bool):
            errors[f"{path}.{key}"] = ["true or false."]
    if sensitive is True and personal is False:
        errors[f"{path}.sensitive"] = ["Sensitive data (GDPR art. 9) is personal: mark it so."]
    low = _bound(raw.get("min"), f"{path}.min", errors)
    high = _bound(raw.get("max"), f"{path}.max", errors)
    if kind is not None and kind not in NUMERIC:
        for key in ("min", "max"):
            if raw.get(key) is not None:
                errors[f"{path}.{key}"] = ["Bounds are for integer and number fields only."]
    elif low is not None and high is not None and not low < high:
        errors[f"{path}.max"] = ["Must be greater than min."]
    for key in sorted(set(map(str, raw)) - FIELD_KEYS):
        errors[f"{path}.{key}"] = ["Unknown field."]
    if len(errors) > before:
        return None
    return {
        "name": name,
        "type": kind.value if kind else None,
        "unit": unit.strip() if isinstance(unit, str) else None,
        "personal": personal,
        "sensitive": sensitive,
        "min": low,
        "max": high,
    }


def _schema(
    raw: object, errors: Errors
) -> tuple[list[dict[str, Any]], str | None, str | None, bool | None]:
    """The fields, the subject and time fields, and whether any field is personal."""
    if not isinstance(raw, Mapping):
        errors["schema"] = ['An object: {"fields": […], "subject_field": …, "time_field": …}.']
        return [], None, None, None
    fields_raw = raw.get("fields")
    if not isinstance(fields_raw, list) or not 1 <= len(fields_raw) <= MAX_FIELDS:
        errors["schema.fields"] = [f"A list of 1 to {MAX_FIELDS} fields."]
        return [], None, None, None
    for key in sorted(set(map(str, raw)) - {"fields", "subject_field", "time_field"}):
        errors[f"schema.{key}"] = ["Unknown field."]
    before = len(errors)
    checked: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(fields_raw):
        path = f"schema.fields[{index}]"
        field = _field(item, path, errors)
        if field is None:
            continue
        if field["name"] in seen:
            errors[f"{path}.name"] = [f"Already the name of schema.fields[{seen[field['name']]}]."]
            continue
        seen[field["name"]] = index
        checked.append(field)
    if len(errors) > before:
        # Cross-field rules wait for valid fields; whether the data is personal is still
        # known, so that auth and licence are judged in the same answer.
        guess = any(
            not isinstance(f, Mapping) or f.get("personal", True) is not False for f in fields_raw
        )
        return [], None, None, guess
    by_name = {f["name"]: (i, f) for i, f in enumerate(checked)}
    personal = any(f["personal"] for f in checked)
    subject = raw.get("subject_field")
    if subject is not None and not isinstance(subject, str):
        errors["schema.subject_field"] = ["The name of a field."]
    elif subject is None:
        if personal:
            errors["schema.subject_field"] = [
                "Required for personal data: the field holding your identifier for the citizen "
                "(a meter number, a card number)."
            ]
    elif subject not in by_name:
        errors["schema.subject_field"] = [f'No field is named "{subject}".']
    else:
        index, field = by_name[subject]
        if not field["personal"]:
            errors[f"schema.fields[{index}].personal"] = [
                "The subject identifier is personal data: mark it personal (open data has no "
                "subject identifier)."
            ]
        elif FieldType(field["type"]) not in SUBJECT_TYPES:
            errors["schema.subject_field"] = ["The subject identifier is a string or an integer."]
    # Differential privacy clamps each citizen's values to bounds declared here, never taken
    # from the data (shared/DESIGN.md "Differential privacy").
    for index, field in enumerate(checked):
        if field["personal"] and FieldType(field["type"]) in NUMERIC and field["name"] != subject:
            for key in ("min", "max"):
                if field[key] is None:
                    errors[f"schema.fields[{index}].{key}"] = [
                        "Required for a numeric personal field: statistics clamp each "
                        "citizen's values to these bounds (differential privacy)."
                    ]
    time_field = raw.get("time_field")
    if time_field is not None:
        if not isinstance(time_field, str) or time_field not in by_name:
            errors["schema.time_field"] = [f'No field is named "{time_field}".']
        elif FieldType(by_name[time_field][1]["type"]) not in TIME_TYPES:
            errors["schema.time_field"] = ["The time field is a date or a datetime."]
    return checked, subject, time_field, personal


def refresh_interval(duration: str) -> timedelta | None:
    """An ISO 8601 duration as an approximate interval (a month as 30 days), or None."""
    match = DURATION.match(duration)
    if match is None:
        return None
    years, months, weeks, days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    days += 365 * years + 30 * months + 7 * weeks
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    # Capped: an absurd duration is merely "too long", never an overflow.
    return timedelta(seconds=min(total, _CAP_SECONDS))


def _check_refresh(value: object, errors: Errors) -> str:
    if not isinstance(value, str) or len(value) > 32:
        errors["refresh"] = ["An ISO 8601 duration, e.g. P1D (daily) or PT1H (hourly)."]
        return ""
    interval = refresh_interval(value.strip().upper())
    if interval is None:
        errors["refresh"] = [
            f'"{value}" is not an ISO 8601 duration; e.g. P1D (daily) or PT1H (hourly).'
        ]
    elif not MIN_REFRESH <= interval <= MAX_REFRESH:
        errors["refresh"] = ["From PT5M (5 minutes) to P1Y (a year)."]
    return value.strip().upper()


def _under(endpoint: str, resource_uri: str) -> bool:
    """Whether `endpoint` is the resource URI or below it (same origin, path prefix)."""
    base = resource_uri.rstrip("/")
    return endpoint == base or endpoint.startswith(base + "/")


def _check(session: Session, holder: Organisation, data: Mapping[str, Any]) -> _Checked:
    """Every rule on a dataset's settings; InvalidInputError names each bad field by path."""
    errors: Errors = {}
    slug = data.get("slug")
    if not isinstance(slug, str) or len(slug) > MAX_SLUG or not SLUG.match(slug):
        errors["slug"] = [f"A lowercase kebab-case id of at most {MAX_SLUG} characters."]
    title = _text(data.get("title"), "title", MAX_TITLE, errors)
    description = _text(data.get("description"), "description", MAX_DESCRIPTION, errors)
    category = data.get("data_category")
    charter = charters.current_or_none(session)
    if charter is None:
        errors["data_category"] = ["No charter is published yet: datasets wait for it."]
    elif not isinstance(category, str) or charter.doc.data_category(category) is None:
        known = ", ".join(c.id for c in charter.doc.data_categories)
        errors["data_category"] = [
            f"Not a data category of charter {charter.version}; must be one of: {known}."
        ]
    fields, subject, time_field, personal = _schema(data.get("schema"), errors)
    endpoint = data.get("endpoint_url")
    problem = called_url_problem(endpoint, what="endpoint URL", query=False)
    if problem:
        errors["endpoint_url"] = [problem]
    try:
        auth: DatasetAuth | None = DatasetAuth(str(data.get("auth")))
    except ValueError:
        auth = None
        errors["auth"] = [f"One of: {', '.join(a.value for a in DatasetAuth)}."]
    if auth is not None and personal is not None:
        _check_auth(holder, auth, personal, endpoint if not problem else None, errors)
    refresh = _check_refresh(data.get("refresh"), errors)
    licence = data.get("licence")
    if personal is False:
        if not licence:
            errors["licence"] = [
                "Required for open data (no personal field): the Licence Ouverte 2.0, "
                f"{ETALAB_2_0}, or the ODbL."
            ]
        elif licence not in OPEN_LICENCES:
            errors["licence"] = [
                f"Not a licence of décret 2017-638; use the Licence Ouverte 2.0 ({ETALAB_2_0}) "
                "or the ODbL (https://opendatacommons.org/licenses/odbl/1-0/)."
            ]
    elif personal and licence is not None:
        errors["licence"] = [
            "Personal data has no open licence: it is shared only under the charter, with "
            "each citizen's consent."
        ]
    if errors:
        raise InvalidInputError("The dataset is not valid.", fields=errors)
    # Checked above; said again for the type checker.
    assert auth is not None  # noqa: S101
    assert personal is not None  # noqa: S101
    assert isinstance(slug, str)  # noqa: S101
    assert isinstance(category, str)  # noqa: S101
    assert isinstance(endpoint, str)  # noqa: S101
    return _Checked(
        slug=slug,
        title=title,
        description=description,
        data_category=category,
        fields=fields,
        subject_field=subject,
        time_field=time_field,
        personal=personal,
        endpoint_url=endpoint,
        auth=auth,
        refresh=refresh,
        licence=licence if not personal else None,
    )


def _check_auth(
    holder: Organisation,
    auth: DatasetAuth,
    personal: bool,
    endpoint: str | None,
    errors: Errors,
) -> None:
    if personal and auth is not DatasetAuth.TIERS_TOKEN:
        errors["auth"] = ["Personal data is served only to Tiers' tokens: use tiers_token."]
    elif not personal and auth is not DatasetAuth.NONE:
        errors["auth"] = ["Open data is downloadable by anyone, without a token: use none."]
    elif auth is DatasetAuth.TIERS_TOKEN:
        if holder.resource_uri is None:
            errors["auth"] = [
                "Tiers' tokens name your registered resource URI as their audience (RFC 8707), "
                "and your organisation has none: ask the charter committee to register it."
            ]
        elif endpoint is not None and not _under(endpoint, holder.resource_uri):
            # Tokens for this holder must only ever be sent to this holder's own service.
            errors["endpoint_url"] = [
                f"Must be at or below your registered resource URI {holder.resource_uri}."
            ]


# --- writing ----------------------------------------------------------------------------


def _holder(session: Session, holder_id: uuid.UUID) -> Organisation:
    holder = session.get(Organisation, holder_id)
    if holder is None or holder.role is not Role.HOLDER:
        raise ForbiddenError("Only data holders register datasets.")
    if holder.suspended_at is not None:
        raise ForbiddenError("This organisation is suspended.")
    return holder


def _flush_unique(session: Session, slug: str) -> None:
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent registration of the same slug won
        raise ConflictError(
            f'You already have a dataset "{slug}".',
            fields={"slug": ["You already have a dataset with this slug."]},
        ) from exc


def _slug_taken(session: Session, holder_id: uuid.UUID, slug: str, own: uuid.UUID | None) -> None:
    taken = session.scalar(
        select(Dataset.id).where(Dataset.holder_id == holder_id, Dataset.slug == slug)
    )
    if taken is not None and taken != own:
        raise ConflictError(
            f'You already have a dataset "{slug}".',
            fields={"slug": ["You already have a dataset with this slug."]},
        )


def _apply(dataset: Dataset, checked: _Checked) -> list[str]:
    """Copy checked settings onto the row; returns the names of the columns that changed."""
    changed = []
    for name, value in vars(checked).items():
        if getattr(dataset, name, None) != value:
            setattr(dataset, name, value)
            changed.append(name)
    return changed


def register(
    session: Session, *, holder_id: uuid.UUID, settings: Mapping[str, Any], actor: str
) -> Dataset:
    """Register a dataset of this holder.

    InvalidInputError names every bad field by path; ConflictError on `slug` when the holder
    already has a dataset with it; ForbiddenError for an organisation that is not a holder.
    """
    holder = _holder(session, holder_id)
    checked = _check(session, holder, settings)
    _slug_taken(session, holder.id, checked.slug, None)
    now = utcnow()
    dataset = Dataset(
        id=uuid.uuid4(),
        holder_id=holder.id,
        created_at=now,
        updated_at=now,
        health=Health.UNKNOWN,
        health_checked_at=None,
        health_detail=None,
    )
    _apply(dataset, checked)
    session.add(dataset)
    _flush_unique(session, checked.slug)
    audit.append(
        session,
        event="broker:dataset:register",
        actor=actor,
        detail={
            "dataset": str(dataset.id),
            "holder": holder.slug,
            "slug": dataset.slug,
            "data_category": dataset.data_category,
            "personal": dataset.personal,
        },
    )
    return dataset


def update(
    session: Session,
    *,
    holder_id: uuid.UUID,
    dataset_id: uuid.UUID,
    changes: Mapping[str, Any],
    actor: str,
) -> Dataset:
    """Change some settings of one of this holder's datasets; the result is checked whole.

    `schema`, `title` and `description` are replaced as a whole when sent. A new endpoint's
    health is unknown until the next probe. NotFoundError for another holder's dataset.
    """
    holder = _holder(session, holder_id)
    dataset = get_own(session, holder.id, dataset_id)
    merged = {**settings_of(dataset), **{k: v for k, v in changes.items() if k in SETTINGS}}
    checked = _check(session, holder, merged)
    _slug_taken(session, holder.id, checked.slug, dataset.id)
    endpoint_before = dataset.endpoint_url
    changed = _apply(dataset, checked)
    if not changed:
        return dataset
    dataset.updated_at = utcnow()
    if dataset.endpoint_url != endpoint_before:
        dataset.health = Health.UNKNOWN  # a new service: unknown until the next probe
        dataset.health_checked_at = dataset.health_detail = None
    _flush_unique(session, checked.slug)
    audit.append(
        session,
        event="broker:dataset:update",
        actor=actor,
        detail={"dataset": str(dataset.id), "holder": holder.slug, "changed": sorted(changed)},
    )
    return dataset


# --- health -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    health: Health
    detail: str
    checked_at: datetime


def health_url(endpoint_url: str) -> str:
    """`{service}/health`, the service being the endpoint's origin (docs/holder-protocol.md)."""
    parts = urlsplit(endpoint_url)
    return f"{parts.scheme}://{parts.netloc}/health"


def probe_targets(session: Session) -> dict[str, list[uuid.UUID]]:
    """Each service to probe, with the datasets it serves (one probe per service)."""
    targets: dict[str, list[uuid.UUID]] = {}
    for dataset_id, endpoint in session.execute(select(Dataset.id, Dataset.endpoint_url)):
        targets.setdefault(health_url(endpoint), []).append(dataset_id)
    return targets


class _NoRedirect(urlrequest.HTTPRedirectHandler):
    """A health check answers itself: a redirect is an answer, not a hint to follow."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def probe(url: str, *, timeout: float, rules: outbound.Policy) -> ProbeResult:
    """GET `url` once: up iff 200 with {"status": "ok"}. Never raises; reads at most 4 KiB."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):  # registration allows nothing else
        return ProbeResult(Health.DOWN, "unsupported scheme", utcnow())
    if refused := outbound.connection_problem(url, rules):
        return ProbeResult(Health.DOWN, refused, utcnow())
    handlers: list[urlrequest.BaseHandler] = [_NoRedirect()]
    if parts.hostname in LOOPBACK_HOSTS:
        handlers.append(urlrequest.ProxyHandler({}))  # loopback never goes through a proxy
    opener = urlrequest.build_opener(*handlers)
    request = urlrequest.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with opener.open(request, timeout=timeout) as response:
            status, body = response.status, response.read(4096)
    except urlerror.HTTPError as exc:
        return ProbeResult(Health.DOWN, f"HTTP {exc.code}", utcnow())
    except (urlerror.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        kind = "timeout" if isinstance(reason, TimeoutError) else type(reason).__name__
        return ProbeResult(Health.DOWN, f"unreachable ({kind})", utcnow())
    if status != 200:
        return ProbeResult(Health.DOWN, f"HTTP {status}", utcnow())
    try:
        ok = json.loads(body).get("status") == "ok"
    except (ValueError, AttributeError):
        ok = False
    if not ok:
        return ProbeResult(Health.DOWN, 'HTTP 200 without {"status": "ok"}', utcnow())
    return ProbeResult(Health.UP, "HTTP 200", utcnow())


def probe_all(
    urls: Iterable[str], *, timeout: float, rules: outbound.Policy, workers: int = 8
) -> dict[str, ProbeResult]:
    """Probe services concurrently (no database here: never hold a transaction over I/O)."""
    urls = list(urls)
    if not urls:
        return {}
    with ThreadPoolExecutor(max_workers=min(workers, len(urls))) as pool:
        results = pool.map(lambda url: probe(url, timeout=timeout, rules=rules), urls)
        return dict(zip(urls, results, strict=True))


def record_health(
    session: Session,
    targets: Mapping[str, Sequence[uuid.UUID]],
    results: Mapping[str, ProbeResult],
) -> int:
    """Store each probe's result on the datasets it serves; returns how many were updated.

    Safe to run twice; a dataset deleted or moved to another endpoint meanwhile is skipped.
    """
    updated = 0
    for url, dataset_ids in targets.items():
        result = results.get(url)
        if result is None:
            continue
        for dataset_id in dataset_ids:
            dataset = session.get(Dataset, dataset_id)
            if dataset is None or health_url(dataset.endpoint_url) != url:
                continue
            dataset.health = result.health
            dataset.health_checked_at = result.checked_at
            dataset.health_detail = result.detail[:200]
            updated += 1
    return updated


# --- holders, as the consent package sees them ------------------------------------------


def as_holder(organisation: Organisation) -> links.Holder:
    return links.Holder(organisation.id, organisation.slug, organisation.name)


def holder_directory(session: Session) -> list[links.Holder]:
    """The holders a citizen may link an account at: active holder organisations, by name."""
    found = session.scalars(
        select(Organisation)
        .where(Organisation.role == Role.HOLDER, Organisation.suspended_at.is_(None))
        .order_by(Organisation.name)
    )
    return [as_holder(o) for o in found]


def pair(
    session: Session,
    *,
    holder_id: uuid.UUID,
    code: str,
    subject: str,
    dataset: str | None,
    actor: str,
) -> links.Redemption:
    """A holder sends a citizen's pairing code with its identifier for them (consent.links).

    `dataset`, when sent, is one of this holder's datasets (id or slug), else
    InvalidInputError on `dataset`.
    """
    holder = _holder(session, holder_id)
    dataset_id = None
    if dataset is not None:
        found = find_own(session, holder.id, dataset)
        if found is None:
            raise InvalidInputError(
                "No such dataset.", fields={"dataset": ["Not one of your datasets."]}
            )
        dataset_id = found.id
    return links.redeem(
        session,
        holder=as_holder(holder),
        code=code,
        subject_ref=subject,
        dataset_id=dataset_id,
        actor=actor,
    )
