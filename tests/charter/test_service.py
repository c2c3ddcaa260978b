"""The charter in force, read on every consent: cached per version, never stale."""

from __future__ import annotations

from charter import document
from charter import service as charters
from charter.notice import notice_hash
from tests.conftest import CHARTER, CHARTER_V2, sql_statements


def test_a_newly_published_version_is_in_force_at_once(session, charter):
    assert charters.current(session).version == charter.version  # cached from here on
    v2, created = charters.load(session, CHARTER_V2.read_text(encoding="utf-8"))
    assert created
    in_force = charters.current(session)
    assert in_force.version == v2.version != charter.version
    assert in_force.row.terms_hashes == v2.row.terms_hashes
    assert in_force.doc.version == v2.version


def test_reading_the_current_charter_again_is_one_query_and_no_parsing(
    session, charter, monkeypatch
):
    first = charters.current(session)

    def no_parse(_source: str) -> document.CharterDocument:
        raise AssertionError("the charter in force was parsed again")

    monkeypatch.setattr(document, "parse", no_parse)
    with sql_statements(session.get_bind().engine) as statements:
        again = charters.current(session)
    assert again.doc is first.doc
    assert len(statements) == 1
    assert "charter_version" in statements[0]


def test_the_cached_row_holds_every_column_even_the_deferred_ones(session, charter):
    row = charters.current(session).row
    assert row.document == document.to_dict(charter.doc)
    assert row.source_yaml == CHARTER.read_text(encoding="utf-8")
    assert row.published_at.tzinfo is not None


def test_the_cached_hashes_are_the_charter_functions_hashes(session, charter):
    current = charters.current(session)
    for purpose in current.doc.purposes:
        assert current.terms_hash(purpose) == document.terms_hash(purpose)
        for lang in ("fr", "en"):
            assert current.notice_hash(purpose, lang) == notice_hash(current.doc, purpose, lang)
        # any other language reads the French notice, as notice_text does
        assert current.notice_hash(purpose, "de") == notice_hash(current.doc, purpose, "fr")


def test_before_any_publication_there_is_no_current_charter(session):
    assert charters.current_or_none(session) is None
