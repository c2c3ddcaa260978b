"""Nothing lost: messages that must leave after a commit are rows written in the same transaction.

A relay hands each row to its subscribed Celery tasks with retries; delivery is at least once,
so subscribers are idempotent (shared/DESIGN.md "Nothing lost: the outbox").
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from celery import shared_task
from flask import Flask, current_app
from sqlalchemy import JSON, String, Table, event, exists, insert, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from common.clock import utcnow
from common.db import Base, HasId, unit_of_work
from common.tasks import celery_app

log = logging.getLogger(__name__)
LEASE = timedelta(minutes=5)
KICK_INTERVAL = 0.05  # seconds: the most a commit's kick waits for the one before it


class OutboxMessage(HasId, Base):
    """One message to deliver after commit; `delivered_at` is set once handed to subscribers."""

    __tablename__ = "outbox_message"
    topic: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[dict[str, str | int]] = mapped_column(JSON)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    delivered_at: Mapped[datetime | None] = mapped_column(index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    claimed_until: Mapped[datetime | None]


# Built once: publish is on the hot path of every consent. Core, no unit of work; `inline()`
# because nobody needs the new row back.
_INSERT = insert(cast(Table, OutboxMessage.__table__)).inline()


def publish(
    session: Session, topic: str, payload: Mapping[str, str | int], *, idempotency_key: str
) -> uuid.UUID:
    """Record a message; it leaves only if the caller's transaction commits. Returns its id.

    Written at once on the session's connection (no autoflush of the caller's objects): a
    duplicate `idempotency_key` raises IntegrityError here, not at the caller's next flush.
    """
    message_id = uuid.uuid4()
    session.connection().execute(
        _INSERT,
        {
            "id": message_id,
            "created_at": utcnow(),
            "topic": topic,
            "payload": dict(payload),
            "idempotency_key": idempotency_key,
            "delivered_at": None,
            "attempts": 0,
            "claimed_until": None,
        },
    )
    session.info["outbox_published"] = True
    return message_id


def undelivered(session: Session, key_patterns: Sequence[str]) -> bool:
    """Whether a message whose idempotency key matches one of these LIKE patterns is still
    undelivered (the publisher owns its keys' format; callers ask through it)."""
    if not key_patterns:
        return False
    matches = or_(*(OutboxMessage.idempotency_key.like(p) for p in key_patterns))
    found = exists().where(OutboxMessage.delivered_at.is_(None), matches)
    return bool(session.scalar(select(found)))


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


def _send_kick() -> None:
    try:
        # A down broker delays delivery; it must never fail a request that already committed.
        relay_outbox.apply_async()
    except Exception:
        log.warning("outbox relay not reachable; the periodic relay will deliver", exc_info=True)


class Kicker:
    """Kicks the relay from a thread of this process, at most once per `interval`.

    One relay run takes every pending row, so one kick sent after several commits delivers
    them all: under load a worker sends a few kicks a second, not one per commit, and no
    request waits on the broker. No commit goes unkicked: a kick asked for while one is being
    sent (or during the pause after it) is sent when the pause ends. A kick lost with its
    process is one the periodic relay makes up for, as when the broker is down.
    """

    def __init__(self, send: Callable[[], None], *, interval: float) -> None:
        self._send = send
        self._interval = interval
        self._wanted = threading.Event()
        self._pid: int | None = None  # the process whose thread runs: a fork starts its own
        self._lock = threading.Lock()

    def kick(self) -> None:
        """Ask for a kick; returns at once."""
        if self._pid != os.getpid():
            self._start()
        self._wanted.set()

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._wanted = threading.Event()
            wanted = self._wanted
            thread = threading.Thread(
                target=self._run, args=(wanted,), name="outbox-kicker", daemon=True
            )
            thread.start()
            self._pid = os.getpid()

    def _run(self, wanted: threading.Event) -> None:
        while True:
            wanted.wait()
            wanted.clear()  # before sending: a commit from now on asks for the next kick
            try:
                self._send()
            except Exception:  # the thread must outlive any failure, or kicks stop for good
                log.exception("outbox kick failed; the periodic relay will deliver")
            time.sleep(self._interval)


_kicker = Kicker(_send_kick, interval=KICK_INTERVAL)


@event.listens_for(Session, "after_commit")
def _kick_relay(session: Session) -> None:
    if not session.info.pop("outbox_published", False):
        return
    if celery_app.conf.task_always_eager:
        _send_kick()  # no broker: the relay runs right here, after this commit
    else:
        _kicker.kick()


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop("outbox_published", None)
