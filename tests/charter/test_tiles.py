"""The optional tile of a partition's area: where the observatory's tile map draws it. A
charter without tiles keeps its canonical form, so its version hash does not move."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from charter.document import CharterInvalidError, document_hash, from_dict, parse, to_dict

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# examples/charter.yaml's hash before tiles existed (its content without its tiles).
DEMO_HASH_WITHOUT_TILES = "4a50af507eecba25e98a9aca61b24206697ebc6cd9889443abebe1ecdce12d86"


def raw_demo() -> dict[str, Any]:
    loaded = yaml.safe_load((EXAMPLES / "charter.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def without_tiles(raw: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    for entries in out["territory"]["partitions"].values():
        for entry in entries:
            entry.pop("tile", None)
    return out


def errors_of(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(CharterInvalidError) as caught:
        from_dict(raw)
    return list(caught.value.errors)


def test_the_demo_districts_have_tiles_and_the_communes_none():
    doc = parse((EXAMPLES / "charter.yaml").read_text(encoding="utf-8"))
    districts = doc.territory.partitions["districts"]
    assert all(d.tile is not None for d in districts)
    assert len({d.tile for d in districts}) == len(districts)
    assert next(d for d in districts if d.id == "D01").tile == (2, 2)
    assert all(c.tile is None for c in doc.territory.partitions["communes"])


def test_a_charter_without_tiles_keeps_its_canonical_form_and_hash():
    doc = from_dict(without_tiles(raw_demo()))
    for entries in to_dict(doc)["territory"]["partitions"].values():
        assert all(set(entry) == {"id", "name"} for entry in entries)
    assert document_hash(doc) == DEMO_HASH_WITHOUT_TILES


def test_tiles_are_part_of_the_content_and_survive_the_canonical_form():
    doc = parse((EXAMPLES / "charter.yaml").read_text(encoding="utf-8"))
    assert document_hash(doc) != DEMO_HASH_WITHOUT_TILES
    again = from_dict(to_dict(doc))
    assert again == doc
    assert to_dict(doc)["territory"]["partitions"]["districts"][0]["tile"] == [2, 2]


@pytest.mark.parametrize(
    ("tile", "message"),
    [
        ([1], "A tile is [column, row]."),
        ([1, 2, 3], "A tile is [column, row]."),
        ([-1, 0], "Must be greater than or equal to 0 and less than or equal to 63."),
        ([0, 64], "Must be greater than or equal to 0 and less than or equal to 63."),
        (["a", 0], "Not a valid integer."),
        ([1.5, 0], "Not a valid integer."),
        ("2,2", "Not a valid list."),
    ],
)
def test_a_bad_tile_is_refused_with_its_path(tile, message):
    raw = raw_demo()
    raw["territory"]["partitions"]["districts"][3]["tile"] = tile
    found = errors_of(raw)
    assert any(e.startswith("territory.partitions.districts[3].tile") for e in found), found
    assert any(message in e for e in found), found


def test_two_areas_of_one_partition_never_share_a_tile():
    raw = raw_demo()
    raw["territory"]["partitions"]["districts"][5]["tile"] = [2, 2]  # D01's
    (error,) = errors_of(raw)
    assert error.startswith("territory.partitions.districts[5].tile")
    assert "territory.partitions.districts[0]" in error
