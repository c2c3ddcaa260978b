"""The charter's ODRL 2.2 JSON-LD export: one Set per purpose, with its constraints and duties."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from charter.document import CharterDocument, parse, terms_hash
from charter.odrl import ODRL_CONTEXT, to_odrl

BASE = "https://tiers.example.org"
DEMO = Path(__file__).parents[2] / "examples" / "charter.yaml"


@pytest.fixture(scope="module")
def doc() -> CharterDocument:
    return parse(DEMO.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def odrl(doc: CharterDocument) -> dict[str, Any]:
    return to_odrl(doc, base_url=BASE)


def policy(odrl: dict[str, Any], purpose_id: str) -> dict[str, Any]:
    uid = f"{BASE}/api/v1/charter/versions/2026.1/odrl#{purpose_id}"
    (found,) = [p for p in odrl["@graph"] if p["uid"] == uid]
    return found


def constraint(permission: dict[str, Any], left: str) -> dict[str, Any]:
    (found,) = [c for c in permission["constraint"] if c["leftOperand"] == left]
    return found


def test_the_export_is_plain_json_with_the_odrl_context_and_our_prefixes(
    odrl: dict[str, Any],
) -> None:
    assert json.loads(json.dumps(odrl)) == odrl
    remote, local = odrl["@context"]
    assert remote == ODRL_CONTEXT == "http://www.w3.org/ns/odrl.jsonld"
    assert local["dpv"] == "https://w3id.org/dpv#"
    assert local["dct"] == "http://purl.org/dc/terms/"
    assert local["tiers"] == f"{BASE}/ns#"


def test_there_is_one_set_per_purpose_in_charter_order(
    doc: CharterDocument, odrl: dict[str, Any]
) -> None:
    graph = odrl["@graph"]
    assert [p["@type"] for p in graph] == ["Set"] * len(doc.purposes)
    assert [p["uid"].rsplit("#", 1)[1] for p in graph] == [p.id for p in doc.purposes]
    assert all(p["profile"] == f"{BASE}/ns" for p in graph)


def test_a_set_carries_titles_as_language_maps_and_the_terms_hash(
    doc: CharterDocument, odrl: dict[str, Any]
) -> None:
    coaching = doc.purpose("energy-coaching")
    assert coaching is not None
    exported = policy(odrl, "energy-coaching")
    assert exported["dct:title"] == {"fr": coaching.title.fr, "en": coaching.title.en}
    assert odrl["@context"][1]["dct:title"]["@container"] == "@language"
    assert exported["tiers:termsHash"] == terms_hash(coaching)


def test_the_permission_targets_the_data_categories_and_limits_purpose_and_retention(
    odrl: dict[str, Any],
) -> None:
    (permission,) = policy(odrl, "energy-coaching")["permission"]
    assert permission["action"] == "use"
    assert permission["target"] == [
        f"{BASE}/ns/data-categories/energy.electricity.load_curve",
        f"{BASE}/ns/data-categories/energy.electricity.daily",
        f"{BASE}/ns/data-categories/energy.gas.daily",
    ]
    assert constraint(permission, "purpose") == {
        "leftOperand": "purpose",
        "operator": "eq",
        "rightOperand": {"@id": f"{BASE}/ns/purposes/energy-coaching"},
    }
    retention = constraint(permission, "elapsedTime")
    assert retention["operator"] == "lteq"
    assert retention["rightOperand"]["@value"] == "P365D"
    assert constraint(permission, "tiers:mode")["rightOperand"] == [{"@id": "tiers:individual"}]


def test_named_recipients_are_parties_and_categories_are_party_collections(
    odrl: dict[str, Any],
) -> None:
    (named,) = policy(odrl, "energy-coaching")["permission"]
    assert [a["@type"] for a in named["assignee"]] == ["Party", "Party"]
    assert named["assignee"][0]["uid"] == f"{BASE}/ns/reusers/ecowatt-conseil"
    assert constraint(named, "recipient")["rightOperand"][1] == {
        "@id": f"{BASE}/ns/reusers/alec-brevanne"
    }
    (category,) = policy(odrl, "social-aid-simulation")["permission"]
    assert category["assignee"] == [
        {"@type": "PartyCollection", "uid": f"{BASE}/ns/reuser-categories/public_service"}
    ]


def test_an_anonymize_duty_is_present_iff_the_purpose_is_aggregate_only(
    doc: CharterDocument, odrl: dict[str, Any]
) -> None:
    for purpose in doc.purposes:
        (permission,) = policy(odrl, purpose.id)["permission"]
        assert ("duty" in permission) == (purpose.modes == ("aggregate",)), purpose.id
    (permission,) = policy(odrl, "energy-observatory")["permission"]
    (duty,) = permission["duty"]
    (action,) = duty["action"]
    assert action["rdf:value"] == {"@id": "odrl:anonymize"}
    refinements = {r["leftOperand"]: r["rightOperand"] for r in action["refinement"]}
    assert refinements["tiers:privacyModel"] == {"@id": "dpv:DifferentialPrivacy"}
    assert refinements["tiers:minCohort"]["@value"] == 10
    assert "differential privacy" in duty["dct:description"]["en"]


def test_a_trailing_slash_on_the_base_url_changes_nothing(doc: CharterDocument) -> None:
    assert to_odrl(doc, base_url=BASE + "/") == to_odrl(doc, base_url=BASE)


def test_the_export_expands_as_json_ld_when_a_library_is_installed(odrl: dict[str, Any]) -> None:
    jsonld = pytest.importorskip("pyld.jsonld")
    # No network in tests: the remote ODRL context is replaced by the few terms we rely on
    odrl_terms = {
        "@vocab": "http://www.w3.org/ns/odrl/2/",
        "odrl": "http://www.w3.org/ns/odrl/2/",
        "uid": "@id",
        "target": {"@type": "@id"},
        "profile": {"@type": "@id"},
        "partOf": {"@type": "@id"},
        "action": {"@type": "@vocab"},
        "leftOperand": {"@type": "@vocab"},
        "operator": {"@type": "@vocab"},
    }
    offline = {**odrl, "@context": [odrl_terms, odrl["@context"][1]]}
    expanded = jsonld.expand(offline)
    sets = [n for n in expanded if "http://www.w3.org/ns/odrl/2/Set" in n.get("@type", [])]
    assert len(sets) == len(odrl["@graph"])
