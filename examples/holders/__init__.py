"""Demo data holders of the Pays de Brévanne, served for real over HTTP on localhost: an
electricity distributor, a gas distributor, a transit operator and the city's building sensors,
each implementing the holder side of docs/holder-protocol.md with synthetic data computed lazily
from a seed. They stand for other organisations' systems: they import nothing of Tiers.

Run one with `python -m examples.holders electricity --port 5101`, all four with
`python -m examples.holders all` (ports 5101-5104); `--help` says the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import Holder

NAMES = ("electricity", "gas", "transit", "buildings")  # also their order on consecutive ports
DEFAULT_SEED = "brevanne-2025"


def build(name: str, seed: str = DEFAULT_SEED) -> Holder:
    """The holder called `name`, its data generated from `seed`."""
    from . import buildings, electricity, gas, transit

    factories = {
        "electricity": electricity.holder,
        "gas": gas.holder,
        "transit": transit.holder,
        "buildings": buildings.holder,
    }
    if name not in factories:
        raise ValueError(f"no demo holder {name!r}: choose among {', '.join(NAMES)}")
    return factories[name](seed)
