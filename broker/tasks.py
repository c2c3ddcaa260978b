"""Celery tasks of broker/: thin, named, idempotent.

Importing common.outbox registers the outbox relay task with the worker.
"""

from __future__ import annotations

import uuid

from celery import shared_task
from flask import current_app

from broker.service import credentials, datasets, notices, tokens
from common import outbox as _outbox  # noqa: F401  (registers common.relay_outbox)
from common.db import unit_of_work
from common.keyring import app_keyring


@shared_task(name="broker.revoke_for_consent", acks_late=True, ignore_result=True)
def revoke_for_consent(consent_id: str) -> int:
    """A consent ended (withdrawn, expired, superseded): revoke the grants built on it."""
    with unit_of_work() as session:
        return tokens.revoke_for_consent(session, consent_id)


@shared_task(name="broker.purge_replay_cache", acks_late=True, ignore_result=True)
def purge_replay_cache() -> int:
    """Forget client-assertion and DPoP proof ids that could no longer be replayed anyway."""
    with unit_of_work() as session:
        return credentials.purge_seen(session)


@shared_task(name="broker.probe_datasets", acks_late=True, ignore_result=True)
def probe_datasets() -> int:
    """GET `{service}/health` of every dataset's service and record up/down on the datasets.

    Three steps, so that no transaction stays open over network I/O: read the targets,
    probe them (short timeout, concurrently), write the results. Safe to run twice.
    """
    with unit_of_work() as session:
        targets = datasets.probe_targets(session)
    timeout = float(current_app.config.get("DATASET_PROBE_TIMEOUT", 3.0))
    results = datasets.probe_all(targets, timeout=timeout)
    with unit_of_work() as session:
        return datasets.record_health(session, targets, results)


@shared_task(name="broker.notify_withdrawal", acks_late=True, ignore_result=True)
def notify_withdrawal(consent_id: str) -> int:
    """A consent was withdrawn: plan its notices (once), then try each at once."""
    with unit_of_work() as session:
        planned = notices.plan_withdrawal(session, consent_id)
    for notice_id in planned:
        deliver_notice.apply_async(args=[str(notice_id)])
    return len(planned)


@shared_task(
    name="broker.deliver_notice", acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def deliver_notice(notice_id: str) -> bool:
    """One attempt, under the notice's row lock: two workers never send it at once, and one
    killed mid-POST leaves it pending, to be sent again under the same Idempotency-Key."""
    config = current_app.config
    with unit_of_work() as session:
        attempt = notices.claim(
            session, uuid.UUID(notice_id), issuer=config["ISSUER"], keyring=app_keyring()
        )
        if attempt is None:
            return False
        error = notices.send(attempt, timeout=float(config["NOTICE_TIMEOUT"]))
        notices.record_attempt(
            session, attempt.notice_id, error, max_attempts=int(config["NOTICE_MAX_ATTEMPTS"])
        )
    return error is None


@shared_task(name="broker.retry_notices", acks_late=True, ignore_result=True)
def retry_notices() -> int:
    """Beat: send again every pending notice whose backoff has passed."""
    with unit_of_work() as session:
        due = notices.due(session)
    for notice_id in due:
        deliver_notice.apply_async(args=[str(notice_id)])
    return len(due)
