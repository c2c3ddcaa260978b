"""The access log on a real PostgreSQL, with real connections committing for real: what the
fast tier's single transaction cannot show (late commits, concurrent writers and integrators,
the Celery worker running the integrator)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audit import notes
from audit import service as audit
from audit.models import AuditEntry
from common.db import unit_of_work
from common.errors import ServiceUnavailableError
from common.tasks import celery_app
from tests.audit.test_log import hash_leaf, mth
from tests.system.conftest import eventually

pytestmark = pytest.mark.system

WRITERS = 8
APPENDS_PER_WRITER = 30
SHARED_SUBJECTS = 3  # every writer logs about these too: their chains must not fork


def _new_session(app: Flask) -> Session:
    session: Session = app.extensions["db.sessionmaker"]()
    return session


def _seal(app: Flask) -> int:
    """One run of the integrator task, in this process: integrate, commit, sign, commit."""
    with app.app_context():
        with unit_of_work() as session:
            sealed = audit.integrate(session)
        with unit_of_work() as session:
            audit.sign_pending(session)
    return sealed


def _drain(app: Flask) -> None:
    """Seal everything committed so far (other tests leave unsealed rows behind)."""
    while True:
        _seal(app)
        with app.app_context():
            session = _new_session(app)
            pending = session.scalar(
                select(func.count()).select_from(AuditEntry).where(AuditEntry.seq.is_(None))
            )
            session.close()
        if not pending:
            return


def _seq(app: Flask, entry_id: uuid.UUID) -> int | None:
    session = _new_session(app)
    try:
        return session.scalar(select(AuditEntry.seq).where(AuditEntry.id == entry_id))
    finally:
        session.close()


def _whole_log_is_gapless_and_signed(app: Flask) -> list[AuditEntry]:
    with app.app_context():
        session = _new_session(app)
        try:
            rows = list(session.scalars(select(AuditEntry).order_by(AuditEntry.seq)))
            assert [r.seq for r in rows] == list(range(len(rows)))  # 0..n-1: no gap, no twin
            note = audit.checkpoint(session)
            assert note is not None
            head = notes.parse_checkpoint(notes.open_note(note, audit.log_key()))
            assert head.size == len(rows)
            assert head.root == mth([hash_leaf(r.leaf) for r in rows])
            return rows
        finally:
            session.close()


def test_a_leaf_that_commits_after_a_later_one_is_not_lost(live_app: Flask) -> None:
    _drain(live_app)
    with live_app.app_context():
        late, early = _new_session(live_app), _new_session(live_app)
        try:
            # `late` inserts first (the smaller insertion position) and commits last.
            late_id = audit.append(late, event="test:live:late", actor="system-test")
            early_id = audit.append(early, event="test:live:early", actor="system-test")
            early.commit()
            assert _seal(live_app) == 1
            assert _seq(live_app, early_id) is not None
            assert _seq(live_app, late_id) is None  # invisible until it commits; never skipped
            late.commit()
            assert _seal(live_app) == 1
            assert _seq(live_app, late_id) == (_seq(live_app, early_id) or 0) + 1
        finally:
            late.close()
            early.close()
    _whole_log_is_gapless_and_signed(live_app)


def test_concurrent_writers_and_two_integrators_give_every_leaf_one_index(
    live_app: Flask,
) -> None:
    _drain(live_app)
    shared = [uuid.uuid4() for _ in range(SHARED_SUBJECTS)]
    written: list[uuid.UUID] = []
    errors: list[BaseException] = []
    writers_done = threading.Event()
    runs: dict[str, list[int]] = defaultdict(list)
    lock = threading.Lock()

    def guarded(work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # re-raised by the test thread below
                errors.append(exc)

        return run

    def writer(number: int) -> None:
        with live_app.app_context():
            session = _new_session(live_app)
            try:
                for i in range(APPENDS_PER_WRITER):
                    subject = shared[i % SHARED_SUBJECTS] if i % 2 else None
                    entry_id = audit.append(
                        session,
                        event="test:live:concurrent",
                        actor=f"writer-{number}",
                        subject_id=subject,
                        detail={"i": i},
                    )
                    session.commit()
                    with lock:
                        written.append(entry_id)
            finally:
                session.close()

    def integrator(name: str) -> None:
        while not writers_done.is_set():
            runs[name].append(_seal(live_app))

    writers = [threading.Thread(target=guarded(lambda n=n: writer(n))) for n in range(WRITERS)]
    integrators = [
        threading.Thread(target=guarded(lambda name=name: integrator(name)))
        for name in ("first", "second")
    ]
    for thread in integrators + writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=120)
    writers_done.set()
    for thread in integrators:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    assert len(written) == WRITERS * APPENDS_PER_WRITER
    assert all(runs[name] for name in ("first", "second"))  # both really ran, concurrently
    _drain(live_app)

    rows = _whole_log_is_gapless_and_signed(live_app)
    ours = {r.id: r for r in rows if r.id in set(written)}
    assert len(ours) == len(written)  # every committed leaf sealed, exactly once
    # Each shared subject's leaves form one chain, in log order: prev = the previous one's hash.
    by_tag: dict[str, list[AuditEntry]] = defaultdict(list)
    for row in rows:
        if row.id in ours and row.subject_tag:
            by_tag[row.subject_tag].append(row)
    assert len(by_tag) == SHARED_SUBJECTS
    for chain in by_tag.values():
        assert len(chain) == WRITERS * APPENDS_PER_WRITER // 2 // SHARED_SUBJECTS
        previous = None
        for row in chain:
            assert json.loads(row.leaf)["prev"] == (previous.hex() if previous else None)
            previous = row.leaf_hash
    with live_app.app_context():
        session = _new_session(live_app)
        try:
            for subject in shared:
                mine = audit.entries_for_subject(session, subject)
                expected = [
                    i
                    for i in range(APPENDS_PER_WRITER)
                    if i % 2 and shared[i % SHARED_SUBJECTS] == subject
                ]
                assert sorted(e.detail["i"] for e in mine if e.detail) == sorted(expected * WRITERS)
        finally:
            session.close()


def test_the_worker_runs_the_integrator_and_receipts_follow(live_app: Flask, worker: Any) -> None:
    with live_app.app_context(), unit_of_work() as session:
        entry_id = audit.append(session, event="test:live:worker", actor="system-test")
    celery_app.tasks["audit.integrate"].apply_async()  # what beat does every 2 s

    def receipt() -> str | None:
        with live_app.app_context():
            session = _new_session(live_app)
            try:
                return audit.receipt(session, entry_id)
            finally:
                session.close()

    proof = eventually(receipt)
    with live_app.app_context():
        session = _new_session(live_app)
        leaf = session.scalar(select(AuditEntry.leaf).where(AuditEntry.id == entry_id))
        session.close()
        assert leaf is not None
        assert notes.verify_tlog_proof(proof, leaf, audit.log_key(), audit.log_origin())


def test_releases_fail_closed_until_the_integrator_catches_up(live_app: Flask) -> None:
    _drain(live_app)
    bound = timedelta(seconds=1)
    with live_app.app_context(), unit_of_work() as session:
        audit.append(session, event="test:live:lag", actor="system-test")
    time.sleep(1.2)  # the integrator is "stopped": nobody seals
    with live_app.app_context():
        session = _new_session(live_app)
        with pytest.raises(ServiceUnavailableError):
            audit.require_sealed(session, max_lag=bound)
        session.close()
    _seal(live_app)  # the integrator is back
    with live_app.app_context(), unit_of_work() as session:
        audit.require_sealed(session, max_lag=bound)
