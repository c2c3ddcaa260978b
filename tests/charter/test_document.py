"""The charter document: validation errors with paths, hashes, notices, diffs."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import rfc8785
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from charter.diff import FieldChange, diff
from charter.document import (
    CharterDocument,
    CharterInvalidError,
    Text,
    canonical_bytes,
    document_hash,
    from_dict,
    parse,
    terms_hash,
    terms_hashes,
    to_dict,
)
from charter.notice import notice_hash, notice_text
from common.errors import InvalidInputError

EXAMPLES = Path(__file__).parents[2] / "examples"
V1 = (EXAMPLES / "charter.yaml").read_text(encoding="utf-8")
V2 = (EXAMPLES / "charter-v2.yaml").read_text(encoding="utf-8")

BROKEN = """\
version: "2026.1"
effective_from: 2026-01-01
territory:
  name: "Pays de Test"
  code: "CA-TST"
  colour: blue
data_categories:
  - id: energy.electricity.daily
    title: {fr: "Électricité quotidienne", en: "Daily electricity"}
    sensitivity: medium
reuser_categories:
  - id: company
    title: {fr: "Entreprises", en: "Companies"}
purposes:
  - id: coaching
    title: {en: "Coaching"}
    description: {fr: "Conseils.", en: "Advice."}
    citizen_keeps: {fr: "Le retrait.", en: "Withdrawal."}
    data_categories: [energy.electricity.daily]
    reuser_categories: [compagny]
    recipients: named
    modes: [individual, telepathy]
    retention_days: 365
    approval: auto
    consent_max_days: 365
  - id: coaching
    title: {fr: "Encore", en: "Again"}
    description: {fr: "Conseils.", en: "Advice."}
    citizen_keeps: {fr: "Le retrait.", en: "Withdrawal."}
    data_categories: [energy.electricity.daily]
    reuser_categories: [company]
    recipients: category
    modes: [aggregate]
    retention_days: 365
    approval: auto
    consent_max_days: 365
privacy:
  unit: citizen
  period: year
  rho_per_period: "1.0"
  rho_cap_per_release: "2"
  min_cohort: 10
"""


@pytest.fixture(scope="module")
def v1() -> CharterDocument:
    return parse(V1)


@pytest.fixture(scope="module")
def v2() -> CharterDocument:
    return parse(V2)


def errors_of(text: str) -> list[str]:
    with pytest.raises(CharterInvalidError) as caught:
        parse(text)
    return caught.value.errors


def with_change(doc: CharterDocument, change: Any) -> dict[str, Any]:
    """to_dict(doc), modified in place by `change`, for building invalid variants."""
    data = to_dict(doc)
    change(data)
    return data


def test_the_demo_charter_parses_with_its_purposes_and_districts(v1: CharterDocument) -> None:
    assert v1.version == "2026.1"
    assert [p.id for p in v1.purposes] == [
        "energy-observatory",
        "energy-coaching",
        "mobility-planning",
        "carbon-aggregator",
        "social-aid-simulation",
        "research",
    ]
    assert len(v1.territory.partitions["districts"]) == 20
    assert v1.privacy.rho_cap_per_release == Decimal("0.25")
    coaching = v1.purpose("energy-coaching")
    assert coaching is not None
    assert [r.id for r in coaching.named_reusers] == ["ecowatt-conseil", "alec-brevanne"]
    assert v1.purpose("nothing") is None
    assert v1.data_category("mobility.trips") is not None
    assert v1.reuser_category("company") is not None


def test_an_invalid_charter_lists_every_error_with_its_path_in_document_order() -> None:
    assert errors_of(BROKEN) == [
        "territory.colour: Unknown field.",
        "purposes[0].title.fr: Missing data for required field.",
        'purposes[0].reuser_categories[0]: unknown category "compagny"',
        "purposes[0].modes[1]: Must be one of: individual, aggregate.",
        'purposes[0].named_reusers: required when recipients is "named"',
        'purposes[1].id: duplicate id "coaching" (already used by purposes[0])',
        "privacy.rho_cap_per_release: must not exceed rho_per_period (1)",
    ]


def test_the_error_carries_a_count_and_per_field_messages() -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse(BROKEN)
    error = caught.value
    assert error.detail == "The charter is not valid: 7 errors."
    assert error.fields["territory.colour"] == ["Unknown field."]
    assert error.fields["purposes[0].reuser_categories[0]"] == ['unknown category "compagny"']


def test_a_yaml_syntax_error_gives_its_line_number() -> None:
    assert errors_of('version: "1"\nterritory: a: b\n') == [
        "line 2: could not parse YAML: mapping values are not allowed here"
    ]
    lines = V1.splitlines()
    lines[40] = "  oops: [unclosed"
    (error,) = errors_of("\n".join(lines))
    assert error.startswith("line ")
    assert int(error.split(":")[0].removeprefix("line ")) > 40


def test_a_control_character_is_a_yaml_error_with_its_line() -> None:
    assert errors_of('version: "1"\nterritory: \x1f\n') == [
        "line 2: could not parse YAML: special characters are not allowed"
    ]


def test_an_impossible_date_is_a_yaml_error_with_its_line() -> None:
    (error,) = errors_of('version: "1"\neffective_from: 2026-13-01\n')
    assert error.startswith("line 2: could not parse YAML: month must be in 1..12")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("just a sentence", "a string"),
        ("- a\n- b\n", "a list"),
        ("", "nothing"),
        ("4.2", "a number"),
    ],
)
def test_a_document_that_is_not_a_mapping_is_refused(text: str, kind: str) -> None:
    assert errors_of(text) == [f"(root): the charter must be a mapping of keys, got {kind}"]


def test_a_duplicated_yaml_key_is_reported_instead_of_silently_kept() -> None:
    text = V1.replace("  min_cohort: 10\n", "  min_cohort: 10\n  min_cohort: 5\n")
    (error,) = errors_of(text)
    assert error.startswith("privacy.min_cohort: duplicate key (first on line ")


@settings(max_examples=150, database=None, deadline=None)
@given(st.text())
def test_any_text_gives_a_charter_or_a_charter_error_never_a_traceback(text: str) -> None:
    errors = ["(accepted)"]
    try:
        parse(text)
    except CharterInvalidError as exc:
        errors = exc.errors
    assert errors


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)


@settings(max_examples=150, database=None, deadline=None)
@given(JSON_VALUES, st.sampled_from(["version", "territory", "purposes", "privacy", "modes"]))
def test_any_value_in_any_place_gives_a_charter_error(value: Any, key: str) -> None:
    data = to_dict(parse(V1))
    if key == "modes":
        data["purposes"][0]["modes"] = value
    else:
        data[key] = value
    errors = ["(accepted)"]
    try:
        from_dict(data)
    except CharterInvalidError as exc:
        errors = exc.errors
    assert errors


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["purposes"][1].update(recipients="category"),
            'purposes[1].named_reusers: must be empty when recipients is "category"',
        ),
        (
            lambda d: d["purposes"][1]["named_reusers"][0].update(category="research"),
            'purposes[1].named_reusers[0].category: "research" is not one of this '
            "purpose's reuser_categories",
        ),
        (
            lambda d: d["purposes"][0]["data_categories"].append("energy.water"),
            'purposes[0].data_categories[3]: unknown data category "energy.water"',
        ),
        (
            lambda d: d["purposes"][0]["modes"].append("aggregate"),
            'purposes[0].modes[1]: "aggregate" is listed twice',
        ),
        (
            lambda d: d["territory"]["partitions"]["districts"][1].update(id="D01"),
            'territory.partitions.districts[1].id: duplicate id "D01" '
            "(already used by territory.partitions.districts[0])",
        ),
        (
            lambda d: d["territory"]["partitions"]["districts"][1].update(name=""),
            "territory.partitions.districts[1].name: Must not be empty.",
        ),
        (
            lambda d: d["data_categories"][0]["title"].update(en="   "),
            "data_categories[0].title.en: Must not be empty.",
        ),
        (
            lambda d: d.update(version="2026 1"),
            "version: Must be 1 to 32 characters among A-Z a-z 0-9 . _ -.",
        ),
        (
            lambda d: d.update(effective_from="1/1/2026"),
            "effective_from: Not a valid date (expected YYYY-MM-DD).",
        ),
        (
            lambda d: d.update(supersede_grace_days=400),
            "supersede_grace_days: "
            "Must be greater than or equal to 0 and less than or equal to 365.",
        ),
        (
            lambda d: d["purposes"][0].update(retention_days="365"),
            "purposes[0].retention_days: Not a valid integer.",
        ),
        (
            lambda d: d["purposes"][0].update(consent_max_days=True),
            "purposes[0].consent_max_days: Not a valid integer.",
        ),
        (
            lambda d: d["purposes"][0].update(reuser_categories=[]),
            "purposes[0].reuser_categories: Shorter than minimum length 1.",
        ),
        (
            lambda d: d["privacy"].update(rho_per_period="-1"),
            "privacy.rho_per_period: Must be > 0.",
        ),
        (
            lambda d: d["privacy"].update(rho_per_period="lots"),
            "privacy.rho_per_period: Not a valid decimal.",
        ),
        (lambda d: d["privacy"].update(unit="household"), "privacy.unit: Must be one of: citizen."),
    ],
)
def test_each_rule_is_reported_at_its_path(v1: CharterDocument, change: Any, expected: str) -> None:
    with pytest.raises(CharterInvalidError) as caught:
        from_dict(with_change(v1, change))
    assert expected in caught.value.errors
    assert caught.value.errors == sorted(set(caught.value.errors), key=caught.value.errors.index)


def test_the_hash_ignores_key_order_comments_and_layout(v1: CharterDocument) -> None:
    def reversed_keys(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: reversed_keys(v) for k, v in reversed(value.items())}
        if isinstance(value, list):
            return [reversed_keys(v) for v in value]
        return value

    raw = yaml.safe_load(V1)
    relaid = yaml.safe_dump(reversed_keys(raw), sort_keys=False, allow_unicode=True, width=60)
    assert "#" not in relaid.splitlines()[0]
    assert document_hash(parse(relaid)) == document_hash(v1)
    assert document_hash(parse(V1)) == document_hash(v1)


def test_the_hash_changes_with_the_content(v1: CharterDocument) -> None:
    bumped = from_dict(with_change(v1, lambda d: d["privacy"].update(min_cohort=11)))
    assert document_hash(bumped) != document_hash(v1)


def test_canonical_bytes_are_rfc_8785_of_the_normal_form(v1: CharterDocument) -> None:
    assert canonical_bytes(v1) == rfc8785.dumps(json.loads(json.dumps(to_dict(v1))))
    assert b'"rho_per_period":"1"' in canonical_bytes(v1)


def test_the_normal_form_round_trips_and_fills_defaults(v1: CharterDocument) -> None:
    data = to_dict(v1)
    assert json.loads(json.dumps(data)) == data
    assert from_dict(data) == v1
    del data["supersede_grace_days"]
    assert to_dict(from_dict(data))["supersede_grace_days"] == 30


def test_modes_have_one_normal_form_whatever_their_order(v1: CharterDocument) -> None:
    both = with_change(v1, lambda d: d["purposes"][0].update(modes=["aggregate", "individual"]))
    again = with_change(v1, lambda d: d["purposes"][0].update(modes=["individual", "aggregate"]))
    assert terms_hash(from_dict(both).purposes[0]) == terms_hash(from_dict(again).purposes[0])


def test_terms_hashes_differ_only_for_the_purpose_whose_terms_changed(
    v1: CharterDocument, v2: CharterDocument
) -> None:
    old, new = terms_hashes(v1), terms_hashes(v2)
    assert list(old) == list(new)
    assert [pid for pid in old if old[pid] != new[pid]] == ["energy-coaching"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", Text(fr="Autre", en="Other")),
        ("data_categories", ("energy.gas.daily",)),
        ("reuser_categories", ("association",)),
        ("modes", ("individual", "aggregate")),
        ("retention_days", 366),
        ("approval", "committee"),
        ("consent_max_days", 180),
    ],
)
def test_every_term_of_a_purpose_is_in_its_terms_hash(
    v1: CharterDocument, field: str, value: Any
) -> None:
    purpose = v1.purposes[1]
    assert terms_hash(dataclasses.replace(purpose, **{field: value})) != terms_hash(purpose)
    assert terms_hash(dataclasses.replace(purpose)) == terms_hash(purpose)


def test_the_diff_of_the_two_demo_versions_is_one_retention_change(
    v1: CharterDocument, v2: CharterDocument
) -> None:
    changes = diff(v1, v2)
    assert changes.changed == {"energy-coaching": (FieldChange("retention_days", 365, 730),)}
    assert changes.added == ()
    assert changes.removed == ()
    assert changes.other_changes == ()
    assert len(changes.unchanged) == 5
    assert v2.supersede_grace_days == 30
    lines = changes.summary_lines()
    assert lines[0] == "~ energy-coaching: retention_days 365 -> 730"
    assert "= mobility-planning (unchanged)" in lines


def test_the_diff_names_added_removed_and_other_changes(v1: CharterDocument) -> None:
    def change(d: dict[str, Any]) -> None:
        d["purposes"][0]["id"] = "energy-observatory-2"
        d["purposes"][2]["title"]["fr"] = "Planifier les mobilités"
        d["privacy"]["rho_per_period"] = "2"
        d["data_categories"][1]["title"]["en"] = "Electricity per day"
        d["supersede_grace_days"] = 60

    changes = diff(v1, from_dict(with_change(v1, change)))
    assert changes.added == ("energy-observatory-2",)
    assert changes.removed == ("energy-observatory",)
    assert changes.changed == {
        "mobility-planning": (
            FieldChange("title.fr", "Planification des mobilités", "Planifier les mobilités"),
        )
    }
    assert [c.path for c in changes.other_changes] == [
        "supersede_grace_days",
        "data_categories[energy.electricity.daily].title.en",
        "privacy.rho_per_period",
    ]
    lines = changes.summary_lines()
    assert "+ energy-observatory-2" in lines
    assert "- energy-observatory" in lines
    assert '~ charter: privacy.rho_per_period "1" -> "2"' in lines


def test_the_notice_says_what_who_how_long_in_each_language(v1: CharterDocument) -> None:
    coaching = v1.purpose("energy-coaching")
    assert coaching is not None
    fr, en = notice_text(v1, coaching, "fr"), notice_text(v1, coaching, "en")
    assert fr != en
    assert "Vos données sont conservées 365 jours." in fr
    assert "Your data is kept for 365 days." in en
    assert "Votre consentement est valable 365 jours au plus." in fr
    assert "EcoWatt Conseil" in fr
    assert "pseudonymisés" in fr
    assert "pseudonymised" in en
    assert "Version 2026.1 de la charte, applicable à partir du 1er janvier 2026." in fr
    assert "Charter version 2026.1, effective from 1 January 2026." in en
    assert coaching.citizen_keeps.fr in fr


def test_an_aggregate_notice_promises_only_protected_statistics(v1: CharterDocument) -> None:
    observatory = v1.purpose("energy-observatory")
    assert observatory is not None
    fr = notice_text(v1, observatory, "fr")
    assert "confidentialité différentielle" in fr
    assert "au moins 10 personnes" in fr
    assert "Services publics" in fr
    assert "pseudonymisés" not in fr


def test_the_notice_hash_is_stable_and_depends_on_the_language(v1: CharterDocument) -> None:
    purpose = v1.purposes[0]
    assert notice_hash(v1, purpose, "fr") == notice_hash(parse(V1), purpose, "fr")
    assert notice_hash(v1, purpose, "fr") != notice_hash(v1, purpose, "en")
    assert notice_text(v1, purpose, "de") == notice_text(v1, purpose, "fr")


def test_a_text_falls_back_to_french() -> None:
    text = Text(fr="Bonjour", en="Hello")
    assert text.get("en") == "Hello"
    assert text.get("fr") == "Bonjour"
    assert text.get("es") == "Bonjour"


def test_recipient_ids_are_the_named_reusers_or_else_the_reuser_categories() -> None:
    doc = parse(V1)
    named = doc.purpose("energy-coaching")
    by_category = doc.purpose("social-aid-simulation")
    assert named is not None
    assert by_category is not None
    assert named.recipient_ids == tuple(r.id for r in named.named_reusers)
    assert by_category.recipient_ids == ("public_service",)
