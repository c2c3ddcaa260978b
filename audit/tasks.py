"""`audit.integrate`: seal the log, then sign its new heads, each step in its own transaction.

Celery beat runs it every 2 s (broker/config.py). Without a broker (tests, the demo) it also
runs after every commit that appended audit rows, never inside that commit's transaction.
Idempotent: a run that dies is redone by the next one; two runs never both seal (the lock).
"""

from __future__ import annotations

import logging

from celery import shared_task
from sqlalchemy import event
from sqlalchemy.orm import Session

from audit import service
from common.db import unit_of_work
from common.tasks import celery_app

log = logging.getLogger(__name__)
BATCH = 1000
MAX_BATCHES = 50  # per run: a backlog is worked off over several runs, never in one long one


@shared_task(name="audit.integrate", acks_late=True, ignore_result=True)
def integrate() -> int:
    sealed = 0
    for _ in range(MAX_BATCHES):
        with unit_of_work() as session:
            done = service.integrate(session, batch=BATCH)
        # Signed only now that the heads are committed (C2SP tlog-checkpoint).
        with unit_of_work() as session:
            service.sign_pending(session)
        sealed += done
        if done < BATCH:
            break
    return sealed


@event.listens_for(Session, "after_commit")
def _kick_integrator(session: Session) -> None:
    if not session.info.pop(service.APPENDED, False):
        return
    # With a broker, beat seals every few seconds; a task per commit would flood the queue.
    if not celery_app.conf.task_always_eager:
        return
    try:
        integrate.apply_async()
    except Exception:
        # The commit stands; the next commit or beat run seals it (the guard bounds the wait).
        log.exception("the access log integrator failed; a later run will seal these entries")


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(service.APPENDED, None)
