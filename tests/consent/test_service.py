"""The consent lifecycle through the service layer: give, renew, withdraw, expire, supersede."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from audit.models import AuditEntry
from charter import service as charters
from charter.document import terms_hash
from common.clock import frozen, utcnow
from common.errors import ConflictError, InvalidInputError, NotFoundError
from common.outbox import OutboxMessage
from consent import service
from consent.models import Consent, ConsentEvent, ConsentStatus, EventType
from tests.conftest import CHARTER_V2, sql_statements


def give(
    session: Session,
    charter: charters.Charter,
    purpose_id: str = "energy-coaching",
    subject_id: uuid.UUID | None = None,
    **extra: object,
) -> Consent:
    purpose = charter.require_purpose(purpose_id)
    recipient = purpose.recipient_ids[0]
    command = service.GiveConsent(
        subject_id=subject_id or uuid.uuid4(),
        purpose_id=purpose_id,
        terms_hash=terms_hash(purpose),
        recipient_id=recipient,
        **extra,  # type: ignore[arg-type]
    )
    return service.give(session, command)


def count(session: Session, model: type, **where: object) -> int:
    query = select(func.count()).select_from(model)
    for name, value in where.items():
        query = query.where(getattr(model, name) == value)
    return session.scalar(query) or 0


def test_giving_a_consent_records_event_receipt_audit_and_outbox(session, charter):
    consent = give(session, charter)
    session.commit()
    assert consent.status is ConsentStatus.GIVEN
    assert consent.charter_version == charter.version
    assert [e.type for e in consent.events] == [EventType.GIVEN]
    assert consent.receipt.count(".") == 2
    assert consent.expires_at - consent.given_at == timedelta(
        days=charter.require_purpose("energy-coaching").consent_max_days
    )
    assert count(session, AuditEntry, consent_id=consent.id, event="consent:consent:give") == 1
    assert count(session, OutboxMessage, topic="consent.given") == 1


def test_the_audit_entry_names_no_citizen_in_clear(session, charter):
    consent = give(session, charter)
    entry = session.scalar(select(AuditEntry).where(AuditEntry.consent_id == consent.id))
    assert entry is not None
    assert str(consent.subject_id) not in repr(entry.__dict__)
    assert entry.subject_tag
    assert len(entry.subject_tag) == 64


def test_every_charter_refusal_is_listed_by_field(session, charter):
    with pytest.raises(InvalidInputError) as caught:
        service.give(
            session,
            service.GiveConsent(
                subject_id=uuid.uuid4(),
                purpose_id="energy-coaching",
                terms_hash="0" * 64,
                recipient_id="nobody",
                language="de",
                data_categories=("mobility.trips",),
                duration_days=100000,
            ),
        )
    assert set(caught.value.fields) == {
        "terms_hash",
        "recipient_id",
        "language",
        "data_categories",
        "duration_days",
    }
    assert count(session, Consent) == 0


def test_an_unknown_purpose_is_refused(session, charter):
    with pytest.raises(InvalidInputError) as caught:
        service.give(
            session,
            service.GiveConsent(
                subject_id=uuid.uuid4(), purpose_id="nope", terms_hash="0" * 64, recipient_id="x"
            ),
        )
    assert "purpose_id" in caught.value.fields


def test_a_second_consent_in_force_for_the_same_terms_is_a_conflict(session, charter):
    subject = uuid.uuid4()
    give(session, charter, subject_id=subject)
    with pytest.raises(ConflictError):
        give(session, charter, subject_id=subject)


def test_withdrawal_is_effective_and_idempotent(session, charter):
    consent = give(session, charter)
    service.withdraw(session, subject_id=consent.subject_id, consent_id=consent.id, method="api")
    again = service.withdraw(
        session, subject_id=consent.subject_id, consent_id=consent.id, method="api"
    )
    assert again.status is ConsentStatus.WITHDRAWN
    assert again.withdrawn_at is not None
    assert [e.type for e in again.events] == [EventType.GIVEN, EventType.WITHDRAWN]
    assert count(session, OutboxMessage, topic="consent.withdrawn") == 1


def test_a_citizen_cannot_withdraw_another_citizens_consent(session, charter):
    consent = give(session, charter)
    with pytest.raises(NotFoundError):
        service.withdraw(session, subject_id=uuid.uuid4(), consent_id=consent.id, method="api")
    assert consent.status is ConsentStatus.GIVEN


def test_rolled_back_withdrawal_leaves_nothing_to_deliver(session, charter):
    consent = give(session, charter)
    session.commit()
    before = count(session, OutboxMessage)
    service.withdraw(session, subject_id=consent.subject_id, consent_id=consent.id, method="api")
    session.rollback()
    assert count(session, OutboxMessage) == before
    assert count(session, OutboxMessage, topic="consent.withdrawn") == 0
    assert session.get(Consent, consent.id).status is ConsentStatus.GIVEN


def test_renewal_moves_the_expiry_from_now_in_one_step(session, charter):
    start = utcnow()
    with frozen(start) as move_to:
        consent = give(session, charter, duration_days=30)
        move_to(start + timedelta(days=20))
        purpose = charter.require_purpose("energy-coaching")
        service.renew(
            session,
            service.RenewConsent(
                subject_id=consent.subject_id, consent_id=consent.id, terms_hash=terms_hash(purpose)
            ),
        )
    assert consent.expires_at == start + timedelta(days=20 + purpose.consent_max_days)
    assert [e.type for e in consent.events] == [EventType.GIVEN, EventType.RENEWED]
    assert service.dpv_status(consent) == "dpv:RenewedConsentGiven"


def test_a_withdrawn_consent_is_not_renewed(session, charter):
    consent = give(session, charter)
    service.withdraw(session, subject_id=consent.subject_id, consent_id=consent.id, method="api")
    with pytest.raises(ConflictError):
        service.renew(
            session,
            service.RenewConsent(
                subject_id=consent.subject_id, consent_id=consent.id, terms_hash=consent.terms_hash
            ),
        )


def test_the_sweep_expires_consents_past_their_date_and_only_those(session, charter):
    start = utcnow()
    with frozen(start) as move_to:
        short = give(session, charter, duration_days=10)
        long = give(session, charter, purpose_id="energy-observatory")
        move_to(start + timedelta(days=10, seconds=1))
        counts = service.sweep(session)
        assert service.sweep(session) == {"expired": 0, "superseded": 0}  # idempotent
    assert counts["expired"] == 1
    assert short.status is ConsentStatus.EXPIRED
    assert long.status is ConsentStatus.GIVEN
    assert service.dpv_status(short) == "dpv:ConsentExpired"


def test_a_terms_change_supersedes_after_the_grace_period_and_unchanged_purposes_carry_over(
    session, charter
):
    start = utcnow()
    with frozen(start) as move_to:
        changed = give(session, charter, purpose_id="energy-coaching")
        unchanged = give(session, charter, purpose_id="energy-observatory")
        move_to(start + timedelta(days=1))
        v2, _ = charters.load(session, CHARTER_V2.read_text(encoding="utf-8"))
        diff = charters.diff_versions(session, charter.version, v2.version)
        assert list(diff.changed) == ["energy-coaching"]
        grace = v2.row.supersede_grace_days
        move_to(start + timedelta(days=1 + grace) - timedelta(seconds=1))
        assert service.sweep(session)["superseded"] == 0  # still within the grace period
        move_to(start + timedelta(days=1 + grace, seconds=1))
        assert service.sweep(session)["superseded"] == 1
    assert changed.status is ConsentStatus.SUPERSEDED
    assert service.dpv_status(changed) == "dpv:ConsentInvalidated"
    assert unchanged.status is ConsentStatus.GIVEN


def test_renewing_under_the_new_terms_saves_a_consent_from_supersession(session, charter):
    start = utcnow()
    with frozen(start) as move_to:
        consent = give(session, charter, purpose_id="energy-coaching")
        v2, _ = charters.load(session, CHARTER_V2.read_text(encoding="utf-8"))
        new_terms = terms_hash(v2.require_purpose("energy-coaching"))
        service.renew(
            session,
            service.RenewConsent(
                subject_id=consent.subject_id, consent_id=consent.id, terms_hash=new_terms
            ),
        )
        move_to(start + timedelta(days=v2.row.supersede_grace_days + 1))
        service.sweep(session)
    assert consent.status is ConsentStatus.GIVEN
    assert consent.charter_version == v2.version


def test_the_stored_state_is_the_projection_of_the_events(session, charter):
    consent = give(session, charter)
    service.withdraw(session, subject_id=consent.subject_id, consent_id=consent.id, method="api")
    replayed = service.replay(consent.events)
    assert replayed["status"] is consent.status
    assert replayed["expires_at"] == consent.expires_at
    assert replayed["withdrawn_at"] == consent.withdrawn_at


def test_consent_events_cannot_be_rewritten(session, charter):
    consent = give(session, charter)
    session.commit()
    with pytest.raises(DBAPIError):
        session.execute(
            text("UPDATE consent_event SET method = 'forged' WHERE consent_id = :id"),
            {"id": consent.id.hex if session.bind.dialect.name == "sqlite" else consent.id},
        )
    session.rollback()
    with pytest.raises(DBAPIError):
        session.execute(text("DELETE FROM audit_entry"))
    session.rollback()


def test_jsonld_export_speaks_dpv_and_iso_27560(session, charter):
    consent = give(session, charter)
    record = service.to_jsonld(consent, charter.doc)
    assert record["@type"] == "dpv:ConsentRecord"
    assert record["dpv:hasConsentStatus"] == {"@id": "dpv:ConsentGiven"}
    assert record["dpv:hasLegalBasis"] == {"@id": "dpv:ExplicitlyExpressedConsent"}
    assert record["dpv:hasDataSubject"]["@id"].endswith(str(consent.subject_id))
    assert len(record["tiers:events"]) == 1
    everything = service.export_all(session, consent.subject_id)
    assert [r["@id"] for r in everything["@graph"]] == [f"urn:uuid:{consent.id}"]


def test_consents_are_listed_only_for_their_subject(session, charter):
    mine = give(session, charter)
    give(session, charter)
    assert [c.id for c in service.list_for_subject(session, mine.subject_id)] == [mine.id]
    assert (
        service.list_for_subject(session, mine.subject_id, statuses=[ConsentStatus.WITHDRAWN]) == []
    )


def test_a_new_consent_is_in_the_session_as_if_loaded_and_its_history_goes_on(session, charter):
    consent = give(session, charter)
    assert sa_inspect(consent).persistent
    assert sa_inspect(consent.events[0]).persistent
    assert consent not in session.dirty
    assert consent not in session.new
    assert session.get(Consent, consent.id) is consent
    service.withdraw(session, subject_id=consent.subject_id, consent_id=consent.id, method="api")
    session.commit()
    stored = session.scalars(
        select(ConsentEvent.seq).where(ConsentEvent.consent_id == consent.id)
    ).all()
    assert sorted(stored) == [1, 2]
    assert session.scalar(select(Consent.status).where(Consent.id == consent.id)) == (
        ConsentStatus.WITHDRAWN
    )


def test_giving_a_consent_takes_a_bounded_number_of_statements(session, charter):
    charters.current(session)  # the charter in force, parsed and cached by an earlier request
    first = give(session, charter, purpose_id="energy-observatory")  # their audit keys exist
    engine = session.get_bind().engine
    with sql_statements(engine) as seen:
        give(session, charter, subject_id=first.subject_id)
    statements = [s.split(None, 1)[0].upper() for s in seen]
    # charter id, audit (on PostgreSQL one statement: this process knows the end of the
    # citizen's chain; on SQLite a lock, the entry, its detail and the chain), outbox, and the
    # consent with its event (one statement on PostgreSQL, two on SQLite)
    assert len(statements) == (4 if engine.dialect.name == "postgresql" else 8), statements
