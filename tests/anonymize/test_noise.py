"""OpenDP's noise matches its declared scale (20,000 draws, tolerances of 5 standard errors,
anchors-dp.md §4.2), and calibration spends no more than asked, and not much less."""

from __future__ import annotations

import math
import statistics
from decimal import Decimal

import opendp.prelude as dp
import pytest

from anonymize import noise

N = 20_000


def draws(mechanism: str, scale: float) -> list[int]:
    return noise.with_scale(mechanism, N, scale)([0] * N)


def test_discrete_laplace_variance_matches_its_scale():
    b = 48.0
    sample = draws(noise.LAPLACE, b)
    q = math.exp(-1 / b)
    theory = 2 * q / (1 - q) ** 2  # discrete Laplace variance
    # relative SE of a sample variance is sqrt((kurtosis - 1) / n), kurtosis 6 for Laplace
    assert abs(statistics.pvariance(sample) / theory - 1) < 5 * math.sqrt(5 / N)
    assert abs(statistics.fmean(sample)) < 5 * math.sqrt(theory / N)
    assert all(isinstance(x, int) for x in sample[:100])  # integers: no float sums


def test_discrete_gaussian_variance_matches_its_scale():
    sigma = 33.94
    sample = draws(noise.GAUSSIAN, sigma)
    assert abs(statistics.pvariance(sample) / sigma**2 - 1) < 5 * math.sqrt(2 / N)
    assert abs(statistics.fmean(sample)) < 5 * sigma / math.sqrt(N)


def test_ninety_five_percent_intervals_cover_what_they_claim():
    sigma = 20.0
    measured = noise.with_scale(noise.GAUSSIAN, N, sigma)
    half = measured.half_width(0.05)  # an integer: the noise is an integer
    weights = {k: math.exp(-(k * k) / (2 * sigma**2)) for k in range(-400, 401)}
    theory = sum(w for k, w in weights.items() if abs(k) <= half) / sum(weights.values())
    assert theory >= 0.95  # conservative, never below what it claims
    inside = sum(abs(x) <= half for x in measured([0] * N)) / N
    assert abs(inside - theory) < 5 * math.sqrt(theory * (1 - theory) / N)


def test_gaussian_calibration_spends_at_most_the_asked_rho_and_is_tight():
    l2 = noise.l2_bound(3, 400_000)
    measured = noise.gaussian(60, l2_sensitivity=l2, rho=Decimal("0.125"))
    assert measured.rho <= Decimal("0.125")
    assert measured.scale == pytest.approx(l2 / math.sqrt(0.25), rel=1e-3)
    looser = dp.m.make_gaussian(
        dp.vector_domain(dp.atom_domain(T=dp.i64), size=60),
        dp.l2_distance(T=float),
        scale=measured.scale * 0.99,
    )
    assert looser.map(l2) > 0.125


def test_laplace_calibration_is_charged_as_epsilon_squared_over_two():
    measured = noise.laplace(20, l1_sensitivity=24, epsilon=Decimal("0.5"))
    assert measured.scale == pytest.approx(48.0, rel=1e-3)
    assert measured.rho == Decimal("0.125")


def test_a_vector_of_the_wrong_length_is_refused():
    measured = noise.with_scale(noise.GAUSSIAN, 3, 1.0)
    with pytest.raises(ValueError, match="length"):
        measured([1, 2])
    with pytest.raises(ValueError, match="positive"):
        noise.gaussian(3, l2_sensitivity=1.0, rho=Decimal(0))
    with pytest.raises(ValueError, match="positive"):
        noise.laplace(3, l1_sensitivity=0, epsilon=Decimal(1))
