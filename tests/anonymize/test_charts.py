"""The SVG chart and tile maps are well-formed whatever the labels, draw suppressed and
low-accuracy cells as such (never coloured as data), and take any measure's shape."""

from __future__ import annotations

from xml.etree import ElementTree

from anonymize import maps, tables
from anonymize.charts import error_bars
from charter.document import Partition

NS = "{http://www.w3.org/2000/svg}"
DASH = "\N{EN DASH}"


def test_labels_are_escaped_and_suppressed_cells_keep_their_line():
    result = {
        "measure": "sum",
        "unit": "kWh",
        "cells": [
            {"time": "2026-01", "area": "<script>&", "category": None, "suppressed": False,
             "sum": {"value": -3.5, "ci95": [-10.0, 3.0], "low_accuracy": True}},
            {"time": "2026-02", "area": "D02", "category": None, "suppressed": True},
        ],
    }  # fmt: skip
    svg = error_bars(result, title='a "quoted" <title>')
    tree = ElementTree.fromstring(svg)  # noqa: S314 (our own output)
    assert "<script>" not in svg
    texts = [t.text for t in tree.iter(f"{NS}text")]
    assert "2026-01 · <script>&" in texts
    assert "—" in texts  # the suppressed cell
    assert len(tree.findall(f"{NS}circle")) == 1


def test_a_measure_with_several_values_per_cell_is_charted_by_its_count():
    result = {
        "measure": "histogram",
        "unit": "kWh",
        "cells": [
            {"time": "2026-01", "area": "D01", "category": None, "suppressed": False,
             "count": {"value": 40.0, "ci95": [30.0, 50.0], "low_accuracy": False},
             "histogram": {"edges": [0, 10], "counts": [{"value": 3}]}},
            {"time": "2026-01", "area": "D02", "category": None, "suppressed": False,
             "count": {"value": 12.0, "ci95": [2.0, 22.0], "low_accuracy": True},
             "histogram": {"unknown": "shape"}},
        ],
    }  # fmt: skip
    tree = ElementTree.fromstring(error_bars(result, title="t", desc="d"))  # noqa: S314
    assert tree.find(f"{NS}desc").text == "d"
    assert next(t.text for t in tree.iter(f"{NS}text")) == "count"
    assert len(tree.findall(f"{NS}circle")) == 2


# --- the tile map --------------------------------------------------------------------------


def cell(area, value=None, *, low=False, suppressed=False, time="2026-01"):
    out = {"time": time, "area": area, "category": None, "suppressed": suppressed}
    if value is not None:
        out["mean"] = {"value": value, "ci95": [value - 1, value + 1], "low_accuracy": low}
    return out


def test_areas_sit_on_their_tiles_and_the_others_fill_free_places_row_by_row():
    partition = (
        Partition("A", "Alpha", (1, 0)),
        Partition("B", "Beta"),
        Partition("C", "Gamma", (0, 0)),
        Partition("D", "Delta"),
    )
    placed = maps.layout(["A", "B", "C", "D", "Z"], partition)
    assert [(a.id, a.name, a.col, a.row) for a in placed] == [
        ("A", "Alpha", 1, 0),
        ("B", "Beta", 2, 0),  # 5 areas: 3 columns; (0, 0) and (1, 0) are taken
        ("C", "Gamma", 0, 0),
        ("D", "Delta", 0, 1),
        ("Z", "Z", 1, 1),  # no longer in the charter: its id as its name
    ]
    assert [(a.col, a.row) for a in maps.layout(["x", "y", "z", "w"], None)] == [
        (0, 0), (1, 0), (0, 1), (1, 1)
    ]  # fmt: skip


def test_a_tile_shared_by_mistake_does_not_hide_an_area():
    partition = (Partition("A", "A", (0, 0)), Partition("B", "B", (0, 0)))
    spots = {(a.col, a.row) for a in maps.layout(["A", "B"], partition)}
    assert len(spots) == 2


def test_only_data_is_coloured_and_every_tile_says_its_value_and_interval():
    result = {
        "measure": "mean",
        "unit": "kWh",
        "keys": {"time": ["2026-01"], "area": ["A", "B", "C", "D", "E"], "category": None},
        "cells": [cell("A", 10.0), cell("B", 50.0), cell("C", 30.0, low=True),
                  cell("D", suppressed=True), cell("E", 20.0)],
    }  # fmt: skip
    areas = maps.layout(["A", "B", "C", "D", "E"], None)
    scale = maps.scale_of(result, "mean")
    assert scale == maps.Scale(10.0, 50.0)  # the low-accuracy 30 is not data on the scale
    svg = maps.tile_map(result, areas, time="2026-01", category=None, measure="mean",
                        scale=scale, title="Mean <by> area", desc="How to read it",
                        ident="m0")  # fmt: skip
    tree = ElementTree.fromstring(svg)  # noqa: S314
    assert tree.get("role") == "img"
    assert tree.get("aria-labelledby") == "m0-t m0-d"
    assert tree.find(f"{NS}title").text == "Mean <by> area"
    assert tree.find(f"{NS}desc").text == "How to read it"
    tiles = {g.get("data-area"): g for g in tree.findall(f"{NS}g")}
    fills = {k: g.find(f"{NS}rect").get("fill") for k, g in tiles.items()}
    assert fills["A"] == maps.CLASSES[0]
    assert fills["B"] == maps.CLASSES[-1]
    assert fills["E"] == maps.CLASSES[1]
    assert fills["C"] == "#ffffff"
    assert tiles["C"].find(f"{NS}rect").get("stroke-dasharray")
    assert fills["D"] == "url(#m0-hatch)"
    assert tiles["A"].find(f"{NS}title").text == f"A: 10.0 kWh (95 % interval: 9.00 {DASH} 11.0)"
    assert "low accuracy" in tiles["C"].find(f"{NS}title").text
    assert tiles["D"].find(f"{NS}title").text == "D: suppressed (too few people)"
    assert [t.text for t in tiles["C"].findall(f"{NS}text")] == ["C", "~30.0"]


def test_a_map_with_nothing_to_colour_and_hostile_names_is_still_well_formed():
    result = {"measure": "mean", "cells": [cell("<b>&", suppressed=True)]}
    areas = maps.layout(["<b>&"], (Partition("<b>&", '"quoted" <name>'),))
    assert maps.scale_of(result, "mean") is None
    svg = maps.tile_map(result, areas, time="2026-01", category=None, measure="mean",
                        scale=None, title="<t>", desc="&", ident="x")  # fmt: skip
    tree = ElementTree.fromstring(svg)  # noqa: S314
    assert "<b>" not in svg
    assert tree.find(f"{NS}g").get("data-area") == "<b>&"
    legend = ElementTree.fromstring(  # noqa: S314
        maps.legend(None, unit="kWh", title="<legend>", ident="l")
    )
    assert legend.get("role") == "img"
    assert len(legend.findall(f"{NS}rect")) == 2  # no classes: low accuracy and suppressed


def test_the_legend_lists_each_class_of_the_scale():
    legend = maps.legend(maps.Scale(0.0, 100.0), unit="kWh", title="Legend", ident="l")
    tree = ElementTree.fromstring(legend)  # noqa: S314
    texts = [t.text for t in tree.iter(f"{NS}text")]
    assert f"0.00 {DASH} 20.0 kWh" in texts
    assert f"80.0 {DASH} 100 kWh" in texts
    assert len(tree.findall(f"{NS}rect")) == len(maps.CLASSES) + 2


def test_every_time_bucket_and_category_has_its_map():
    result = {"keys": {"time": ["2026-01", "2026-02"], "area": ["A"], "category": ["x", "y"]}}
    assert maps.slices(result) == [
        ("2026-01", "x"), ("2026-01", "y"), ("2026-02", "x"), ("2026-02", "y")
    ]  # fmt: skip
    assert maps.slices({"keys": {"time": ["2026"]}}) == [("2026", None)]


def test_the_table_shows_every_measure_whatever_its_shape():
    result = {
        "measure": "histogram",
        "cells": [
            {"time": "t", "area": None, "category": None, "suppressed": False,
             "count": {"value": 12, "ci95": [10.5, 13.5], "low_accuracy": False},
             "histogram": {"bins": list(range(30))}},
            {"time": "t", "area": None, "category": None, "suppressed": True},
        ],
    }  # fmt: skip
    assert tables.measures(result) == ["count", "histogram"]
    (_first, entries), (_, empty) = tables.rows(result)
    count, histogram = entries
    assert (count.value, count.low, count.high, count.low_accuracy) == ("12", "10.5", "13.5", False)
    assert histogram.value is None
    assert histogram.other[0][1].startswith("bins = [0, 1, 2")
    assert histogram.other[0][1].endswith("23 …]")
    assert empty == [None, None]
