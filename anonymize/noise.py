"""Noise on exact integer aggregate vectors, from OpenDP core measurements only.

Discrete Gaussian under zCDP (the default) or discrete Laplace under pure DP, calibrated to a
sensitivity declared from public bounds (never from data). OpenDP samples with a CSPRNG and
cannot be seeded: numpy never draws noise here (shared/research/anchors-dp.md §5.1, cond. 4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from functools import cache
from typing import Any

import opendp.prelude as dp

from anonymize.models import RHO_PLACES

dp.enable_features("contrib")  # core measurements need it (anchors-dp.md §1.1)

GAUSSIAN = "discrete_gaussian"
LAPLACE = "discrete_laplace"
DELTA = 1e-7  # (epsilon, delta) is shown at this delta, below 1/population of a territory
_QUANTUM = Decimal(1).scaleb(-RHO_PLACES)


def round_up(value: float | Decimal) -> Decimal:
    """A cost as an exact decimal, rounded up to the ledger's precision (1e-12)."""
    return Decimal(str(value)).quantize(_QUANTUM, rounding=ROUND_CEILING)


EXACT_ACCURACY_SCALE = 10_000.0  # above it, half_width uses the continuous closed form


@dataclass(frozen=True, slots=True)
class Calibrated:
    """A measurement for vectors of `size` integers: its noise scale and exact cost in rho."""

    mechanism: str
    scale: float
    rho: Decimal
    size: int
    _measurement: Any

    def __call__(self, exact: Sequence[int]) -> list[int]:
        if len(exact) != self.size:
            raise ValueError("the vector's length is the public key set's, always")
        return [int(v) for v in self._measurement([int(v) for v in exact])]

    def half_width(self, alpha: float = 0.05) -> float:
        """Half-width of the (1 - alpha) interval around each noisy value.

        OpenDP's discrete accuracy sums the distribution, in time linear in the scale (25 s at
        a scale of 5e7, e.g. sums in Wh); above EXACT_ACCURACY_SCALE the continuous closed
        form, rounded up, plus one, is used: at such scales the discrete distributions are
        the continuous ones rounded, to far below one unit (at 2000 both give 3921)."""
        if self.scale > EXACT_ACCURACY_SCALE:
            continuous = (
                dp.gaussian_scale_to_accuracy(self.scale, alpha)
                if self.mechanism == GAUSSIAN
                else dp.laplacian_scale_to_accuracy(self.scale, alpha)
            )
            return float(math.ceil(continuous) + 1)
        if self.mechanism == GAUSSIAN:
            return float(dp.discrete_gaussian_scale_to_accuracy(self.scale, alpha))
        return float(dp.discrete_laplacian_scale_to_accuracy(self.scale, alpha))


def l2_bound(cells: int, bound: int) -> float:
    """An upper bound of sqrt(cells) * bound as a float (rounded up, never down)."""
    return math.nextafter(math.sqrt(cells) * bound, math.inf)


def _gaussian(size: int, scale: float) -> Any:
    domain = dp.vector_domain(dp.atom_domain(T=dp.i64), size=size)
    return dp.m.make_gaussian(domain, dp.l2_distance(T=float), scale=scale)


def _laplace(size: int, scale: float) -> Any:
    domain = dp.vector_domain(dp.atom_domain(T=dp.i64), size=size)
    return dp.m.make_laplace(domain, dp.l1_distance(T=dp.i64), scale=scale)


def gaussian(size: int, *, l2_sensitivity: float, rho: Decimal) -> Calibrated:
    """Discrete Gaussian for `size` cells, the smallest scale whose zCDP cost is <= `rho`."""
    if rho <= 0 or l2_sensitivity <= 0:
        raise ValueError("rho and the sensitivity must be positive")
    scale = dp.binary_search_param(
        lambda s: _gaussian(size, s), d_in=l2_sensitivity, d_out=float(rho)
    )
    measurement = _gaussian(size, scale)
    cost = round_up(measurement.map(l2_sensitivity))
    return Calibrated(GAUSSIAN, float(scale), cost, size, measurement)


def laplace(size: int, *, l1_sensitivity: int, epsilon: Decimal) -> Calibrated:
    """Discrete Laplace for `size` cells at pure `epsilon`; charged as rho = epsilon^2 / 2,
    OpenDP's pure-DP to zCDP conversion (a pure release still spends the one zCDP ledger)."""
    if epsilon <= 0 or l1_sensitivity <= 0:
        raise ValueError("epsilon and the sensitivity must be positive")
    scale = dp.binary_search_param(
        lambda s: _laplace(size, s), d_in=l1_sensitivity, d_out=float(epsilon)
    )
    measurement = _laplace(size, scale)
    as_zcdp = dp.c.make_pureDP_to_zCDP(measurement)
    cost = round_up(as_zcdp.map(l1_sensitivity))  # type: ignore[no-untyped-call]
    return Calibrated(LAPLACE, float(scale), cost, size, measurement)


def with_scale(mechanism: str, size: int, scale: float) -> Calibrated:
    """A measurement at a given scale, uncharged: for tests of the noise distribution only."""
    make = _gaussian if mechanism == GAUSSIAN else _laplace
    return Calibrated(mechanism, scale, Decimal(0), size, make(size, scale))


@cache
def epsilon_at(rho: Decimal, delta: float = DELTA) -> float:
    """The (epsilon, delta) that a rho-zCDP guarantee implies, by OpenDP's conversion.

    A Gaussian mechanism at sensitivity 1 and scale 1/sqrt(2 rho) is exactly rho-zCDP; its
    conversion (make_zCDP_to_approxDP, fixed delta) is the conversion of any rho-zCDP loss.
    """
    if rho <= 0:
        return 0.0
    scale = 1.0 / math.sqrt(2.0 * float(rho))
    unit = dp.m.make_gaussian(
        dp.atom_domain(T=float, nan=False),
        dp.absolute_distance(T=float),
        scale=math.nextafter(scale, 0.0),
    )  # never below the true loss
    converted = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(unit), delta=delta)
    epsilon, _ = converted.map(1.0)  # type: ignore[no-untyped-call]
    return float(epsilon)
