"""Celery tasks of broker/: thin, named, idempotent.

Importing common.outbox registers the outbox relay task with the worker.
"""

from __future__ import annotations

from celery import shared_task
from flask import current_app

from broker.service import credentials, datasets, tokens
from common import outbox as _outbox  # noqa: F401  (registers common.relay_outbox)
from common.db import unit_of_work


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
