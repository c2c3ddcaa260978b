"""Brévanne Gaz Distribution, a demo gas distributor in the manner of GRDF.

800 meters (14-digit PCE ids), one dataset `daily`: each day's consumption in Wh (the energy
GRDF bills, volume x calorific value). A day's value is a pure function of (seed, meter, day):
cooking and hot water all year, plus heating proportional to the day's heating degrees, so the
winter months carry most of the year's gas.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import synth
from .app import Holder
from .protocol import Dataset, Field, Position, Record, Schema, Window, resume
from .synth import Draws, Identifiers, Weather

METERS = 800
MAX_DAILY_WH = 300_000  # the DP clamping bound; the generator never exceeds it
HEATING_BASE_C = 16.5  # daily mean temperature below which homes heat (degree-days base)


@dataclass(frozen=True, slots=True)
class GasMeter:
    index: int
    pce: str
    district: str
    house: bool
    kwh_per_degree_day: float
    base_kwh: float  # cooking and hot water, per day
    away_from: int
    away_days: int


class Network:
    def __init__(self, seed: str) -> None:
        self.draws = Draws(seed)
        self.weather = Weather(self.draws)
        self.ids = Identifiers(self.draws, "pce", digits=14, count=METERS)

    def meter(self, index: int) -> GasMeter:
        u = self.draws.uniforms("gas-meter", index)
        v = self.draws.uniforms("gas-meter-more", index)
        house = u[0] < 0.45
        away = v[1] < 0.55
        return GasMeter(
            index=index,
            pce=self.ids.encode(index),
            district=synth.DISTRICTS[int(u[1] * len(synth.DISTRICTS))],
            house=house,
            kwh_per_degree_day=synth.between(u[2], 5.0, 10.0)
            if house
            else synth.between(u[2], 2.0, 4.0),
            base_kwh=synth.between(u[3], 2.0, 7.0),
            away_from=int(synth.between(v[0], 186, 222)) if away else -1,
            away_days=14 if away else 0,
        )

    def lookup(self, pce: str) -> GasMeter | None:
        index = self.ids.decode(pce)
        return None if index is None else self.meter(index)

    def energy(self, meter: GasMeter, day: int) -> int:
        """Consumption (Wh) of `meter` on `day` (days since 1 January)."""
        u = self.draws.uniforms("gas-day", meter.index, day)
        away = meter.away_from <= day < meter.away_from + meter.away_days
        degrees = max(0.0, HEATING_BASE_C - self.weather.daily_mean(day))
        heating = meter.kwh_per_degree_day * degrees * (0.3 if away else 1.0)
        base = meter.base_kwh * (1 + 0.2 * synth.season(day)) * (0.1 if away else 1.0)
        if synth.is_day_off(synth.day_date(day)):
            base *= 1.1  # more cooking at home
        kwh = heating * synth.lognormal(u[0], 0.08) + base * synth.lognormal(u[1], 0.2)
        return min(synth.round_half_up(kwh * 1000), MAX_DAILY_WH)


class GasDaily(Dataset):
    schema = Schema(
        id="daily",
        title={"fr": "Consommation de gaz quotidienne", "en": "Daily gas consumption"},
        data_category="energy.gas.daily",
        subject_field="pce",
        time_field="date",
        resolution="P1D",
        max_records_per_subject_per_day=1,
        fields=(
            Field(
                "pce",
                "string",
                "Point de comptage et d'estimation: the meter's 14-digit id, the subject "
                "identifier.",
                personal=True,
                identifier=True,
                pattern="^[0-9]{14}$",
            ),
            Field("date", "date", "The UTC day."),
            Field(
                "energy_wh",
                "integer",
                "Gas consumed that day, as energy (volume x calorific value).",
                unit="W.h",
                minimum=0,
                maximum=MAX_DAILY_WH,
                personal=True,
            ),
            Field(
                "district",
                "string",
                "District of the delivery point (charter partition `districts`).",
                values=synth.DISTRICTS,
                partition="districts",
                personal=True,  # where the citizen lives, at district level
            ),
        ),
        notes={"coverage": {"since": "2025-01-01", "until": "2026-01-01"}},
    )

    def __init__(self, network: Network) -> None:
        self.network = network

    def well_formed(self, subject: str) -> bool:
        return self.network.ids.well_formed(subject)

    def records(
        self, subject: str, window: Window, after: Position | None
    ) -> Iterator[tuple[Position, Record]]:
        meter = self.network.lookup(subject)
        if meter is None:
            return
        days = window.slots(synth.YEAR_START, synth.DAY, synth.DAYS)
        for day in resume(days, after):
            yield (
                (day,),
                {
                    "pce": meter.pce,
                    "date": synth.day_date(day).isoformat(),
                    "energy_wh": self.network.energy(meter, day),
                    "district": meter.district,
                },
            )


def demo_subjects(network: Network, count: int = 6) -> list[dict[str, Any]]:
    subjects = []
    for index in range(count):
        meter = network.meter(index)
        subjects.append(
            {
                "pce": meter.pce,
                "district": meter.district,
                "dwelling": "house" if meter.house else "apartment",
            }
        )
    return subjects


def holder(seed: str) -> Holder:
    network = Network(seed)
    dataset = GasDaily(network)
    return Holder(
        name="gas",
        organisation="Brévanne Gaz Distribution (demo distributor)",
        description={
            "fr": "Gestionnaire du réseau de distribution de gaz (démonstration).",
            "en": "Gas distribution system operator (demo).",
        },
        datasets={dataset.id: dataset},
        demo_subjects=lambda count=None: demo_subjects(network, *([count] if count else [])),
        seed=seed,
    )
