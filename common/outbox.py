"""Nothing lost: messages that must leave after a commit are rows written in the same transaction.

A relay hands each row to its subscribed Celery tasks with retries; delivery is at least once,
so subscribers are idempotent (shared/DESIGN.md "Nothing lost: the outbox").
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery import shared_task
from flask import Flask, current_app
from sqlalchemy import JSON, String, event, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from common.clock import utcnow
from common.db import Base, HasId, unit_of_work
from common.tasks import celery_app

log = logging.getLogger(__name__)
LEASE = timedelta(minutes=5)


class OutboxMessage(HasId, Base):
    """One message to deliver after commit; `delivered_at` is set once handed to subscribers."""

    __tablename__ = "outbox_message"
    topic: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[dict[str, str | int]] = mapped_column(JSON)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    delivered_at: Mapped[datetime | None] = mapped_column(index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    claimed_until: Mapped[datetime | None]


def publish(
    session: Session, topic: str, payload: Mapping[str, str | int], *, idempotency_key: str
) -> OutboxMessage:
    """Record a message; it leaves only if the caller's transaction commits."""
    message = OutboxMessage(
        id=uuid.uuid4(),
        topic=topic,
        payload=dict(payload),
        idempotency_key=idempotency_key,
        delivered_at=None,
        attempts=0,
        claimed_until=None,
    )
    session.add(message)
    session.info["outbox_published"] = True
    return message


def subscribe(app: Flask, topic: str, task_name: str) -> None:
    """Have `task_name` run (with the payload as keyword arguments) for each `topic` message."""
    app.extensions.setdefault("outbox.subscribers", {}).setdefault(topic, []).append(task_name)


@dataclass(frozen=True)
class Claimed:
    """A message taken by one relay for a lease; the relay hands it over after its commit."""

    id: uuid.UUID
    topic: str
    payload: dict[str, str | int]
    idempotency_key: str


def claim(session: Session, *, limit: int = 100, lease: timedelta = LEASE) -> list[Claimed]:
    """Take up to `limit` undelivered messages for `lease`; SKIP LOCKED and the lease keep
    concurrent relays apart, and a relay that dies only delays its messages by the lease."""
    now = utcnow()
    rows = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.delivered_at.is_(None))
        .where(or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now))
        .order_by(OutboxMessage.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for row in rows:
        row.attempts += 1
        row.claimed_until = now + lease
    return [Claimed(r.id, r.topic, dict(r.payload), r.idempotency_key) for r in rows]


def dispatch(messages: list[Claimed]) -> None:
    """Hand each message to its subscribed tasks, outside any transaction of ours: in eager
    mode they run right here, each in its own unit of work."""
    subscribers: dict[str, list[str]] = current_app.extensions.get("outbox.subscribers", {})
    for message in messages:
        for task_name in subscribers.get(message.topic, []):
            # apply_async honours eager mode; send_task would not (shared/STYLE.md).
            celery_app.tasks[task_name].apply_async(
                kwargs=dict(message.payload), task_id=f"{message.idempotency_key}/{task_name}"
            )


def mark_delivered(session: Session, ids: list[uuid.UUID]) -> None:
    """Record that the messages were handed over (at least once: a crash before this only
    means they are handed over again, and subscribers are idempotent)."""
    now = utcnow()
    for row in session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(ids))):
        row.delivered_at = now


@shared_task(name="common.relay_outbox", acks_late=True, ignore_result=True)
def relay_outbox() -> int:
    with unit_of_work() as session:
        messages = claim(session)
    dispatch(messages)
    with unit_of_work() as session:
        mark_delivered(session, [m.id for m in messages])
    return len(messages)


@event.listens_for(Session, "after_commit")
def _kick_relay(session: Session) -> None:
    if not session.info.pop("outbox_published", False):
        return
    try:
        # A down broker delays delivery; it must never fail a request that already committed.
        relay_outbox.apply_async()
    except Exception:
        log.warning("outbox relay not reachable; the periodic relay will deliver", exc_info=True)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop("outbox_published", None)
