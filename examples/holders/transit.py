"""Brévanne Mobilités, a demo transit operator in the manner of La Rochelle's Yélo: one card for
buses, bike share, car share and the harbour ferry.

1,500 cards (12-digit ids), one dataset `trips`: mode, start and end, distance, CO2 and district
of origin of every trip in 2025. A day's trips are a pure function of (seed, card, day):
commuters' two bus rides on work days, bike-share rides (fewer in winter), car-share outings
(mostly on days off), ferry crossings between Port-Neuf and Les Minimes (mostly in summer), and
occasional bus rides. Trips never overlap and a card makes at most 8 a day.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, NamedTuple

from . import synth
from .app import Holder
from .protocol import Dataset, Field, Position, Record, Schema, Window
from .synth import Draws, Identifiers

CARDS = 1500
MAX_TRIPS_PER_DAY = 8
MIN_CHANGE_S = 300  # five minutes between getting off and getting on again

# Emission factors, g CO2e per passenger-km, with the vehicle's construction, from ADEME's
# Impact CO2 (impactco2.fr, data file src/data/categories/deplacement.json of
# incubateur-ademe/impactco2), whose figures come from the Base Carbone / Base Empreinte
# ("Routier" documentation): "fuel" (combustion and upstream) + "construction".
CO2_G_PER_KM = {
    # "Bus - moteur thermique": 104 + 8.7. Yélo's fleet is mostly diesel buses.
    "bus": 112.7,
    # "Vélo (ou trottinette) à assistance électrique": 2.0 + 8.7. We count every shared bike
    # as electric, the cautious choice (a mechanical bike counts 0 in Impact CO2).
    "bike_share": 10.7,
    # "Voiture - moteur électrique", one occupant: 19.8 + 83.6. The demo's car-share fleet is
    # electric (a thermal car would be 192 + 25.6 = 217.6).
    "car_share": 103.4,
    # Impact CO2 has no boat. UK DESNZ/DEFRA greenhouse-gas conversion factors, "Ferry - foot
    # passenger", about 0.0187 kg CO2e per passenger-km: an assumption, a small harbour
    # shuttle running half empty emits more.
    "ferry": 18.7,
}
MODES = tuple(CO2_G_PER_KM)
SPEED_M_PER_S = {"bus": 17 / 3.6, "bike_share": 14 / 3.6, "car_share": 28 / 3.6, "ferry": 11 / 3.6}
MAX_DISTANCE_M = {"bus": 15_000, "bike_share": 10_000, "car_share": 50_000, "ferry": 4_000}
MAX_TRIP_DISTANCE_M = max(MAX_DISTANCE_M.values())
MAX_TRIP_CO2_G = max(
    synth.round_half_up(MAX_DISTANCE_M[mode] * CO2_G_PER_KM[mode] / 1000) for mode in MODES
)
HARBOUR = ("D09", "D04")  # the ferry crosses between Port-Neuf and Les Minimes


def co2_grams(mode: str, distance_m: int) -> int:
    """CO2e of one passenger's trip: distance x the mode's factor, rounded to the gram."""
    return synth.round_half_up(distance_m * CO2_G_PER_KM[mode] / 1000)


@dataclass(frozen=True, slots=True)
class Card:
    index: int
    card_id: str
    home: str
    work: str
    commuter: bool
    commute_m: float
    bike_per_day: float
    car_share_per_day: float
    ferry_per_day: float
    occasional_per_day: float
    away_from: int
    away_days: int


class Trip(NamedTuple):
    start_s: int  # seconds after local midnight
    mode: str
    distance_m: int
    origin: str


class Operator:
    def __init__(self, seed: str) -> None:
        self.draws = Draws(seed)
        self.ids = Identifiers(self.draws, "card", digits=12, count=CARDS)

    def card(self, index: int) -> Card:
        u = self.draws.uniforms("card", index)
        v = self.draws.uniforms("card-more", index)
        w = self.draws.uniforms("card-rates", index)
        districts = synth.DISTRICTS
        away = self.draws.uniform("card-away", index)
        return Card(
            index=index,
            card_id=self.ids.encode(index),
            home=districts[int(u[0] * len(districts))],
            work="D01" if u[3] < 0.35 else districts[int(u[2] * len(districts))],
            commuter=u[1] < 0.45,
            commute_m=1500 + v[0] ** 1.3 * 10_500,
            bike_per_day=synth.between(w[0], 0.05, 0.9) if v[1] < 0.35 else 0.0,
            car_share_per_day=synth.between(w[1], 0.02, 0.1) if v[2] < 0.1 else 0.0,
            ferry_per_day=synth.between(w[2], 0.01, 0.06) if v[3] < 0.15 else 0.0,
            occasional_per_day=synth.between(w[3], 0.05, 0.25),
            away_from=int(synth.between(away, 186, 215)) if away < 0.6 else -1,
            away_days=21 if away < 0.6 else 0,
        )

    def lookup(self, card_id: str) -> Card | None:
        index = self.ids.decode(card_id)
        return None if index is None else self.card(index)

    def _district(self, u: float) -> str:
        return synth.DISTRICTS[int(u * len(synth.DISTRICTS))]

    def trips(self, card: Card, day: int) -> list[Trip]:
        """The card's trips on `day` (days since 1 January), in order, never overlapping."""
        if card.away_from <= day < card.away_from + card.away_days:
            return []
        draws, index = self.draws, card.index
        day_off = synth.is_day_off(synth.day_date(day))
        summer = (1 - synth.season(day)) / 2  # 0 in January, 1 in July
        planned: list[Trip] = []

        u = draws.uniforms("commute", index, day)
        if card.commuter and not day_off:
            if u[0] < 0.9:
                out = int(7 * 3600 + u[2] * 2 * 3600)
                planned.append(Trip(out, "bus", self._jitter(card.commute_m, u[3]), card.home))
            if u[1] < 0.88:
                v = draws.uniforms("commute-back", index, day)
                back = int(16.5 * 3600 + v[0] * 2.5 * 3600)
                planned.append(Trip(back, "bus", self._jitter(card.commute_m, v[1]), card.work))

        rides = card.bike_per_day * (0.35 + 0.65 * summer) * (1.3 if day_off else 1.0)
        for ride in range(2):
            b = draws.uniforms("bike", index, day, ride)
            if b[0] < rides / 2:
                distance = 800 + b[2] ** 1.5 * 6000
                origin = card.home if b[3] < 0.5 else self._district(b[3])
                planned.append(
                    Trip(int(8 * 3600 + b[1] * 12 * 3600), "bike_share", int(distance), origin)
                )

        c = draws.uniforms("car", index, day)
        if c[0] < card.car_share_per_day * (2.5 if day_off else 0.7):
            distance = int(4000 + c[2] ** 1.5 * 36_000)
            start = int(9 * 3600 + c[1] * 8 * 3600)
            planned.append(Trip(start, "car_share", distance, card.home))
            away_for = int(1.5 * 3600 + c[3] * 4 * 3600)
            destination = self._district(draws.uniform("car-destination", index, day))
            planned.append(Trip(start + away_for, "car_share", distance, destination))

        f = draws.uniforms("ferry", index, day)
        if f[0] < card.ferry_per_day * (0.2 + 0.8 * summer) * (2.0 if day_off else 1.0):
            start = int(10 * 3600 + f[1] * 6 * 3600)
            distance = int(2300 + f[2] * 600)
            planned.append(Trip(start, "ferry", distance, HARBOUR[0]))
            back = start + int(3600 + f[3] * 4 * 3600)
            planned.append(Trip(back, "ferry", int(distance * 1.02), HARBOUR[1]))

        o = draws.uniforms("bus", index, day)
        if o[0] < card.occasional_per_day * (1.2 if day_off else 1.0):
            origin = card.home if o[3] < 0.6 else self._district(o[3])
            planned.append(
                Trip(int(9 * 3600 + o[1] * 11 * 3600), "bus", int(1000 + o[2] * 7000), origin)
            )

        return self._schedule(planned)

    @staticmethod
    def _jitter(distance: float, u: float) -> int:
        return int(distance * synth.between(u, 0.95, 1.05))

    @staticmethod
    def _schedule(planned: list[Trip]) -> list[Trip]:
        """Sorted, each starting after the previous one ended, all within the day, at most 8."""
        scheduled: list[Trip] = []
        free_at = 0
        for trip in sorted(planned):
            start = max(trip.start_s, free_at)
            end = start + _duration(trip.mode, trip.distance_m)
            if end >= 24 * 3600 or len(scheduled) == MAX_TRIPS_PER_DAY:
                break
            scheduled.append(trip._replace(start_s=start))
            free_at = end + MIN_CHANGE_S
        return scheduled


def _duration(mode: str, distance_m: int) -> int:
    return round(distance_m / SPEED_M_PER_S[mode])


def _local(day: int, seconds: int) -> datetime:
    """Wall-clock time `seconds` after local midnight (zoneinfo does the DST arithmetic)."""
    midnight = datetime.combine(synth.day_date(day), time(), tzinfo=synth.PARIS)
    return midnight + timedelta(seconds=seconds)


class Trips(Dataset):
    schema = Schema(
        id="trips",
        title={
            "fr": "Trajets (bus, vélo, autopartage, bateau)",
            "en": "Trips (bus, bike, car share, ferry)",
        },
        data_category="mobility.trips",
        subject_field="card_id",
        time_field="start",
        max_records_per_subject_per_day=MAX_TRIPS_PER_DAY,
        fields=(
            Field(
                "card_id",
                "string",
                "The transit card's 12-digit number, the subject identifier.",
                personal=True,
                identifier=True,
                pattern="^[0-9]{12}$",
            ),
            Field(
                "trip_id",
                "string",
                "Opaque trip id (16 hex digits); it does not encode the card.",
                pattern="^[0-9a-f]{16}$",
            ),
            Field("mode", "string", "How the trip was made.", values=MODES, personal=True),
            Field("start", "datetime", "Boarding time, UTC (RFC 3339).", personal=True),
            Field("end", "datetime", "Alighting time, UTC (RFC 3339).", personal=True),
            Field(
                "distance_m",
                "integer",
                "Distance travelled.",
                unit="m",
                minimum=0,
                maximum=MAX_TRIP_DISTANCE_M,
                personal=True,
            ),
            Field(
                "co2_g",
                "integer",
                "CO2e of the trip for one passenger: distance x the mode's factor (see "
                "co2_factors), rounded.",
                unit="g",
                minimum=0,
                maximum=MAX_TRIP_CO2_G,
                personal=True,
            ),
            Field(
                "origin_district",
                "string",
                "District where the trip started (charter partition `districts`).",
                values=synth.DISTRICTS,
                partition="districts",
                personal=True,
                sensitive=True,  # with the time, it says where someone was
            ),
        ),
        notes={
            "coverage": {"since": "2025-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            "co2_factors": {
                "unit": "g CO2e per passenger-km",
                "values": CO2_G_PER_KM,
                "sources": {
                    "bus": "ADEME Impact CO2 / Base Carbone: bus, thermal engine",
                    "bike_share": "ADEME Impact CO2 / Base Carbone: electrically assisted bike",
                    "car_share": "ADEME Impact CO2 / Base Carbone: electric car, one occupant",
                    "ferry": "UK DESNZ GHG conversion factors: ferry, foot passenger (assumed)",
                },
            },
        },
    )

    def __init__(self, operator: Operator) -> None:
        self.operator = operator

    def well_formed(self, subject: str) -> bool:
        return self.operator.ids.well_formed(subject)

    def records(
        self, subject: str, window: Window, after: Position | None
    ) -> Iterator[tuple[Position, Record]]:
        card = self.operator.lookup(subject)
        if card is None:
            return
        # A trip's UTC date is its local date (trips run 07:00-24:00 local, UTC+1 or +2), so
        # only the days the window touches are computed; each trip is then checked exactly.
        first, stop = 0, synth.DAYS
        if window.since is not None:
            first = max(first, (window.since - synth.YEAR_START) // synth.DAY)
        if window.until is not None:
            stop = min(stop, -((synth.YEAR_START - window.until) // synth.DAY))
        if after is not None:
            first = max(first, after[0])
        for day in range(first, stop):
            for number, trip in enumerate(self.operator.trips(card, day)):
                if after is not None and (day, number) <= after:
                    continue
                start = _local(day, trip.start_s)
                if not window.contains(start):
                    continue
                end = start + timedelta(seconds=_duration(trip.mode, trip.distance_m))
                yield (
                    (day, number),
                    {
                        "card_id": card.card_id,
                        "trip_id": self.operator.draws.token("trip-id", card.index, day, number),
                        "mode": trip.mode,
                        "start": synth.iso_instant(start),
                        "end": synth.iso_instant(end),
                        "distance_m": trip.distance_m,
                        "co2_g": co2_grams(trip.mode, trip.distance_m),
                        "origin_district": trip.origin,
                    },
                )


def demo_subjects(operator: Operator, count: int = 6) -> list[dict[str, Any]]:
    subjects = []
    for index in range(count):
        card = operator.card(index)
        uses = [
            label
            for label, used in (
                ("bus commute", card.commuter),
                ("bike share", card.bike_per_day > 0),
                ("car share", card.car_share_per_day > 0),
                ("ferry", card.ferry_per_day > 0),
            )
            if used
        ]
        subjects.append({"card_id": card.card_id, "home_district": card.home, "uses": uses})
    return subjects


def holder(seed: str) -> Holder:
    operator = Operator(seed)
    dataset = Trips(operator)
    return Holder(
        name="transit",
        organisation="Brévanne Mobilités (demo transit operator)",
        description={
            "fr": "Réseau de transport : bus, vélos et voitures en libre-service, bateau.",
            "en": "Transit network: buses, shared bikes and cars, ferry.",
        },
        datasets={dataset.id: dataset},
        demo_subjects=lambda count=None: demo_subjects(operator, *([count] if count else [])),
        seed=seed,
    )
