"""Demo territory: the demo charter, a few citizens with consents, the organisations of the
demo, and the demo reuser's client (EcoWatt Conseil, examples/reuser). Idempotent.

The reuser's private key is generated once and kept in the instance folder (mode 0600); only
its public JWK is registered with Tiers (RFC 7523 `private_key_jwt`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.models import AuthMethod, OAuthClient, Organisation, Role
from broker.service import clients, organisations, publish_charter
from charter.document import terms_hash
from common import jose
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
}
DEMO_COMMITTEE_MEMBER = "camille@demo.tiers.local"
ACTOR = "demo"

# slug, name, role, reuser category. The holder and the observatory get their clients with
# the holders' issue; the demo reuser's client is made below.
DEMO_ORGANISATIONS: list[tuple[str, str, Role, str | None]] = [
    ("comite-charte-brevanne", "Comité de la charte du Pays de Brévanne", Role.COMMITTEE, None),
    ("ecowatt-conseil", "EcoWatt Conseil", Role.REUSER, "company"),
    (
        "observatoire-energie-brevanne",
        "Observatoire de l'énergie de Brévanne",
        Role.OBSERVATORY,
        "public_service",
    ),
    ("brevanne-reseaux", "Brévanne Réseaux", Role.HOLDER, None),
]

REUSER_SLUG = "ecowatt-conseil"  # the charter names it for purpose energy-coaching
REUSER_CLIENT_NAME = "EcoWatt — coaching"
DEFAULT_REUSER_URL = "http://127.0.0.1:5001"
REUSER_KEY_FILE = "demo-reuser-key.pem"
REUSER_CREDENTIALS_FILE = "demo-reuser.json"


def seed(
    charter_path: Path, *, reuser_url: str | None = None, instance_dir: Path | None = None
) -> Iterator[str]:
    """Publish the demo charter, create the demo citizens, organisations and the demo
    reuser's client, and write the reuser's credentials file; yields what it did.

    `reuser_url` is where the demo reuser runs (its redirect URI is `<reuser_url>/callback`;
    default: $TIERS_DEMO_REUSER_URL, else http://127.0.0.1:5001); `instance_dir` is where its
    key and credentials go (default: the app's instance folder).
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
    yield from _reuser_client(
        reuser_url or os.environ.get("TIERS_DEMO_REUSER_URL") or DEFAULT_REUSER_URL,
        instance_dir or Path(current_app.instance_path),
    )


def _organisation(session: Session, slug: str, name: str, role: Role, category: str | None) -> str:
    if session.scalar(select(Organisation.id).where(Organisation.slug == slug)) is not None:
        return f"organisation {slug} already exists"
    organisations.create_organisation(
        session, slug=slug, name=name, role=role, reuser_category=category, actor=ACTOR
    )
    return f"organisation {slug} ({role.value}) created"


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
