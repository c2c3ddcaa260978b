"""Histograms, quantiles and filters over HTTP: every (filtered) key and bin present, the
spend of a histogram, max_cells by default, and bad specs refused field by field with
nothing written."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from anonymize.models import BudgetAccount, Contribution, Release
from tests.anonymize.conftest import DISTRICTS, spec

URL = "/api/v1/releases"


def count(session: Any, model: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model)))


def test_a_histogram_has_every_bin_of_every_key(client, observatory, stage):
    staged = stage()
    body = spec(staged, measure="histogram", bins=["0", "50", "100", "400"], bucket="quarter")
    made = client.post(URL, json=body, headers=observatory)
    assert made.status_code == 201, made.get_json()
    result = made.get_json()["result"]
    assert result["bins"] == [0, 50, 100, 400]
    assert list(result["noise"]) == ["histogram"]
    assert Decimal(result["noise"]["histogram"]["rho"]) <= Decimal("0.2")
    assert result["max_cells_per_citizen"] == 1
    assert [c["area"] for c in result["cells"]] == list(DISTRICTS)
    shown = [c for c in result["cells"] if not c["suppressed"]]
    assert shown  # 400 citizens over 20 districts: about 20 each
    for cell in shown:
        assert [b["bin"] for b in cell["histogram"]] == [[0, 50], [50, 100], [100, 400]]
        total = sum(b["value"] for b in cell["histogram"])
        assert cell["count"]["value"] == total
    rows = list(csv.reader(io.StringIO(client.get(f"{URL}/{made.get_json()['id']}/csv",
                                                  headers=observatory).get_data(as_text=True))))  # fmt: skip
    assert rows[0][4:6] == ["bin_low", "bin_high"]
    assert len(rows) == 1 + len(DISTRICTS) * 3


def test_quantiles_spend_what_their_histogram_spends(client, observatory, stage):
    staged = stage()
    histogram = spec(staged, measure="histogram", bin_count=20, bucket="quarter")
    quantile = {**histogram, "measure": "quantile", "quantiles": ["0.5", "0.9"]}
    by_h = client.post(URL, json=histogram, headers=observatory).get_json()
    by_q = client.post(URL, json=quantile, headers=observatory)
    assert by_q.status_code == 201, by_q.get_json()
    by_q = by_q.get_json()
    assert by_q["rho"] == by_h["rho"]
    assert by_q["result"]["bins"] == [20 * i for i in range(21)]  # 0..400 kWh in 20 bins
    for cell in by_q["result"]["cells"]:
        if cell["suppressed"]:
            continue
        median, high = cell["quantiles"]
        assert (median["q"], high["q"]) == (0.5, 0.9)
        if median["value"] is not None:
            low, top = median["interval"]
            assert low <= median["value"] <= top
            assert top - low == 20
            assert median["value"] <= high["value"]


def test_filters_keep_the_asked_public_keys_in_the_public_order(client, observatory, stage):
    staged = stage(records=[])
    body = spec(staged, areas=["D03", "D01"], by_category=True, categories=["other", "gas"])
    made = client.post(URL, json=body, headers=observatory)
    assert made.status_code == 201, made.get_json()
    result = made.get_json()["result"]
    assert result["keys"]["area"] == ["D01", "D03"]  # the partition's order
    assert result["keys"]["category"] == ["gas", "other"]  # the dataset's order
    assert [(c["time"], c["area"], c["category"]) for c in result["cells"]] == [
        (m, d, k) for m in ("2026-01", "2026-02", "2026-03") for d in ("D01", "D03")
        for k in ("gas", "other")
    ]  # fmt: skip
    # by category, a citizen may count in every category of every bucket: 3 x 2
    assert result["max_cells_per_citizen"] == 6


def test_a_filter_restricts_the_citizens_counted(client, observatory, stage):
    staged = stage()
    body = spec(staged, measure="count", bucket="all", areas=["D05"], rho="0.25")
    made = client.post(URL, json=body, headers=observatory).get_json()
    (cell,) = made["result"]["cells"]
    truth = len(set().union(*(who for (_, area), who in staged.citizens.items() if area == "D05")))
    assert abs(cell["count"]["value"] - truth) <= 5 * made["result"]["noise"]["count"]["scale"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"areas": ["D01", "D99"]}, "areas"),
        ({"areas": ["D01", "D01"]}, "areas"),
        ({"areas": []}, "areas"),
        ({"areas": ["D01"], "partition": None}, "areas"),
        ({"by_category": True, "categories": ["coal"]}, "categories"),
        ({"categories": ["gas"]}, "categories"),
        ({"measure": "histogram"}, "bins"),
        ({"measure": "histogram", "bins": ["0", "10"], "bin_count": 4}, "bins"),
        ({"measure": "histogram", "bins": ["0", "50", "50"]}, "bins"),
        ({"measure": "histogram", "bins": ["0", "50", "40"]}, "bins"),
        ({"measure": "histogram", "bins": ["-1", "50"]}, "bins"),
        ({"measure": "histogram", "bins": ["0", "401"]}, "bins"),
        ({"measure": "histogram", "bins": ["0"]}, "bins"),
        ({"measure": "histogram", "bins": ["0", "NaN"]}, "bins"),
        ({"measure": "histogram", "bin_count": 0}, "bin_count"),
        ({"measure": "histogram", "bin_count": 101}, "bin_count"),
        ({"measure": "histogram", "bin_count": 100}, "bucket"),  # 60 cells x 100 bins
        ({"measure": "histogram", "bin_count": 4, "quantiles": ["0.5"]}, "quantiles"),
        ({"measure": "quantile", "bin_count": 4}, "quantiles"),
        ({"measure": "quantile", "bin_count": 4, "quantiles": ["1"]}, "quantiles"),
        ({"measure": "quantile", "bin_count": 4, "quantiles": ["0"]}, "quantiles"),
        ({"measure": "count", "bin_count": 4}, "bin_count"),
        ({"measure": "mean", "bins": ["0", "5"]}, "bins"),
    ],
)
def test_bad_histograms_and_filters_are_refused_and_write_nothing(
    client, observatory, stage, session, overrides, field
):
    staged = stage(records=[])
    response = client.post(URL, json=spec(staged, **overrides), headers=observatory)
    assert response.status_code == 422, response.get_json()
    assert response.mimetype == "application/problem+json"
    errors = response.get_json()["errors"]
    assert any(name.split(".")[0] == field for name in errors), errors  # bins.1: its item
    assert count(session, Release) == 0
    assert count(session, BudgetAccount) == 0
    assert count(session, Contribution) == 0


def test_specs_made_before_the_new_options_keep_their_hash(client, observatory, stage):
    """A stored release is served again for the same spec: options left unset are not part
    of its hash, so adding options never makes an old request pay twice."""
    from anonymize.service import ReleaseSpec

    staged = stage(records=[])
    plain = ReleaseSpec(
        dataset_id=staged.dataset_id,
        purpose="p",
        measure="count",
        start=__import__("datetime").date(2026, 1, 1),
        end=__import__("datetime").date(2026, 2, 1),
        rho=Decimal("0.1"),
    )
    assert set(plain.canonical()) == {
        "dataset_id", "purpose", "measure", "start", "end", "bucket", "partition",
        "by_category", "rho", "epsilon", "max_cells",
    }  # fmt: skip
