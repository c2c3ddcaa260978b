"""Brévanne Réseau Électrique, a demo electricity distributor in the manner of Enedis.

2,000 meters (14-digit PRM ids) over 2025: `load_curve`, the 30-minute mean active power (W),
and `daily`, each UTC day's energy (Wh) = the sum of its 48 half-hours x 0.5 h, rounded.
The power of a half-hour is a pure function of (seed, meter, slot): standby, activity following
the household's day (work days, days off, holidays away), evening lighting after sunset, a few
appliance spikes, an off-peak water heater from 22:30, and for about a quarter of the homes
electric heating driven by the territory's temperature, with strong winter peaks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from . import synth
from .app import Holder
from .protocol import Dataset, Field, Position, Record, Schema, Window, resume
from .synth import Draws, Identifiers, Weather

METERS = 2000
HEATING_SHARE = 0.25
MAX_POWER_W = 12_000  # the largest subscription generated (12 kVA): the DP clamping bound
MAX_DAILY_WH = MAX_POWER_W * 24
HEATING_BASE_C = 16.0  # heating runs below this outdoor temperature (degree-hours base)
WALL_INERTIA = 0.65  # walls damp the daily temperature cycle seen by the heating
OFF_PEAK_START = 22.5  # heures creuses: water heaters switch on at 22:30 local time

# Hourly activity shapes (multiples of the household's activity power), local time.
_AWAY_WORKDAY = (
    0.25, 0.2, 0.18, 0.18, 0.18, 0.25, 0.7, 1.1, 0.8, 0.35, 0.3, 0.35,
    0.45, 0.4, 0.3, 0.3, 0.45, 0.9, 1.4, 1.7, 1.6, 1.3, 0.9, 0.5,
)  # fmt: skip
_HOME_WORKDAY = (
    0.25, 0.2, 0.18, 0.18, 0.18, 0.22, 0.45, 0.8, 0.9, 0.8, 0.75, 0.9,
    1.1, 0.9, 0.75, 0.7, 0.75, 0.95, 1.3, 1.5, 1.4, 1.15, 0.8, 0.45,
)  # fmt: skip
_DAY_OFF = (
    0.3, 0.22, 0.18, 0.18, 0.18, 0.2, 0.3, 0.5, 0.85, 1.0, 0.95, 1.1,
    1.3, 1.0, 0.8, 0.75, 0.8, 1.0, 1.3, 1.5, 1.4, 1.2, 0.9, 0.55,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Meter:
    """A household's fixed traits, drawn once per request from (seed, index)."""

    index: int
    prm: str
    district: str
    heating: bool
    kva: int
    standby_w: float
    activity_w: float
    home_daytime: bool  # someone at home on work days
    heat_w_per_kelvin: float
    water_heater_w: float  # 0: no off-peak electric water heater
    hot_water_wh: float
    away_from: int  # first day of the summer holidays away (no activity)
    away_days: int


class Fleet:
    """The meters and the model of their power, shared by both datasets."""

    def __init__(self, seed: str) -> None:
        self.draws = Draws(seed)
        self.weather = Weather(self.draws)
        self.ids = Identifiers(self.draws, "prm", digits=14, count=METERS)

    def meter(self, index: int) -> Meter:
        draws = self.draws
        u = draws.uniforms("meter", index)
        v = draws.uniforms("meter-more", index)
        heating = u[0] < HEATING_SHARE
        if heating:
            kva = 9 if u[1] < 0.6 else 12
            water_heater = v[0] < 0.9
        else:
            kva = 3 if u[1] < 0.1 else 6 if u[1] < 0.75 else 9
            water_heater = v[0] < 0.35
        away = v[3] < 0.6
        return Meter(
            index=index,
            prm=self.ids.encode(index),
            district=synth.DISTRICTS[int(u[2] * len(synth.DISTRICTS))],
            heating=heating,
            kva=kva,
            standby_w=synth.between(u[3], 50, 180),
            activity_w=synth.between(v[1], 200, 550) * (0.6 if kva == 3 else 1.0),
            home_daytime=v[2] < 0.3,
            heat_w_per_kelvin=synth.between(draws.uniform("heat", index), 110, 220)
            if heating
            else 0.0,
            water_heater_w=synth.between(draws.uniform("boiler", index), 2000, 3000)
            if water_heater
            else 0.0,
            hot_water_wh=synth.between(draws.uniform("hot-water", index), 3500, 8000),
            away_from=int(synth.between(draws.uniform("away", index), 186, 222)) if away else -1,
            away_days=14 if away else 0,
        )

    def lookup(self, prm: str) -> Meter | None:
        index = self.ids.decode(prm)
        return None if index is None else self.meter(index)

    def power(self, meter: Meter, slot: int) -> int:
        """Mean active power (W) of `meter` over the half-hour `slot` of the year."""
        moment = synth.YEAR_START + slot * synth.HALF_HOUR
        local = moment.astimezone(synth.PARIS)
        offset = (local.utcoffset() or timedelta(0)).total_seconds() / 3600
        start_hour = local.hour + local.minute / 60
        hour = start_hour + 0.25  # the middle of the half-hour
        day = slot // synth.SLOTS_PER_DAY
        away = meter.away_from <= day < meter.away_from + meter.away_days
        day_off = synth.is_day_off(local.date())
        u = self.draws.uniforms("slot", meter.index, slot)

        profile = _DAY_OFF if day_off else _HOME_WORKDAY if meter.home_daytime else _AWAY_WORKDAY
        shape = 0.0 if away else synth.interpolate(profile, hour)
        activity = meter.activity_w * shape * synth.lognormal(u[0], 0.35)
        lighting = 0.3 * meter.activity_w * shape * _dark(day, hour, offset)
        spike = synth.between(u[2], 1200, 2800) if u[1] < 0.05 * shape else 0.0

        heating = 0.0
        if meter.heating:
            outdoor = self.weather.at(day, hour, inertia=WALL_INERTIA)
            need = max(0.0, HEATING_BASE_C - outdoor)
            program = 0.35 if away else _thermostat(hour, day_off or meter.home_daytime)
            heating = meter.heat_w_per_kelvin * need * program * synth.between(u[3], 0.85, 1.15)

        total = meter.standby_w + activity + lighting + spike + heating
        total += self._water_heater(meter, day, start_hour)
        return synth.round_half_up(min(total, meter.kva * 1000))

    def _water_heater(self, meter: Meter, day: int, start_hour: float) -> float:
        """Mean power of the off-peak cycle that started at 22:30 today or yesterday."""
        if not meter.water_heater_w:
            return 0.0
        if start_hour >= OFF_PEAK_START:
            cycle_day, elapsed = day, start_hour - OFF_PEAK_START
        elif start_hour < 8:
            cycle_day, elapsed = day - 1, start_hour + 24 - OFF_PEAK_START
        else:
            return 0.0
        if meter.away_from <= cycle_day < meter.away_from + meter.away_days:
            return 0.0
        energy = meter.hot_water_wh * (1 + 0.25 * synth.season(cycle_day))
        duration = energy / meter.water_heater_w  # hours at full power
        on = min(max(duration - elapsed, 0.0), 0.5)
        return meter.water_heater_w * on / 0.5

    def day_energy(self, meter: Meter, day: int) -> int:
        """Energy (Wh) of a UTC day: the sum of its half-hours' mean power x 0.5 h, rounded."""
        first = day * synth.SLOTS_PER_DAY
        total = sum(self.power(meter, slot) for slot in range(first, first + 48))
        return synth.round_half_up(total / 2)


def _thermostat(hour: float, home: bool) -> float:
    """Comfort 6-9 h and 17-23 h (all day 7-23 h when someone is home), set-back otherwise."""
    if home:
        return 1.0 if 7 <= hour < 23 else 0.7
    return 1.0 if 6 <= hour < 9 or 17 <= hour < 23 else 0.7


def _dark(day: int, hour: float, utc_offset: float) -> float:
    """1 while awake (6-24 h) before sunrise or after sunset, local time; else 0."""
    noon = synth.solar_noon_utc() + utc_offset
    half = synth.day_length(day) / 2
    awake = 6 <= hour < 24
    return 1.0 if awake and (hour < noon - half or hour >= noon + half) else 0.0


_PRM = Field(
    "prm",
    "string",
    "Point de référence mesure: the meter's 14-digit id, the subject identifier.",
    personal=True,
    identifier=True,
    pattern="^[0-9]{14}$",
)
_DISTRICT = Field(
    "district",
    "string",
    "District of the delivery point (charter partition `districts`).",
    values=synth.DISTRICTS,
    partition="districts",
    personal=True,  # where the citizen lives, at district level
)


class LoadCurve(Dataset):
    schema = Schema(
        id="load_curve",
        title={
            "fr": "Courbe de charge (puissance moyenne par demi-heure)",
            "en": "Load curve (mean power per half-hour)",
        },
        data_category="energy.electricity.load_curve",
        subject_field="prm",
        time_field="start",
        resolution="PT30M",
        max_records_per_subject_per_day=48,
        fields=(
            _PRM,
            Field("start", "datetime", "Start of the half-hour, UTC (RFC 3339)."),
            Field(
                "power_w",
                "integer",
                "Mean active power drawn over the half-hour.",
                unit="W",
                minimum=0,
                maximum=MAX_POWER_W,
                personal=True,
                sensitive=True,  # a load curve reveals presence and habits
            ),
            _DISTRICT,
        ),
        notes={"coverage": {"since": "2025-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}},
    )

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def well_formed(self, subject: str) -> bool:
        return self.fleet.ids.well_formed(subject)

    def records(
        self, subject: str, window: Window, after: Position | None
    ) -> Iterator[tuple[Position, Record]]:
        meter = self.fleet.lookup(subject)
        if meter is None:
            return
        slots = window.slots(synth.YEAR_START, synth.HALF_HOUR, synth.SLOTS)
        for slot in resume(slots, after):
            yield (
                (slot,),
                {
                    "prm": meter.prm,
                    "start": synth.iso_instant(synth.YEAR_START + slot * synth.HALF_HOUR),
                    "power_w": self.fleet.power(meter, slot),
                    "district": meter.district,
                },
            )


class Daily(Dataset):
    schema = Schema(
        id="daily",
        title={"fr": "Consommation quotidienne", "en": "Daily consumption"},
        data_category="energy.electricity.daily",
        subject_field="prm",
        time_field="date",
        resolution="P1D",
        max_records_per_subject_per_day=1,
        fields=(
            _PRM,
            Field("date", "date", "The UTC day (its 48 half-hours of the load curve)."),
            Field(
                "energy_wh",
                "integer",
                "Energy drawn that day: the load curve's half-hours x 0.5 h, rounded.",
                unit="W.h",
                minimum=0,
                maximum=MAX_DAILY_WH,
                personal=True,
            ),
            _DISTRICT,
        ),
        notes={"coverage": {"since": "2025-01-01", "until": "2026-01-01"}},
    )

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def well_formed(self, subject: str) -> bool:
        return self.fleet.ids.well_formed(subject)

    def records(
        self, subject: str, window: Window, after: Position | None
    ) -> Iterator[tuple[Position, Record]]:
        meter = self.fleet.lookup(subject)
        if meter is None:
            return
        days = window.slots(synth.YEAR_START, synth.DAY, synth.DAYS)
        for day in resume(days, after):
            yield (
                (day,),
                {
                    "prm": meter.prm,
                    "date": synth.day_date(day).isoformat(),
                    "energy_wh": self.fleet.day_energy(meter, day),
                    "district": meter.district,
                },
            )


def demo_subjects(fleet: Fleet, count: int = 10) -> list[dict[str, Any]]:
    """`count` homes: the first half of them with electric heating, the rest without."""
    wanted = {True: count // 2, False: count - count // 2}
    chosen: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for index in range(METERS):
        meter = fleet.meter(index)
        if len(chosen[meter.heating]) < wanted[meter.heating]:
            chosen[meter.heating].append(
                {
                    "prm": meter.prm,
                    "district": meter.district,
                    "subscribed_kva": meter.kva,
                    "electric_heating": meter.heating,
                }
            )
        if all(len(chosen[kind]) == wanted[kind] for kind in chosen):
            break
    return chosen[True] + chosen[False]


def holder(seed: str) -> Holder:
    fleet = Fleet(seed)
    datasets: list[Dataset] = [LoadCurve(fleet), Daily(fleet)]
    return Holder(
        name="electricity",
        organisation="Brévanne Réseau Électrique (demo distributor)",
        description={
            "fr": "Gestionnaire du réseau de distribution d'électricité (démonstration).",
            "en": "Electricity distribution system operator (demo).",
        },
        datasets={dataset.id: dataset for dataset in datasets},
        demo_subjects=lambda count=None: demo_subjects(fleet, *([count] if count else [])),
        seed=seed,
    )
