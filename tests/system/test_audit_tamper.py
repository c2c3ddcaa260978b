"""Tampering with the access log directly in PostgreSQL, as a database superuser would: the
append-only triggers are bypassed (session_replication_role = replica), yet an export checked
offline against a checkpoint saved before names the first bad index.

Each tampering runs in a transaction that is rolled back after the export: the shared system
database keeps its honest log for the other tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.orm import Session

from audit import service as audit
from audit.export import export
from audit.models import AuditEntry
from audit.verify import Report, verify
from common.db import unit_of_work

pytestmark = pytest.mark.system

BATCHES, PER_BATCH = 3, 10


@pytest.fixture(scope="module", autouse=True)
def _closed_pool(live_app: Flask) -> Iterator[None]:
    """Close the live app's pooled connections after this module (no connection left to GC)."""
    yield
    live_app.extensions["db.engine"].dispose()


@pytest.fixture(scope="module")
def sealed_log(live_app: Flask) -> tuple[list[int], str]:
    """This test's leaves (their indices), committed and sealed, and the checkpoint after them."""
    ids: list[uuid.UUID] = []
    citizen = uuid.uuid4()
    with live_app.app_context():
        for batch in range(BATCHES):
            with unit_of_work() as session:
                for i in range(PER_BATCH):
                    ids.append(
                        audit.append(
                            session,
                            event="test:tamper:append",
                            actor="system-test",
                            subject_id=citizen if i % 3 == 0 else None,
                            reason=f"{batch}-{i}",
                        )
                    )
            with unit_of_work() as session:
                while audit.integrate(session):
                    pass
            with unit_of_work() as session:
                audit.sign_pending(session)
        with unit_of_work() as session:
            seqs = session.scalars(
                select(AuditEntry.seq).where(AuditEntry.id.in_(ids)).order_by(AuditEntry.seq)
            ).all()
            saved = audit.checkpoint(session)
    assert saved is not None
    assert len(seqs) == BATCHES * PER_BATCH
    assert None not in seqs
    return [int(s) for s in seqs if s is not None], saved


@pytest.fixture
def tampering(live_app: Flask, engine: Engine) -> Iterator[Callable[..., Report]]:
    """Run SQL as a superuser bypassing the triggers, export in that transaction, verify, undo."""
    with engine.connect() as connection, live_app.app_context():
        transaction = connection.begin()
        connection.execute(text("SET LOCAL session_replication_role = replica"))

        def run(sql: str, saved: str | None = None, **params: object) -> Report:
            connection.execute(text(sql), params)
            return _export_and_verify(connection, saved)

        try:
            yield run
        finally:
            transaction.rollback()


def _export_and_verify(connection: Connection, saved: str | None) -> Report:
    with Session(bind=connection) as session:
        lines = list(export(session))
    return verify(lines, log_key=audit.log_key(), saved_checkpoint=saved)


def test_an_honest_log_verifies_against_the_saved_checkpoint(live_app, engine, sealed_log):
    _, saved = sealed_log
    with engine.connect() as connection, live_app.app_context():
        report = _export_and_verify(connection, saved)
    assert report.ok, report.problems
    with engine.connect() as connection:
        size = connection.scalar(select(func.count()).where(AuditEntry.seq.is_not(None)))
    assert report.size == size


def test_an_updated_leaf_is_named(tampering, sealed_log):
    seqs, saved = sealed_log
    target = seqs[13]
    report = tampering(
        "UPDATE audit_entry SET leaf = convert_to(replace(convert_from(leaf, 'UTF8'),"
        " 'system-test', 'someone-else'), 'UTF8') WHERE seq = :seq",
        saved,
        seq=target,
    )
    assert (report.ok, report.first_bad_index, report.problem) == (False, target, "altered")


def test_a_deleted_leaf_is_named(tampering, sealed_log):
    seqs, saved = sealed_log
    target = seqs[7]
    report = tampering("DELETE FROM audit_entry WHERE seq = :seq", saved, seq=target)
    assert (report.ok, report.first_bad_index, report.problem) == (False, target, "removed")


def test_two_swapped_leaves_are_named_at_the_first(tampering, sealed_log):
    seqs, saved = sealed_log
    first, second = seqs[4], seqs[21]
    report = tampering(
        "UPDATE audit_entry SET leaf = CASE seq"
        " WHEN :a THEN (SELECT leaf FROM audit_entry WHERE seq = :b)"
        " ELSE (SELECT leaf FROM audit_entry WHERE seq = :a) END"
        " WHERE seq IN (:a, :b)",
        saved,
        a=first,
        b=second,
    )
    assert (report.ok, report.first_bad_index, report.problem) == (False, first, "reordered")


def test_a_deleted_tail_is_named_truncated(tampering, sealed_log):
    seqs, saved = sealed_log
    target = seqs[-6]
    report = tampering("DELETE FROM audit_entry WHERE seq >= :seq", saved, seq=target)
    assert (report.ok, report.first_bad_index, report.problem) == (False, target, "truncated")
