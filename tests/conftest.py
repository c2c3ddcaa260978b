"""Fixtures: the schema from migrations once, one outer transaction per test, eager Celery.

TIERS_TEST_DATABASE_URL picks the database (PostgreSQL in CI's second run); the default is a
SQLite file, the embedded default.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.orm import Session, sessionmaker

_INSTANCE = tempfile.mkdtemp(prefix="tiers-test-instance-")
os.environ["TIERS_INSTANCE"] = _INSTANCE  # nothing a test does lands in the checkout
if not os.environ.get("TIERS_SYSTEM"):
    os.environ.pop("CELERY_BROKER_URL", None)  # the fast tier is the embedded default: eager

from broker.app import create_app  # noqa: E402
from broker.config import celery_settings, defaults  # noqa: E402
from charter import service as charters  # noqa: E402
from common import migrations, tasks  # noqa: E402
from common.db import make_engine  # noqa: E402
from consent import accounts  # noqa: E402

# Argon2id at its production cost (64 MiB, 3 passes) takes 0.1 to 1 s a hash on a CI machine,
# and the suite signs up and signs in hundreds of citizens. Tests hash with the same algorithm
# at the lowest cost; tests/consent/test_password_cost.py checks the production parameters.
PRODUCTION_HASHER = accounts._hasher
accounts._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
accounts._DUMMY_HASH = accounts._hasher.hash("a password nobody has")

ROOT = Path(__file__).resolve().parent.parent
CHARTER = ROOT / "examples" / "charter.yaml"
CHARTER_V2 = ROOT / "examples" / "charter-v2.yaml"
ISSUER = "http://tiers.test"
PASSWORD = "correct horse battery staple"


def database_url() -> str:
    return os.environ.get("TIERS_TEST_DATABASE_URL") or f"sqlite:///{_INSTANCE}/test.sqlite"


def settings(**overrides: Any) -> dict[str, Any]:
    """The settings every test app gets: the embedded default, with a fixed secret."""
    return {
        **defaults(),
        "TESTING": True,
        "SECRET_KEY": "test-secret-key-not-for-production",
        "DATABASE_URL": database_url(),
        "KEYS_DIR": str(Path(_INSTANCE) / "keys"),
        "ISSUER": ISSUER,
        "CELERY": celery_settings(None),
        **overrides,
    }


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    engine = make_engine(database_url())
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:  # a clean schema: every run starts from nothing
            connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    with engine.begin() as connection:
        migrations.upgrade(connection)  # alembic upgrade head, never create_all
    yield engine
    engine.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        outer = connection.begin()
        yield connection
        outer.rollback()


@pytest.fixture
def session_factory(connection: Connection) -> sessionmaker[Session]:
    # commit() in the code under test only releases a SAVEPOINT of the outer transaction.
    return sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


def _app(session_factory: sessionmaker[Session]) -> Flask:
    """A new app joined to the test's transaction (for a test that must change its routes)."""
    app = create_app(settings())
    app.extensions["db.sessionmaker"] = session_factory  # requests and tasks join the test
    return app


@dataclass
class _Built:
    """An app built once per run, and what a test may change of it, restored for the next."""

    app: Flask
    config: dict[str, Any]
    extensions: dict[str, Any]

    def for_test(self, session_factory: sessionmaker[Session]) -> Flask:
        self.app.config.clear()
        self.app.config.update(self.config)
        self.app.extensions.clear()
        self.app.extensions.update(self.extensions)
        self.app.extensions["db.sessionmaker"] = session_factory  # requests and tasks join
        return self.app


def _build() -> _Built:
    app = create_app(settings())
    return _Built(app, dict(app.config), dict(app.extensions))


@pytest.fixture(scope="session")
def _apps() -> tuple[_Built, _Built]:
    """Building an app (blueprints, OpenAPI, routes) costs more than most tests: the two apps
    of `arranging_app` and `app` are built once, and each test gets them back with their
    settings and extensions as built. A test that adds routes builds its own (`_app`)."""
    return _build(), _build()


@pytest.fixture
def arranging_app(
    _apps: tuple[_Built, _Built], session_factory: sessionmaker[Session]
) -> Iterator[Flask]:
    """A twin app whose context stays pushed while the test arranges and asserts.

    It is a different app object on purpose: Flask reuses a pushed context of the *same* app
    for requests, which would share `g` (session, citizen) between the test and its requests.
    """
    twin = _apps[0].for_test(session_factory)
    with twin.app_context():
        yield twin


@pytest.fixture
def app(
    arranging_app: Flask, _apps: tuple[_Built, _Built], session_factory: sessionmaker[Session]
) -> Flask:
    app = _apps[1].for_test(session_factory)
    tasks.celery_init_app(app)  # eager Celery tasks run in its contexts (made "last")
    return app


@pytest.fixture
def session(app: Flask, session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session of the test's transaction, for arranging and asserting."""
    with session_factory() as session:
        yield session


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def charter(session: Session) -> charters.Charter:
    loaded, _ = charters.load(session, CHARTER.read_text(encoding="utf-8"))
    session.commit()
    return loaded


@dataclass
class SignedIn:
    """A browser signed in as one citizen, with the CSRF header its API calls need."""

    client: FlaskClient
    subject_id: uuid.UUID
    email: str
    csrf: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-CSRFToken": self.csrf}


def browser_for(app: Flask, session: Session, citizen: Any) -> FlaskClient:
    """A new browser with a new portal session of `citizen` (a Citizen row), committed."""
    token = accounts.start_session(
        session,
        citizen,
        policy=accounts.SessionPolicy(
            app.config["CITIZEN_SESSION_IDLE"], app.config["CITIZEN_SESSION_MAX"]
        ),
    )
    session.commit()
    client = app.test_client()
    with client.session_transaction() as browser:
        browser["sid"] = token
    return client


def sign_in(app: Flask, session: Session, email: str | None = None) -> SignedIn:
    email = email or f"citizen-{uuid.uuid4().hex[:8]}@example.org"
    citizen = accounts.sign_up(session, email=email, password=PASSWORD)
    client = browser_for(app, session, citizen)
    csrf = client.get("/api/v1/me").get_json()["csrf_token"]
    return SignedIn(client, citizen.subject_id, email, csrf)


@pytest.fixture
def citizen(app: Flask, session: Session, charter: charters.Charter) -> SignedIn:
    return sign_in(app, session)


@pytest.fixture
def other_citizen(app: Flask, session: Session, charter: charters.Charter) -> SignedIn:
    return sign_in(app, session)


def form_csrf(html: str) -> str:
    """The CSRF token of the first form on a portal page."""
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)
    assert match, "no csrf_token field on the page"
    return match.group(1)


REDIRECT_URI = "https://app.example.org/callback"


@dataclass
class Registered:
    """A client made for a test, with its plaintext secret (None for other methods)."""

    model: Any
    secret: str | None

    @property
    def client_id(self) -> str:
        return str(self.model.client_id)

    @property
    def basic(self) -> tuple[str, str]:
        assert self.secret is not None
        return (self.client_id, self.secret)


@pytest.fixture
def make_client(session: Session, charter: charters.Charter) -> Any:
    """Arrange an organisation and one client directly in the database (issuance itself is
    tested through /oauth/token; other tests need a client, not the registration path)."""
    from broker.models import AuthMethod, OAuthClient, Organisation, Role
    from broker.service.credentials import hash_value

    def make(
        role: str = "reuser",
        *,
        slug: str | None = None,
        category: str | None = "company",
        scope: str | None = None,
        auth_method: str = "client_secret_basic",
        grant_types: tuple[str, ...] = (
            "authorization_code",
            "refresh_token",
            "client_credentials",
        ),
        redirect_uris: tuple[str, ...] = (REDIRECT_URI,),
        jwks: dict[str, Any] | None = None,
        dpop: bool = False,
        resource_uri: str | None = None,
    ) -> Registered:
        from broker.service import scopes

        org = Organisation(
            slug=slug or f"org-{uuid.uuid4().hex[:8]}",
            name=f"Organisation {role}",
            role=Role(role),
            reuser_category=category,
            resource_uri=resource_uri,
            suspended_at=None,
        )
        secret = f"secret-{uuid.uuid4().hex}" if auth_method == "client_secret_basic" else None
        client = OAuthClient(
            client_id=f"tc_{uuid.uuid4().hex[:12]}",
            organisation=org,
            name=f"App of {org.slug}",
            auth_method=AuthMethod(auth_method),
            secret_hash=hash_value(secret) if secret else None,
            jwks=jwks,
            redirect_uris=list(redirect_uris),
            grant_types=list(grant_types),
            scope=scope if scope is not None else " ".join(sorted(scopes.ROLE_SCOPES[Role(role)])),
            dpop_bound=dpop,
            registered_by="committee",
            revoked_at=None,
        )
        session.add_all([org, client])
        session.commit()
        return Registered(client, secret)

    return make


@pytest.fixture
def oauth_headers(arranging_app: Flask, session: Session, make_client: Any) -> Any:
    """`oauth_headers(role, scope)`: a Bearer header for a new client of a new organisation
    of that role, minted directly (client_credentials, no HTTP round trip)."""

    def make(role: str, scope: str, **kw: Any) -> dict[str, str]:
        return bearer_for(session, make_client(role, scope=scope, **kw).model, scope)

    return make


def bearer_for(session: Session, client: Any, scope: str) -> dict[str, str]:
    """A Bearer header for `client` (an OAuthClient), minted directly with client_credentials
    (no HTTP round trip) and committed."""
    from broker.service import tokens
    from common.keyring import app_keyring

    issuer = tokens.Issuer(ISSUER, f"{ISSUER}/api", app_keyring())
    body = tokens.client_credentials(
        session, client, issuer, scope=scope, resource=None, dpop_jkt=None
    )
    session.commit()
    return {"Authorization": f"Bearer {body['access_token']}"}


@contextmanager
def sql_statements(bind: Engine | Connection) -> Iterator[list[str]]:
    """Every SQL statement sent through `bind` (an engine, or the test's connection) inside
    the block, its whitespace folded: for tests that bound how many statements a path takes."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(bind, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(bind, "before_cursor_execute", record)
