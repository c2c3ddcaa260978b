"""Demo territory: the demo charter, a few citizens with consents, the organisations of the
demo, the demo reuser's clients (EcoWatt Conseil, examples/reuser), and the datasets of the
demo holders (examples/holders) read from their own `GET /datasets`. Idempotent.

The reuser's private key is generated once and kept in the instance folder (mode 0600); only
its public JWK is registered with Tiers (RFC 7523 `private_key_jwt`). Its API client's secret
(client_credentials, to file access requests) is written there too, once, mode 0600, and so is
that of each holder with personal data (to redeem citizens' pairing codes).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib import request as urlrequest
from urllib.error import URLError

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.models import AuthMethod, Dataset, OAuthClient, Organisation, Role
from broker.service import access, clients, datasets, organisations, publish_charter
from charter import service as charters
from charter.document import terms_hash
from common import jose
from common.clock import utcnow
from common.db import unit_of_work
from common.settings import setting
from consent import accounts
from consent import service as consents
from consent.models import Citizen

DEMO_PASSWORD = "demo-tiers-2026"  # noqa: S105 (published on purpose: demo accounts only)
DEMO_CITIZENS = {
    "camille@demo.tiers.local": ["energy-coaching", "energy-observatory"],
    "yanis@demo.tiers.local": ["mobility-planning", "carbon-aggregator"],
    "lea@demo.tiers.local": [],
    "observatoire@demo.tiers.local": [],
}
DEMO_COMMITTEE_MEMBER = "camille@demo.tiers.local"
# The observatory's portal account: it reads the observatory's statistics (issue #6).
DEMO_OBSERVATORY_MEMBER = "observatoire@demo.tiers.local"
OBSERVATORY_SLUG = "observatoire-energie-brevanne"
OBSERVATORY_PURPOSE = "energy-observatory"
OBSERVATORY_GRANT_DAYS = 365
ACTOR = "demo"

# slug, name, role, reuser category. The demo reuser's clients and the holders' API clients
# (PAIRING_HOLDERS) are made below.
DEMO_ORGANISATIONS: list[tuple[str, str, Role, str | None]] = [
    ("comite-charte-brevanne", "Comité de la charte du Pays de Brévanne", Role.COMMITTEE, None),
    ("ecowatt-conseil", "EcoWatt Conseil", Role.REUSER, "company"),
    (
        OBSERVATORY_SLUG,
        "Observatoire de l'énergie de Brévanne",
        Role.OBSERVATORY,
        "public_service",
    ),
    ("brevanne-reseaux", "Brévanne Réseaux", Role.HOLDER, None),
    ("brevanne-gaz", "Brévanne Gaz Distribution", Role.HOLDER, None),
    ("brevanne-mobilites", "Brévanne Mobilités", Role.HOLDER, None),
    ("ville-de-brevanne", "Ville de Brévanne", Role.HOLDER, None),
]

# Each demo holder (examples/holders, named in its GET /datasets) and its organisation here.
DEMO_HOLDERS = {
    "electricity": "brevanne-reseaux",
    "gas": "brevanne-gaz",
    "transit": "brevanne-mobilites",
    "buildings": "ville-de-brevanne",
}
DEFAULT_HOLDER_URLS = tuple(f"http://127.0.0.1:{5101 + i}" for i in range(len(DEMO_HOLDERS)))
HOLDER_WAIT = 15.0  # seconds: `make demo` starts the holders just before the seed
REUSER_API_CLIENT_NAME = "EcoWatt — API"
REUSER_API_FILE = "demo-reuser-api.json"
# The holders with personal data, whose citizens pair their accounts (the city's building
# sensors are open data: nobody to pair), each with an API client to redeem pairing codes.
PAIRING_HOLDERS = ("brevanne-reseaux", "brevanne-gaz", "brevanne-mobilites")
HOLDER_API_CLIENT_NAME = "Appairage — API"
HOLDER_API_SCOPE = "datasets:write"  # what `POST /api/v1/pairings` asks

REUSER_SLUG = "ecowatt-conseil"  # the charter names it for purpose energy-coaching
REUSER_CLIENT_NAME = "EcoWatt — coaching"
DEFAULT_REUSER_URL = "http://127.0.0.1:5001"
REUSER_KEY_FILE = "demo-reuser-key.pem"
REUSER_CREDENTIALS_FILE = "demo-reuser.json"


def seed(
    charter_path: Path,
    *,
    reuser_url: str | None = None,
    instance_dir: Path | None = None,
    holder_urls: Sequence[str] | None = None,
    wait: float | None = None,
) -> Iterator[str]:
    """Publish the demo charter, create the demo citizens, organisations, the demo
    reuser's clients and the pairing holders' API clients, write their credentials files, and
    register the datasets of the demo holders that answer; yields what it did.

    `reuser_url` is where the demo reuser runs (its redirect URI is `<reuser_url>/callback`;
    default: $TIERS_DEMO_REUSER_URL, else http://127.0.0.1:5001); `instance_dir` is where its
    key and credentials go (default: the app's instance folder); `holder_urls` are the demo
    holders' base URLs (default: $TIERS_DEMO_HOLDERS, space-separated, else ports 5101-5104),
    each waited for up to `wait` seconds (default: HOLDER_WAIT when the URLs are given, none
    for the default ones), then skipped with a line saying so.
    """
    with unit_of_work() as session:
        loaded, new = publish_charter(
            session, charter_path.read_text(encoding="utf-8"), actor=ACTOR
        )
    yield f"charter {loaded.version} {'published' if new else 'already published'}"
    for email, wanted in DEMO_CITIZENS.items():
        with unit_of_work() as session:
            if session.scalar(select(Citizen.id).where(Citizen.email == email)):
                yield f"citizen {email} already exists"
                continue
            citizen = accounts.sign_up(session, email=email, password=DEMO_PASSWORD)
            for purpose_id in wanted:
                purpose = loaded.require_purpose(purpose_id)
                consents.give(
                    session,
                    consents.GiveConsent(
                        subject_id=citizen.subject_id,
                        purpose_id=purpose.id,
                        terms_hash=terms_hash(purpose),
                        recipient_id=purpose.recipient_ids[0],
                        method="demo",
                    ),
                )
        yield f"citizen {email} created with {len(wanted)} consent(s)"
    with unit_of_work() as session:
        organisations.add_committee_member(session, DEMO_COMMITTEE_MEMBER, note="demo", actor=ACTOR)
    yield f"{DEMO_COMMITTEE_MEMBER} is a committee member"
    for slug, name, role, category in DEMO_ORGANISATIONS:
        with unit_of_work() as session:
            yield _organisation(session, slug, name, role, category)
    instance = instance_dir or Path(current_app.instance_path)
    yield from _reuser_client(
        reuser_url or os.environ.get("TIERS_DEMO_REUSER_URL") or DEFAULT_REUSER_URL, instance
    )
    yield from _api_client(
        instance,
        slug=REUSER_SLUG,
        name=REUSER_API_CLIENT_NAME,
        scope="access:request",
        file_name=REUSER_API_FILE,
    )
    for slug in PAIRING_HOLDERS:
        yield from _api_client(
            instance,
            slug=slug,
            name=HOLDER_API_CLIENT_NAME,
            scope=HOLDER_API_SCOPE,
            file_name=holder_api_file(slug),
        )
    with unit_of_work() as session:
        yield _observatory_member(session)
    configured = holder_urls if holder_urls is not None else os.environ.get("TIERS_DEMO_HOLDERS")
    urls = _holder_urls_from_env() if holder_urls is None else list(holder_urls)
    yield from register_holders(
        urls, wait=wait if wait is not None else (HOLDER_WAIT if configured else 0.0)
    )
    with unit_of_work() as session:
        yield _observatory_grant(session)


def _organisation(session: Session, slug: str, name: str, role: Role, category: str | None) -> str:
    if session.scalar(select(Organisation.id).where(Organisation.slug == slug)) is not None:
        return f"organisation {slug} already exists"
    organisations.create_organisation(
        session, slug=slug, name=name, role=role, reuser_category=category, actor=ACTOR
    )
    return f"organisation {slug} ({role.value}) created"


def _observatory_member(session: Session) -> str:
    """The demo observatory's portal account, so that its statistics pages can be shown."""
    organisations.add_member(
        session, DEMO_OBSERVATORY_MEMBER, OBSERVATORY_SLUG, note="demo", actor=ACTOR
    )
    return f"{DEMO_OBSERVATORY_MEMBER} acts for {OBSERVATORY_SLUG}"


def _observatory_grant(session: Session) -> str:
    """An aggregate grant for the energy observatory over the registered personal energy
    datasets the purpose covers, filed as any observatory would (the charter approves it
    alone); kept while an active one covers the same datasets."""
    observatory = organisations.get_organisation_by_slug(session, OBSERVATORY_SLUG)
    purpose = charters.current(session).doc.purpose(OBSERVATORY_PURPOSE)
    if purpose is None:
        return f"no purpose {OBSERVATORY_PURPOSE} in the charter: no observatory grant"
    wanted = sorted(
        str(d.id)
        for d in session.scalars(select(Dataset).where(Dataset.personal.is_(True)))
        if d.data_category in purpose.data_categories
    )
    if not wanted:
        return "no energy dataset registered yet: no observatory grant (start the holders)"
    for grant in access.own_grants(session, observatory.id):
        if (
            grant.purpose_id == OBSERVATORY_PURPOSE
            and grant.mode == "aggregate"
            and access.grant_state(grant).usable
            and set(wanted) <= set(grant.dataset_ids)
        ):
            return f"aggregate grant {grant.id} of {OBSERVATORY_SLUG} already exists"
    filed = access.file_request(
        session,
        organisation_id=observatory.id,
        client_pk=None,
        data={
            "purpose": OBSERVATORY_PURPOSE,
            "mode": "aggregate",
            "datasets": wanted,
            "justification": "Statistiques de consommation par quartier (démonstration).",
            "period_end": utcnow() + timedelta(days=OBSERVATORY_GRANT_DAYS),
        },
        actor=ACTOR,
    )
    return f"aggregate access request of {OBSERVATORY_SLUG}: {filed.status.value}"


def _reuser_client(reuser_url: str, instance_dir: Path) -> Iterator[str]:
    """The demo reuser's private_key_jwt + DPoP client, kept while its key and redirect URI
    still match; otherwise the old one is revoked and a new one registered."""
    redirect_uri = reuser_url.rstrip("/") + "/callback"
    key_path = instance_dir / REUSER_KEY_FILE
    private, created = _reuser_key(key_path)
    yield f"reuser key {key_path} {'generated' if created else 'already exists'}"
    public = public_jwk(private)
    with unit_of_work() as session:
        organisation = organisations.get_organisation_by_slug(session, REUSER_SLUG)
        client = _matching_client(
            session, organisation, kid=public["kid"], redirect_uri=redirect_uri
        )
        if client is not None:
            line = f"client {client.client_id} of {REUSER_SLUG} already exists"
        else:
            client, _ = clients.create_client(
                session,
                organisation_id=organisation.id,
                name=REUSER_CLIENT_NAME,
                auth_method=AuthMethod.PRIVATE_KEY_JWT,
                redirect_uris=[redirect_uri],
                grant_types=["authorization_code", "refresh_token"],
                scope="consent:read",
                jwks={"keys": [public]},
                dpop_bound=True,
                actor=ACTOR,
            )
            line = f"client {client.client_id} of {REUSER_SLUG} registered"
        client_id = client.client_id
        issuer = str(setting("ISSUER"))
    yield line
    credentials = {
        "client_id": client_id,
        "organisation": REUSER_SLUG,
        "private_key_path": str(key_path.resolve()),
        "kid": public["kid"],
        "redirect_uri": redirect_uri,
        "issuer": issuer,
    }
    path = instance_dir / REUSER_CREDENTIALS_FILE
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(credentials, indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)  # atomic: a reuser starting now never reads half a file
    yield f"reuser credentials written to {path}"


def _matching_client(
    session: Session, organisation: Organisation, *, kid: str, redirect_uri: str
) -> OAuthClient | None:
    """The demo client still usable as is; stale ones (another key or redirect URI) are
    revoked so that only one demo client stays in force."""
    found: OAuthClient | None = None
    for client in clients.list_clients(session, organisation.id, include_revoked=False):
        if client.name != REUSER_CLIENT_NAME:
            continue
        kids = {k.get("kid") for k in (client.jwks or {}).get("keys", [])}
        if found is None and kid in kids and client.redirect_uris == [redirect_uri]:
            found = client
        else:
            clients.revoke_client(session, client_id=client.client_id, actor=ACTOR)
    return found


def _reuser_key(path: Path) -> tuple[ec.EllipticCurvePrivateKey, bool]:
    """The reuser's P-256 key from `path`, generated (mode 0600) when the file is missing."""
    if path.exists():
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey) or not isinstance(
            loaded.curve, ec.SECP256R1
        ):
            raise ValueError(f"{path} is not an EC P-256 private key: delete it to start afresh")
        return loaded, False
    path.parent.mkdir(parents=True, exist_ok=True)
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL and 0600 from the start: the key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return private, True


def public_jwk(private: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    """The public JWK of `private`, with its RFC 7638 thumbprint as `kid`."""
    full = jwt.algorithms.ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk: dict[str, Any] = {k: full[k] for k in ("kty", "crv", "x", "y")}
    return {**jwk, "kid": jose.thumbprint(jwk), "use": "sig", "alg": "ES256"}


def holder_api_file(slug: str) -> str:
    """The name, in the instance folder, of the demo holder `slug`'s API credentials."""
    return f"demo-holder-{slug}-api.json"


def _api_client(
    instance_dir: Path, *, slug: str, name: str, scope: str, file_name: str
) -> Iterator[str]:
    """The confidential API client `name` of organisation `slug` (client_secret_basic,
    client_credentials, `scope`): EcoWatt's to file access requests with curl, each holder's
    to redeem pairing codes. Its secret is written once to `file_name`, mode 0600, and the
    client is registered again (the older one revoked) only when that file is lost."""
    path = instance_dir / file_name
    saved = _read_json(path)
    with unit_of_work() as session:
        organisation = organisations.get_organisation_by_slug(session, slug)
        kept = None
        for client in clients.list_clients(session, organisation.id, include_revoked=False):
            if client.name != name:
                continue
            if kept is None and saved and saved.get("client_id") == client.client_id:
                kept = client
            else:
                clients.revoke_client(session, client_id=client.client_id, actor=ACTOR)
        if kept is not None:
            yield f"API client {kept.client_id} of {slug} already exists"
            return
        client, secret = clients.create_client(
            session,
            organisation_id=organisation.id,
            name=name,
            auth_method=AuthMethod.CLIENT_SECRET_BASIC,
            grant_types=["client_credentials"],
            scope=scope,
            actor=ACTOR,
        )
        credentials = {"client_id": client.client_id, "client_secret": secret}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never world-readable
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(credentials, indent=2) + "\n")
    temporary.replace(path)
    yield f"API client {credentials['client_id']} of {slug} registered; secret in {path}"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


# --- the demo holders' datasets ----------------------------------------------------------


def _holder_urls_from_env() -> list[str]:
    given = os.environ.get("TIERS_DEMO_HOLDERS", "").split()
    return given or list(DEFAULT_HOLDER_URLS)


def read_json(url: str, *, wait: float = 0.0) -> Any | None:
    """The JSON document at `url` (a demo service), or None when it does not answer with one
    within `wait` seconds (tried again every quarter second)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            # Only the configured localhost demo URLs are read (S310: no file:// here).
            with urlrequest.urlopen(url, timeout=10) as answer:  # noqa: S310
                return json.loads(answer.read())
        except (URLError, OSError, ValueError):
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.25)


def describe_holder(url: str, *, wait: float = 0.0) -> dict[str, Any] | None:
    """What the holder at `url` says of itself (`GET {url}/datasets`), or None when it does
    not answer within `wait` seconds."""
    described = read_json(f"{url.rstrip('/')}/datasets", wait=wait)
    return described if isinstance(described, dict) else None


def dataset_settings(
    holder_name: str, base_url: str, described: Mapping[str, Any]
) -> dict[str, Any]:
    """A dataset as the holder describes it, in the shape `datasets.register` takes: the
    endpoint is `{base}/datasets/{id}` (the gateway reads `{endpoint}/records`); personal
    data is served to Tiers' tokens only, open data without a token under its licence."""
    personal = bool(described.get("personal", True))
    fields = []
    for field in described["fields"]:
        fields.append(
            {
                "name": field["name"],
                "type": field["type"],
                "unit": field.get("unit"),
                "personal": bool(field.get("personal", personal)) and personal,
                "sensitive": bool(field.get("sensitive", False)) and personal,
                "min": field.get("minimum"),
                "max": field.get("maximum"),
            }
        )
    title = dict(described["title"])
    return {
        "slug": f"{holder_name}-{described['id']}".replace("_", "-"),
        "title": title,
        "description": {
            "fr": f"{title['fr']} (fournisseur de démonstration « {holder_name} »).",
            "en": f"{title['en']} (demo holder “{holder_name}”).",
        },
        "data_category": described["data_category"],
        "schema": {
            "fields": fields,
            # Open data has no subject identifier (an identifier of a building is not one).
            "subject_field": described.get("subject_field") if personal else None,
            "time_field": described.get("time_field"),
        },
        "endpoint_url": f"{base_url.rstrip('/')}/datasets/{described['id']}",
        "auth": "tiers_token" if personal else "none",
        "refresh": described.get("refresh") or "P1D",
        "licence": None if personal else described.get("licence"),
    }


def register_holders(urls: Sequence[str], *, wait: float = HOLDER_WAIT) -> Iterator[str]:
    """Register the datasets of each demo holder that answers at one of `urls`, under its
    organisation, with the holder's base URL as its resource URI (the audience of Tiers'
    tokens) and its webhook. Idempotent: what is already registered as described is kept,
    what changed (another port) is updated."""
    for url in urls:
        described = describe_holder(url, wait=wait)
        if described is None:
            yield f"holder {url} does not answer: its datasets are not registered (start it, "
            yield "  e.g. `python -m examples.holders all`, then run `tiers demo-seed` again)"
            continue
        name = str(described.get("holder"))
        slug = DEMO_HOLDERS.get(name)
        if slug is None:
            yield f"holder {url} is {name!r}, not a demo holder: skipped"
            continue
        base = url.rstrip("/")
        resource_uri = str(described.get("resource_uri") or base).rstrip("/")
        with unit_of_work() as session:
            holder = organisations.get_organisation_by_slug(session, slug)
            hook = described.get("webhook_url")
            if holder.resource_uri != resource_uri or holder.webhook_url != hook:
                organisations.update_organisation(
                    session, holder.id, actor=ACTOR, resource_uri=resource_uri, webhook_url=hook
                )
                yield f"organisation {slug}: resource URI {resource_uri}"
        for item in described.get("datasets", []):
            settings = dataset_settings(name, base, item)
            with unit_of_work() as session:
                yield _register_dataset(session, slug, settings)


def _register_dataset(session: Session, holder_slug: str, settings: Mapping[str, Any]) -> str:
    holder = organisations.get_organisation_by_slug(session, holder_slug)
    found = session.scalar(
        select(Dataset).where(Dataset.holder_id == holder.id, Dataset.slug == settings["slug"])
    )
    if found is None:
        dataset = datasets.register(session, holder_id=holder.id, settings=settings, actor=ACTOR)
        return f"dataset {holder_slug}/{dataset.slug} registered ({dataset.id})"
    current = datasets.settings_of(found)
    changes = {k: v for k, v in settings.items() if k != "slug" and current.get(k) != v}
    if not changes:
        return f"dataset {holder_slug}/{found.slug} already registered ({found.id})"
    datasets.update(session, holder_id=holder.id, dataset_id=found.id, changes=changes, actor=ACTOR)
    return f"dataset {holder_slug}/{found.slug} updated: {', '.join(sorted(changes))}"
