"""Settings from the environment. The embedded default needs none: SQLite, eager tasks.

Production sets DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL (Redis or RabbitMQ).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def _secret_key(instance_path: str) -> str:
    """SECRET_KEY from the environment, else generated once and kept under instance/."""
    if key := os.environ.get("SECRET_KEY"):
        return key
    path = Path(instance_path) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two workers starting together cannot both write a different key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def celery_settings(broker_url: str | None) -> dict[str, Any]:
    """Celery: eager in-process without a broker; acks_late and idempotent tasks otherwise."""
    return {
        "broker_url": broker_url or "memory://",
        "task_always_eager": broker_url is None,
        "task_eager_propagates": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "broker_connection_retry_on_startup": True,
        # A down broker must not hang a request: fail fast, the periodic relay delivers later.
        "broker_transport_options": {"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
        "beat_schedule": {
            "relay-outbox": {"task": "common.relay_outbox", "schedule": 30.0},
            "sweep-consents": {"task": "consent.sweep", "schedule": 300.0},
            "purge-replay-cache": {"task": "broker.purge_replay_cache", "schedule": 600.0},
            # Seals the access log; data releases fail closed past AUDIT_MAX_SEAL_LAG.
            "integrate-audit-log": {"task": "audit.integrate", "schedule": 2.0},
            "probe-datasets": {"task": "broker.probe_datasets", "schedule": 300.0},
            "ingest-aggregates": {"task": "broker.ingest_aggregates", "schedule": 3600.0},
            "retry-notices": {"task": "broker.retry_notices", "schedule": 5.0},
            "erase-closed-accounts": {"task": "broker.erase_closed_accounts", "schedule": 600.0},
        },
    }


def from_env(instance_path: str) -> dict[str, Any]:
    """Every setting Tiers reads, with the embedded defaults."""
    env = os.environ
    issuer = env.get("TIERS_ISSUER", "http://127.0.0.1:5000")
    return {
        "SECRET_KEY": _secret_key(instance_path),
        "DATABASE_URL": env.get("DATABASE_URL", f"sqlite:///{instance_path}/tiers.sqlite"),
        "KEYS_DIR": env.get("TIERS_KEYS_DIR", str(Path(instance_path) / "keys")),
        "ISSUER": issuer,
        # Served over https (the issuer says so), cookies are https-only unless told otherwise.
        "SESSION_COOKIE_SECURE": env.get(
            "TIERS_SECURE_COOKIES", "1" if issuer.startswith("https://") else "0"
        )
        == "1",
        "CELERY": celery_settings(env.get("CELERY_BROKER_URL")),
        # Reverse proxies in front of Tiers whose X-Forwarded-For/-Proto it trusts: without
        # them, every sign-in seems to come from the proxy and one client's limit locks all.
        "PROXIES": _count("TIERS_PROXIES", env.get("TIERS_PROXIES", "0")),
        **defaults(),
        # The log's name in its checkpoints, for ever (default: <issuer host>/tiers/audit-log).
        "AUDIT_LOG_ORIGIN": env.get("TIERS_AUDIT_LOG_ORIGIN") or None,
        "AUDIT_MAX_SEAL_LAG": timedelta(seconds=float(env.get("TIERS_AUDIT_MAX_SEAL_LAG", "60"))),
        # Tiers' own requests may reach the loopback only where Tiers itself is served there
        # (the demo, a laptop): a deployment that forgets the setting is not left open.
        "OUTBOUND_ALLOW_LOOPBACK": env.get(
            "TIERS_OUTBOUND_LOOPBACK", "1" if _on_loopback(issuer) else "0"
        )
        == "1",
        "OUTBOUND_ALLOW_PRIVATE": env.get("TIERS_OUTBOUND_PRIVATE", "0") == "1",
    }


def defaults() -> dict[str, Any]:
    """Settings that rarely change between deployments (tests reuse them)."""
    return {
        "API_TITLE": "Tiers",
        "API_VERSION": "v1",
        "OPENAPI_VERSION": "3.1.0",
        "OPENAPI_URL_PREFIX": "/",
        "OPENAPI_JSON_PATH": "openapi.json",
        "MAX_CONTENT_LENGTH": 64 * 1024,  # consents and charters are small; bigger is abuse
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_NAME": "tiers_session",
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=12),
        "CITIZEN_SESSION_IDLE": timedelta(minutes=30),
        "CITIZEN_SESSION_MAX": timedelta(hours=12),
        "SIGN_IN_MAX_FAILURES": 5,
        "SIGN_IN_WINDOW": timedelta(minutes=15),
        "SIGN_IN_MAX_FAILURES_PER_CLIENT": 20,
        "WTF_CSRF_TIME_LIMIT": None,  # the token lives as long as the citizen session
        "WTF_CSRF_CHECK_DEFAULT": False,  # broker/app.py checks, unless a token authenticates
        "BABEL_DEFAULT_LOCALE": "fr",
        "BABEL_DEFAULT_TIMEZONE": "Europe/Paris",
        "LANGUAGES": ("fr", "en"),
        "DPOP_REQUIRE_NONCE": True,  # RFC 9449 §8: proofs carry a nonce the server chose
        "RECEIPT_KEY_PUBLISH_DAYS": 5 * 365 + 30,  # longer than any consent a charter allows
        "AUDIT_LOG_ORIGIN": None,  # derived from ISSUER (audit.service.log_origin)
        "AUDIT_MAX_SEAL_LAG": timedelta(seconds=60),  # older unsealed leaves: releases get 503
        "GATEWAY_HOLDER_TIMEOUT": 10.0,  # seconds a holder may take per page: then 503
        # Where Tiers' own requests may go (broker/service/outbound.py): never private or
        # reserved addresses; the loopback for the demo and tests (TIERS_OUTBOUND_LOOPBACK=0
        # in production).
        "OUTBOUND_ALLOW_LOOPBACK": True,
        "OUTBOUND_ALLOW_PRIVATE": False,
        "NOTICE_TIMEOUT": 5.0,  # seconds a recipient's webhook may take to acknowledge
        "NOTICE_MAX_ATTEMPTS": 8,  # then the notice is dead: the committee's dead-letter list
        # A closed account is erased no sooner than this, and only once its withdrawals are
        # settled (broker/service/erasure.py).
        "ACCOUNT_ERASURE_GRACE": timedelta(hours=1),
    }


def _count(name: str, raw: str) -> int:
    """A whole number from the environment, or a message that says which variable is wrong."""
    if not raw.strip().isascii() or not raw.strip().isdigit():
        raise ValueError(f"{name} must be a whole number (0 or more), not {raw!r}")
    return int(raw)


def _on_loopback(url: str) -> bool:
    """Whether `url` names this machine (127.0.0.0/8, ::1 or localhost)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
