"""Celery tasks of broker/: thin, named, idempotent.

Importing common.outbox registers the outbox relay task with the worker.
"""

from __future__ import annotations

import logging
import uuid

from celery import shared_task
from flask import current_app

from broker.service import credentials, datasets, erasure, notices, outbound, tokens
from common import outbox as _outbox  # noqa: F401  (registers common.relay_outbox)
from common.db import unit_of_work
from common.keyring import app_keyring
from consent import accounts

log = logging.getLogger(__name__)


@shared_task(name="broker.revoke_for_consent", acks_late=True, ignore_result=True)
def revoke_for_consent(consent_id: str) -> int:
    """A consent ended (withdrawn, expired, superseded): revoke the grants built on it."""
    with unit_of_work() as session:
        return tokens.revoke_for_consent(session, consent_id)


@shared_task(name="broker.revoke_for_subject", acks_late=True, ignore_result=True)
def revoke_for_subject(subject_id: str) -> int:
    """A citizen closed their account: revoke every grant that acts for them."""
    with unit_of_work() as session:
        return tokens.revoke_for_subject(session, subject_id)


@shared_task(name="broker.erase_closed_accounts", acks_late=True, ignore_result=True)
def erase_closed_accounts() -> int:
    """Erase what closed accounts left once their withdrawals are settled: one transaction
    per account, so one that fails holds up no other (it is tried again next round)."""
    with unit_of_work() as session:
        due = accounts.closed_awaiting_erasure(session)
    erased = 0
    for citizen_id in due:
        try:
            with unit_of_work() as session:
                outcome = erasure.settle(
                    session, citizen_id, grace=current_app.config["ACCOUNT_ERASURE_GRACE"]
                )
        except Exception:
            log.exception("closed account %s: not settled this round", citizen_id)
            continue
        erased += outcome == "erased"
    return erased


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
    results = datasets.probe_all(targets, timeout=timeout, rules=outbound.policy())
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
        error = notices.send(
            attempt, timeout=float(config["NOTICE_TIMEOUT"]), rules=outbound.policy()
        )
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


# --- ingestion for aggregate purposes, and consents that end (issue #6) ---------------------


@shared_task(name="broker.ingest_aggregates", acks_late=True, ignore_result=True)
def ingest_aggregates(force: bool = False) -> int:
    """Queue the staging of every (dataset, purpose) of an active aggregate grant whose
    dataset is due for a refresh (or all of them with `force`): one task each, so a holder
    that is down delays only its own datasets. Returns how many were queued."""
    from anonymize import service as releases
    from broker.service import ingestion
    from common.clock import utcnow

    with unit_of_work() as session:
        releases.purge_expired(session)  # staged rows past their retention, on the same beat
        found = ingestion.targets(session)
        if not force:
            found = ingestion.due(session, found, now=utcnow())
    queued = 0
    for target in found:
        try:
            ingest_dataset.apply_async(
                kwargs={
                    "dataset_id": str(target.dataset_id),
                    "purpose_id": target.purpose_id,
                    "grant_id": str(target.grant_id),
                }
            )
            queued += 1
        except Exception:  # eager mode raises the target's own failure: the others still run
            log.warning(
                "ingestion of %s for %s failed",
                target.dataset_id,
                target.purpose_id,
                exc_info=True,
            )
    return queued


@shared_task(name="broker.ingest_dataset", acks_late=True, ignore_result=True, max_retries=6)
def ingest_dataset(dataset_id: str, purpose_id: str, grant_id: str) -> int:
    """Stage one dataset for one aggregate purpose, batch by batch (ingestion.stage_batch):
    a batch commits whole or not at all, so a holder that goes down leaves each citizen with
    either the previous run's rows or the new ones, and the task is retried. Safe to run
    twice: a batch replaces what was staged for its citizens."""
    from broker.oauth import token_issuer
    from broker.service import ingestion
    from broker.service.gateway import HolderUnavailableError

    target = ingestion.Target(uuid.UUID(dataset_id), purpose_id, uuid.UUID(grant_id))
    with unit_of_work() as session:
        plan = ingestion.plan(session, target)
    if plan is None:
        return 0
    timeout = float(current_app.config.get("GATEWAY_HOLDER_TIMEOUT", 10.0))
    issuer = token_issuer()
    staged = 0
    try:
        for batch in ingestion.batches(plan):
            with unit_of_work() as session:
                inputs = ingestion.batch_inputs(session, plan)
                if inputs is None:  # the grant ended meanwhile: stage no more
                    break
                done = ingestion.stage_batch(
                    session, plan, batch, *inputs, issuer=issuer, timeout=timeout
                )
            staged += done.records
    except HolderUnavailableError as exc:  # the holder is down or busy: later, backing off
        request = ingest_dataset.request
        if request.is_eager:
            raise  # the embedded default: the beat tries again at its next round
        countdown = max(exc.retry_after, 30 * 2**request.retries)
        raise ingest_dataset.retry(exc=exc, countdown=min(countdown, 3600)) from exc
    return staged


@shared_task(name="broker.drop_staged_for_consent", acks_late=True, ignore_result=True)
def drop_staged_for_consent(consent_id: str) -> int:
    """A consent ended (withdrawn, expired, superseded): its citizen's staged rows for its
    purpose go, so no later release counts them. Idempotent."""
    from broker.service import ingestion

    with unit_of_work() as session:
        return ingestion.drop_for_consent(session, uuid.UUID(consent_id))


@shared_task(name="broker.purge_staged", acks_late=True, ignore_result=True)
def purge_staged() -> int:
    """Delete staged rows past the charter's retention for their purpose."""
    from anonymize import service as releases

    with unit_of_work() as session:
        return releases.purge_expired(session)
