"""The SVG chart is well-formed whatever the labels, and draws suppressed cells as such."""

from __future__ import annotations

from xml.etree import ElementTree

from anonymize.charts import error_bars

NS = "{http://www.w3.org/2000/svg}"


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
