"""Celery tasks of consent/: thin, named, idempotent."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from common.db import unit_of_work
from consent import service


@shared_task(name="consent.sweep", acks_late=True, ignore_result=True)
def sweep(**_payload: Any) -> dict[str, int]:
    # Also subscribed to charter.published, whose payload it does not need.
    with unit_of_work() as session:
        return service.sweep(session)
