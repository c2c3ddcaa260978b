"""The SVG chart and tile maps are well-formed whatever the labels, draw suppressed and
low-accuracy cells as such (never coloured as data), and take any measure's shape."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest

from anonymize import charts, maps, tables
from anonymize.charts import error_bars
from charter.document import Partition
from tests.anonymize.pages import make_release

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


@pytest.fixture
def histogram_release(session, make_client, stage):
    """A real histogram release by month over three districts (the engine's own shapes)."""
    organisation = make_client("observatory", category="public_service").model.organisation
    return make_release(session, organisation, stage(), measure="histogram",
                        areas=["D01", "D02", "D03"], bins=["0", "50", "400"])["result"]  # fmt: skip


def test_a_histogram_is_charted_by_its_count_in_error_bars(histogram_release):
    result = histogram_release
    tree = ElementTree.fromstring(error_bars(result, title="t", desc="d"))  # noqa: S314
    assert tree.find(f"{NS}desc").text == "d"
    assert next(t.text for t in tree.iter(f"{NS}text")) == "count"
    dots = [c.find(f"{NS}title").text for c in tree.iter(f"{NS}circle")]
    shown = [c for c in result["cells"] if not c["suppressed"]]
    assert dots == [f"{c['time']} · {c['area']}: {c['count']['value']:.6g}" for c in shown]


def test_a_cells_small_histogram_has_a_bar_and_an_error_bar_per_bin(histogram_release):
    result = histogram_release
    cell = next(c for c in result["cells"] if not c["suppressed"])
    scale = charts.histogram_range(result["cells"])
    assert scale[1] >= max(f["ci95"][1] for c in result["cells"] for f in c.get("histogram", []))
    tree = ElementTree.fromstring(  # noqa: S314
        charts.histogram(result, cell, scale=scale, title="<h>", desc="&", ident="h0")
    )
    assert tree.get("role") == "img"
    assert tree.get("aria-labelledby") == "h0-t h0-d"
    assert tree.find(f"{NS}title").text == "<h>"
    bars = tree.findall(f"{NS}g")
    assert [b.get("data-bin") for b in bars] == ["0", "1"]
    for bar, found in zip(bars, cell["histogram"], strict=True):
        low, high = found["ci95"]
        assert bar.find(f"{NS}title").text == (
            f"{tables.bin_label(result['bins'], int(bar.get('data-bin')))}: "
            f"{maps.number(found['value'])} (95 % interval: {maps.number(low)} {DASH} "
            f"{maps.number(high)})"
        )
        heights = float(bar.find(f"{NS}rect").get("height"))
        # The counts are noisy: a bin may come out at exactly 0 (no bar) or below (drawn down).
        assert (heights > 0) == (found["value"] != 0)
    taller = max(range(2), key=lambda i: abs(cell["histogram"][i]["value"]))  # noisy: maybe < 0
    rects = [float(b.find(f"{NS}rect").get("height")) for b in bars]
    assert rects[taller] == max(rects)
    assert [t.text for t in tree.iter(f"{NS}text")][-4:] == ["0", "50", "400", "kWh"]


def test_a_suppressed_cells_histogram_says_so():
    result = {"bins": [0.0, 1.0], "unit": "kWh", "cells": []}
    cell = {"time": "t", "area": None, "category": None, "suppressed": True}
    tree = ElementTree.fromstring(  # noqa: S314
        charts.histogram(result, cell, scale=(0.0, 1.0), title="t", desc="d", ident="h")
    )
    assert tree.findall(f"{NS}g") == []
    assert "suppressed (too few people)" in [t.text for t in tree.iter(f"{NS}text")]


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


def test_the_table_has_a_row_per_cell_and_bin_and_the_cells_total(histogram_release):
    result = histogram_release
    assert tables.measures(result) == ["count", "histogram"]
    rows = tables.bin_rows(result)
    per_cell = [3 if not c["suppressed"] else 1 for c in result["cells"]]
    assert len(rows) == sum(per_cell)
    first = next(i for i, c in enumerate(result["cells"]) if not c["suppressed"])
    start = sum(per_cell[:first])
    bins, total = rows[start : start + 2], rows[start + 2]
    cell = result["cells"][first]
    assert [r.label for r in bins] == ["[0, 50)", "[50, 400]"]
    assert [r.entry.value for r in bins] == [str(int(f["value"])) for f in cell["histogram"]]
    assert total.total
    assert total.entry.value == str(int(cell["count"]["value"]))


def test_bin_labels_stretch_the_outer_bins_to_the_bounds_they_hold():
    bounds = {"lower": 0.0, "upper": 400.0}
    edges = [10.0, 25.5, 100.0]
    assert [tables.bin_label(edges, i, bounds) for i in range(2)] == ["[0, 25.5)", "[25.5, 400]"]
    assert tables.bin_label(edges, 0) == "[10, 25.5)"
    assert tables.edge(1500.0) == "1\N{NARROW NO-BREAK SPACE}500"


def test_quantile_rows_name_the_bin_each_value_falls_in():
    result = {
        "bins": [0.0, 10.0, 20.0],
        "bounds": {"lower": 0.0, "upper": 20.0},
        "quantiles": [0.5, 0.9],
        "cells": [
            {"time": "t", "area": None, "category": None, "suppressed": False,
             "quantiles": [
                 {"q": 0.5, "value": 7.5, "interval": [0.0, 10.0], "low_accuracy": False},
                 {"q": 0.9, "value": 18.0, "interval": [10.0, 20.0], "low_accuracy": True}]},
            {"time": "u", "area": None, "category": None, "suppressed": True},
        ],
    }  # fmt: skip
    rows = [(r.q, r.value, r.interval, r.low_accuracy) for r in tables.quantile_rows(result)]
    assert rows == [("0.5", "7.50", "[0, 10)", False), ("0.9", "18.0", "[10, 20]", True),
                    ("0.5", None, None, False), ("0.9", None, None, False)]  # fmt: skip
    tree = ElementTree.fromstring(  # noqa: S314
        charts.quantile_bars(result, title="q", desc="d")
    )
    texts = [t.text for t in tree.iter(f"{NS}text")]
    assert texts[:4] == ["quantile ()", "t · q = 0.5", "t · q = 0.9", "u"]
    assert [c.find(f"{NS}title").text for c in tree.iter(f"{NS}circle")] == [
        "t · q = 0.5: 7.5", "t · q = 0.9: 18"]  # fmt: skip
