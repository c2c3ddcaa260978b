"""audit.service.browse: auditors' filters, pages, CSV and verification; a citizen's entries."""

from __future__ import annotations

import dataclasses
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import select

from audit import notes
from audit import service as audit
from audit.models import AuditEntry, AuditorAccount
from audit.service import browse
from broker.audit_directory import AuditDirectory
from common.clock import frozen
from common.errors import InvalidInputError, NotFoundError
from tests.consent.test_service import give

DIRECTORY = AuditDirectory()


def parse(session: Any, **raw: str) -> browse.Filters:
    return browse.parse_filters(session, raw, DIRECTORY)


def events(page: browse.Page) -> list[str]:
    return [r.event for r in page.rows]


# -- filters -------------------------------------------------------------------------------


def test_unknown_filters_bad_dates_and_bad_tags_are_refused_per_field(session, charter):
    with pytest.raises(InvalidInputError) as caught:
        parse(
            session,
            colour="blue",
            since="yesterday",
            until="2026-13-01",
            subject="XYZ",
            organisation="no-such-org",
            actor="a" * 129,
        )
    assert set(caught.value.fields) == {
        "colour",
        "since",
        "until",
        "subject",
        "organisation",
        "actor",
    }


def test_an_empty_or_reversed_period_is_refused(session):
    with pytest.raises(InvalidInputError) as caught:
        parse(session, since="2026-05-02", until="2026-05-01")
    assert set(caught.value.fields) == {"until"}


def test_a_date_until_includes_that_whole_day_and_naive_times_are_utc(session):
    found = parse(session, since="2026-05-01T10:00", until="2026-05-01", event=" ", purpose="")
    assert found.since == datetime(2026, 5, 1, 10, tzinfo=UTC)
    assert found.until == datetime(2026, 5, 2, tzinfo=UTC)
    assert found.given == {"since": "2026-05-01T10:00", "until": "2026-05-01"}  # blanks ignored
    offset = parse(session, since="2026-05-01T12:00:00+02:00")
    assert offset.since == datetime(2026, 5, 1, 10, tzinfo=UTC)


def test_the_last_day_of_the_calendar_is_an_error_not_a_crash(session):
    with pytest.raises(InvalidInputError) as caught:
        parse(session, until="9999-12-31")
    assert set(caught.value.fields) == {"until"}


# -- browsing --------------------------------------------------------------------------------


@pytest.fixture
def logged(session, make_client):
    """A small log: two organisations' clients, a citizen, a release naming a dataset."""
    energy = make_client("reuser", slug="energy-lab")
    other = make_client("reuser", slug="other-lab")
    citizen = uuid.uuid4()
    dataset = str(uuid.uuid4())
    start = datetime(2026, 5, 1, 9, tzinfo=UTC)
    with frozen(start):
        audit.append(
            session,
            event="oauth:token:issue",
            actor=f"client:{energy.client_id}",
            subject_id=citizen,
            purpose="energy-coaching",
            detail={"dataset_id": dataset},  # a citizen's detail: encrypted, never matched
        )
    with frozen(start + timedelta(days=1)):
        audit.append(
            session,
            event="anonymize:release:create",
            actor=f"client:{other.client_id}",
            purpose="mobility-stats",
            detail={"dataset_id": dataset, "cells": 4},
        )
    with frozen(start + timedelta(days=2)):
        audit.append(session, event="admin:organisation:create", actor="org:energy-lab")
    session.commit()
    tag = audit.subject_tag(session, citizen)
    return {"energy": energy, "other": other, "citizen": citizen, "tag": tag, "dataset": dataset}


def test_each_filter_narrows_the_entries(session, logged):
    everything = browse.browse(session, parse(session), page=1)
    assert events(everything)[:3] == [
        "admin:organisation:create",
        "anonymize:release:create",
        "oauth:token:issue",
    ]  # newest first
    cases = {
        "organisation": ("energy-lab", {"oauth:token:issue", "admin:organisation:create"}),
        "actor": (f"client:{logged['other'].client_id}", {"anonymize:release:create"}),
        "event": ("oauth:token", {"oauth:token:issue"}),
        "purpose": ("mobility-stats", {"anonymize:release:create"}),
        "subject": (logged["tag"], {"oauth:token:issue"}),
        "dataset": (logged["dataset"], {"anonymize:release:create"}),
        "since": ("2026-05-02", {"anonymize:release:create", "admin:organisation:create"}),
        "until": ("2026-05-01", {"oauth:token:issue"}),
    }
    for name, (value, expected) in cases.items():
        found = browse.browse(session, parse(session, **{name: value}), page=1)
        assert set(events(found)) == expected, name


def test_an_event_filter_matches_whole_name_parts_only(session, logged):
    assert browse.browse(session, parse(session, event="oauth:tok"), page=1).total == 0


def test_pages_are_counted_and_a_page_past_the_end_is_an_input_error(session):
    for i in range(7):
        audit.append(session, event="test:browse:page", actor="test", reason=str(i))
    session.commit()
    filters = parse(session, event="test:browse:page")
    first = browse.browse(session, filters, page=1, per_page=3)
    last = browse.browse(session, filters, page=3, per_page=3)
    assert (first.total, first.pages) == (7, 3)
    assert [r.reason for r in first.rows] == ["6", "5", "4"]
    assert [r.reason for r in last.rows] == ["0"]
    for bad in (0, 4):
        with pytest.raises(InvalidInputError) as caught:
            browse.browse(session, filters, page=bad, per_page=3)
        assert set(caught.value.fields) == {"page"}


def test_a_citizens_detail_stays_encrypted_on_the_auditors_page(session, logged):
    rows = browse.browse(session, parse(session, subject=logged["tag"]), page=1).rows
    assert rows[0].encrypted
    assert rows[0].detail is None
    release = browse.browse(session, parse(session, event="anonymize"), page=1).rows[0]
    assert not release.encrypted
    assert logged["dataset"] in (release.detail or "")


# -- verification ----------------------------------------------------------------------------


def test_sealed_rows_verify_against_the_signed_checkpoint(session, logged):
    page = browse.browse(session, parse(session), page=1)
    assert page.verification.checkpoint_ok
    assert page.verification.size == audit.signed_size(session)
    assert {page.verification.status(r.id) for r in page.rows} == {"verified"}


def test_rows_not_yet_covered_by_a_signed_checkpoint_say_so(session, logged):
    # Not committed yet, so not integrated: it has no index.
    entry_id = audit.append(session, event="test:browse:late", actor="test")
    session.flush()
    page = browse.browse(session, parse(session, event="test:browse:late"), page=1)
    row = page.rows[0]
    assert row.id == entry_id
    assert row.index is None
    assert page.verification.status(row.id) == "unsealed"


def test_a_leaf_that_differs_from_the_tree_fails_verification(session, logged):
    row = browse.browse(session, parse(session), page=1).rows[0]
    forged = dataclasses.replace(row, id=uuid.uuid4(), leaf=row.leaf.replace(b"energy", b"enerGY"))
    assert forged.leaf != row.leaf
    verification = browse.verify_rows(session, [row, forged])
    assert verification.statuses == {row.id: "verified", forged.id: "failed"}


def test_a_checkpoint_that_does_not_open_with_the_log_key_fails_everything(
    session, logged, monkeypatch
):
    stranger = notes.verifier_key(audit.log_origin(), notes.generate_log_key().public_key())
    monkeypatch.setattr(browse, "log_key", lambda: stranger)
    page = browse.browse(session, parse(session), page=1)
    assert not page.verification.checkpoint_ok
    assert page.verification.problem
    assert {page.verification.status(r.id) for r in page.rows} == {"failed"}


def test_an_empty_log_has_nothing_verified_and_no_error(session):
    verification = browse.verify_rows(session, [])
    assert verification.statuses == {}


# -- CSV -------------------------------------------------------------------------------------


def test_the_csv_export_holds_the_filtered_entries_with_organisation_names(session, logged):
    text = browse.to_csv(session, parse(session, organisation="energy-lab"), DIRECTORY)
    frame = pd.read_csv(io.StringIO(text))
    assert list(frame["event"]) == ["oauth:token:issue", "admin:organisation:create"]
    assert set(frame["organisation"]) == {"Organisation reuser"}
    assert frame["detail"].iloc[0] == "encrypted"
    assert frame["index"].dtype.kind == "i"
    assert len(frame.columns) == 13


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(session):
    audit.append(session, event="test:csv:formula", actor="test", reason="=HYPERLINK(1)")
    session.commit()
    text = browse.to_csv(session, parse(session, event="test:csv:formula"))
    frame = pd.read_csv(io.StringIO(text))
    assert frame["reason"][0] == "'=HYPERLINK(1)"


def test_an_export_larger_than_the_bound_is_refused(session, logged):
    with pytest.raises(InvalidInputError):
        browse.to_csv(session, parse(session), DIRECTORY, limit=1)


# -- the API's keyset pages -------------------------------------------------------------------


def test_sealed_entries_page_through_the_filtered_log_in_index_order(session):
    for i in range(5):
        audit.append(session, event="test:keyset:odd" if i % 2 else "test:keyset:even", actor="t")
    session.commit()
    filters = parse(session, event="test:keyset:even")
    size, first, after = browse.sealed_entries(session, filters, start=0, limit=2)
    assert len(first) == 2
    assert after == first[-1].index + 1
    _, rest, done = browse.sealed_entries(session, filters, start=after, limit=2)
    assert len(rest) == 1
    assert done is None
    assert size == audit.signed_size(session)
    assert browse.sealed_entries(session, filters, start=size, limit=2) == (size, [], None)


# -- a citizen's own entries ------------------------------------------------------------------


def test_a_citizen_sees_purpose_title_legal_basis_categories_and_organisation_name(
    session, charter, make_client
):
    subject = uuid.uuid4()
    consent = give(session, charter, subject_id=subject)
    energy = make_client("reuser", slug="energy-lab")
    audit.append(
        session,
        event="oauth:token:introspect",
        actor=f"client:{energy.client_id}",
        subject_id=subject,
        consent_id=consent.id,
        purpose="energy-coaching",
    )
    session.commit()
    entries = browse.citizen_entries(session, subject, DIRECTORY, "fr")
    access = entries[0]
    assert access.kind == "access"
    assert access.organisation == "Organisation reuser"
    assert access.purpose_title == "Accompagnement personnalisé aux économies d'énergie"
    assert access.legal_basis == consent.legal_basis
    assert set(access.data_categories) == set(consent.data_categories)
    assert access.readable
    assert entries[-1].entry.event == "consent:consent:give"
    assert entries[-1].kind == "decision"
    english = browse.citizen_entries(session, subject, DIRECTORY, "en")[0]
    assert english.purpose_title != access.purpose_title


def test_a_citizen_never_sees_another_citizens_entry(session):
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    audit.append(session, event="test:own:mine", actor="test", subject_id=mine)
    other = audit.append(session, event="test:own:theirs", actor="test", subject_id=theirs)
    session.commit()
    assert [e.entry.event for e in browse.citizen_entries(session, mine, DIRECTORY, "fr")] == [
        "test:own:mine"
    ]
    with pytest.raises(NotFoundError):
        browse.citizen_entry(session, mine, other)
    assert browse.citizen_entry(session, theirs, other).id == other


def test_an_erased_citizen_has_no_entries_and_the_log_still_verifies(session):
    subject = uuid.uuid4()
    audit.append(session, event="test:erase:before", actor="test", subject_id=subject)
    session.commit()
    audit.erase_subject(session, subject)
    session.commit()
    assert browse.citizen_entries(session, subject, DIRECTORY, "fr") == []
    page = browse.browse(session, parse(session, event="test:erase"), page=1)
    assert {page.verification.status(r.id) for r in page.rows} == {"verified"}


def test_detail_that_no_longer_decrypts_lists_the_entries_without_it(session, monkeypatch):
    subject = uuid.uuid4()
    audit.append(
        session, event="test:damaged:one", actor="test", subject_id=subject, detail={"a": 1}
    )
    session.commit()

    def damaged(session: Any, subject_id: uuid.UUID) -> Any:
        raise InvalidTag

    monkeypatch.setattr(browse, "entries_for_subject", damaged)
    entries = browse.citizen_entries(session, subject, DIRECTORY, "fr")
    assert [e.entry.event for e in entries] == ["test:damaged:one"]
    assert not entries[0].readable
    assert entries[0].entry.detail is None


# -- auditor accounts --------------------------------------------------------------------------


def test_adding_an_auditor_is_idempotent_and_logged(session):
    citizen_id, subject_id = uuid.uuid4(), uuid.uuid4()
    first = browse.add_auditor(
        session, citizen_id=citizen_id, subject_id=subject_id, organisation="cnil"
    )
    again = browse.add_auditor(
        session, citizen_id=citizen_id, subject_id=subject_id, organisation=None
    )
    session.commit()
    assert again.id == first.id
    assert browse.auditor_account(session, citizen_id).organisation == "cnil"
    assert session.scalars(select(AuditorAccount)).all() == [first]
    logged = session.scalars(
        select(AuditEntry.event).where(AuditEntry.event == "audit:auditor:add")
    ).all()
    assert logged == ["audit:auditor:add"]


def test_a_citizens_page_holds_the_newest_entries_first(session):
    subject = uuid.uuid4()
    for i in range(5):
        audit.append(
            session, event="test:mine:page", actor="test", subject_id=subject, reason=str(i)
        )
    session.commit()
    first = browse.citizen_page(session, subject, DIRECTORY, "fr", page=1, per_page=2)
    last = browse.citizen_page(session, subject, DIRECTORY, "fr", page=3, per_page=2)
    assert (first.total, first.pages) == (5, 3)
    assert [e.entry.reason for e in first.entries] == ["4", "3"]
    assert [e.entry.reason for e in last.entries] == ["0"]
    with pytest.raises(InvalidInputError):
        browse.citizen_page(session, subject, DIRECTORY, "fr", page=4, per_page=2)
    nobody = browse.citizen_page(session, uuid.uuid4(), DIRECTORY, "fr", page=1)
    assert (nobody.entries, nobody.pages) == ([], 1)
