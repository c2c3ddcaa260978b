"""Brévanne's public buildings, in the manner of Grand Poitiers' IoT sensor network: 30 schools,
gyms, nurseries, libraries, a pool, the town hall... with daily water, gas, electricity and
outdoor-lighting readings for 2025.

Non-personal open data under Etalab's Licence Ouverte 2.0: served without a token, with a
`Link: <licence>; rel="license"` header, and the `subject` filter ignored (the protocol). A day's
readings are a pure function of (seed, building, day): opening days by kind (school holidays of
zone A for schools), heating by degree-days, lighting by the length of the night minus the
6-hour mid-night switch-off many French towns practise.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from . import synth
from .app import Holder
from .protocol import LICENCE_OUVERTE, Dataset, Field, Position, Record, Schema, Window, resume
from .synth import Draws, Weather

MAX_WATER_L = 150_000
MAX_GAS_WH = 10_000_000
MAX_ELECTRICITY_WH = 5_000_000
MAX_LIGHTING_WH = 100_000
HEATING_BASE_C = 15.0  # public buildings: heating season when the daily mean is below 15 °C
LIGHTS_OFF_HOURS = 6.0  # outdoor lighting switched off from about 23:30 to 05:30


@dataclass(frozen=True, slots=True)
class Kind:
    """What a kind of building does with a day: when it is open and what it draws."""

    area: tuple[int, int]  # m²
    water_l_per_m2: float  # per open day
    electricity_wh_per_m2: float  # per open day
    lighting_w: tuple[int, int]
    open_weekdays: frozenset[int]  # Monday = 0
    school_calendar: bool = False
    summer_closure: bool = False
    base_gas_kwh: float = 0.0  # per day, whatever the weather (a pool's water)


_WEEKDAYS = frozenset({0, 1, 2, 3, 4})
KINDS: dict[str, Kind] = {
    "school": Kind((1200, 3500), 1.2, 110, (400, 1200), frozenset({0, 1, 3, 4}), True),
    "nursery": Kind((300, 700), 4.0, 160, (200, 600), _WEEKDAYS, summer_closure=True),
    "gym": Kind((1200, 2500), 1.0, 120, (800, 2500), frozenset(range(7)), summer_closure=True),
    "pool": Kind((1500, 3000), 25.0, 900, (600, 1500), frozenset(range(7)), base_gas_kwh=3500),
    "town_hall": Kind((2500, 5000), 0.4, 250, (1500, 4000), _WEEKDAYS),
    "offices": Kind((1000, 3000), 0.4, 220, (300, 900), _WEEKDAYS),
    "library": Kind((800, 2000), 0.3, 200, (300, 900), frozenset({1, 2, 3, 4, 5})),
    "museum": Kind((1000, 2500), 0.3, 280, (800, 2000), frozenset({1, 2, 3, 4, 5, 6})),
    "conservatory": Kind((800, 1800), 0.3, 150, (300, 800), frozenset({0, 1, 2, 3, 4, 5})),
    "community_centre": Kind((400, 1200), 0.8, 140, (300, 900), frozenset({0, 1, 2, 3, 4, 5})),
    "event_hall": Kind((600, 1500), 0.6, 120, (600, 1800), frozenset({4, 5, 6})),
    "technical_centre": Kind((1500, 4000), 0.5, 180, (800, 2500), _WEEKDAYS),
    "stadium": Kind((800, 1500), 3.0, 90, (3000, 4000), frozenset({2, 5, 6}), summer_closure=True),
}

# (name, kind, district): the district ids of examples/charter.yaml.
SITES = (
    ("Hôtel de ville", "town_hall", "D01"),
    ("Centre administratif Jean-Moulin", "offices", "D01"),
    ("Médiathèque François-Mitterrand", "library", "D01"),
    ("Musée des Beaux-Arts", "museum", "D01"),
    ("Conservatoire de musique et de danse", "conservatory", "D01"),
    ("École élémentaire Jules-Ferry", "school", "D02"),
    ("École maternelle Les Tilleuls", "school", "D02"),
    ("Crèche des Halles", "nursery", "D02"),
    ("École élémentaire Paul-Bert", "school", "D03"),
    ("Médiathèque de la Gare", "library", "D03"),
    ("Gymnase des Minimes", "gym", "D04"),
    ("Groupe scolaire Saint-Éloi", "school", "D05"),
    ("Crèche Les Petits Pas", "nursery", "D06"),
    ("Salle de sport de la Croix-Blanche", "gym", "D06"),
    ("Maison de quartier des Tanneries", "community_centre", "D07"),
    ("École maternelle de Bellevue", "school", "D08"),
    ("Piscine municipale de Port-Neuf", "pool", "D09"),
    ("Stade et vestiaires de Port-Neuf", "stadium", "D09"),
    ("École élémentaire des Jardins de Vaux", "school", "D10"),
    ("Gymnase du Plateau", "gym", "D11"),
    ("Crèche de la Rochette", "nursery", "D12"),
    ("École des Coteaux", "school", "D13"),
    ("Maison de quartier de Beaulieu", "community_centre", "D14"),
    ("École élémentaire Saint-Jean", "school", "D15"),
    ("Centre technique municipal", "technical_centre", "D16"),
    ("Gymnase des Forges", "gym", "D16"),
    ("Salle des fêtes du Champ-de-Foire", "event_hall", "D17"),
    ("École maternelle de la Pépinière", "school", "D18"),
    ("Centre social du Val-Fleuri", "community_centre", "D19"),
    ("Groupe scolaire des Hauts de Brève", "school", "D20"),
)


@dataclass(frozen=True, slots=True)
class Building:
    index: int
    building_id: str
    name: str
    kind: str
    district: str
    floor_area_m2: int
    heating: str  # gas | electric (heat pump)
    lighting_w: int


class Estate:
    def __init__(self, seed: str) -> None:
        self.draws = Draws(seed)
        self.weather = Weather(self.draws)

    @staticmethod
    def ids() -> Sequence[str]:
        return tuple(f"BRV-BAT-{index + 1:03d}" for index in range(len(SITES)))

    def building(self, index: int) -> Building:
        name, kind_name, district = SITES[index]
        kind = KINDS[kind_name]
        u = self.draws.uniforms("building", index)
        return Building(
            index=index,
            building_id=f"BRV-BAT-{index + 1:03d}",
            name=name,
            kind=kind_name,
            district=district,
            floor_area_m2=int(synth.between(u[0], *kind.area)),
            heating="gas" if u[1] < 0.75 or kind.base_gas_kwh else "electric",
            lighting_w=int(synth.between(u[2], *kind.lighting_w)),
        )

    def lookup(self, building_id: str) -> Building | None:
        prefix, _, number = building_id.rpartition("-")
        if prefix != "BRV-BAT" or not number.isdigit() or not 1 <= int(number) <= len(SITES):
            return None
        return self.building(int(number) - 1)

    def is_open(self, building: Building, day: date) -> bool:
        kind = KINDS[building.kind]
        if day in synth.PUBLIC_HOLIDAYS or day.weekday() not in kind.open_weekdays:
            return False
        if kind.school_calendar and synth.is_school_holiday(day):
            return False
        return not (kind.summer_closure and date(day.year, 7, 28) <= day < date(day.year, 8, 18))

    def readings(self, building: Building, day: int) -> Record:
        kind = KINDS[building.kind]
        area = building.floor_area_m2
        is_open = self.is_open(building, synth.day_date(day))
        u = self.draws.uniforms("reading", building.index, day)
        degrees = max(0.0, HEATING_BASE_C - self.weather.daily_mean(day))
        setting = 1.0 if is_open else 0.55  # set-back on closed days

        water = kind.water_l_per_m2 * area * (1.0 if is_open else 0.04)
        if building.kind == "stadium" and is_open:
            water *= 1 + 1.5 * max(0.0, -synth.season(day))  # pitch watering in summer
        heating_kwh = 0.055 * area * degrees * setting
        gas_kwh = kind.base_gas_kwh if building.heating == "gas" else 0.0
        electricity_kwh = kind.electricity_wh_per_m2 * area / 1000 * (1.0 if is_open else 0.3)
        if building.heating == "gas":
            gas_kwh += heating_kwh
        else:
            electricity_kwh += heating_kwh / 3  # heat pump, seasonal COP about 3
        night = 24 - synth.day_length(day)
        lighting_wh = building.lighting_w * max(0.0, night - LIGHTS_OFF_HOURS)

        return {
            "building_id": building.building_id,
            "date": synth.day_date(day).isoformat(),
            "district": building.district,
            "water_l": _bounded(water * synth.lognormal(u[0], 0.15), MAX_WATER_L),
            "gas_wh": _bounded(gas_kwh * 1000 * synth.lognormal(u[1], 0.08), MAX_GAS_WH),
            "electricity_wh": _bounded(
                electricity_kwh * 1000 * synth.lognormal(u[2], 0.08), MAX_ELECTRICITY_WH
            ),
            "lighting_wh": _bounded(lighting_wh * synth.lognormal(u[3], 0.03), MAX_LIGHTING_WH),
        }


def _bounded(value: float, maximum: int) -> int:
    return min(synth.round_half_up(value), maximum)


_BUILDING_ID = Field(
    "building_id",
    "string",
    "The building's id in the city's asset register.",
    identifier=True,
    pattern="^BRV-BAT-[0-9]{3}$",
)
_DISTRICT = Field(
    "district",
    "string",
    "District of the building (charter partition `districts`).",
    values=synth.DISTRICTS,
    partition="districts",
)


class Readings(Dataset):
    schema = Schema(
        id="daily",
        title={
            "fr": "Relevés quotidiens des bâtiments publics",
            "en": "Daily readings of public buildings",
        },
        data_category="buildings.sensors",
        subject_field="building_id",
        time_field="date",
        resolution="P1D",
        max_records_per_subject_per_day=1,
        personal=False,
        licence=LICENCE_OUVERTE,
        fields=(
            _BUILDING_ID,
            Field("date", "date", "The UTC day."),
            _DISTRICT,
            Field("water_l", "integer", "Water drawn.", unit="L", minimum=0, maximum=MAX_WATER_L),
            Field(
                "gas_wh",
                "integer",
                "Gas burnt, as energy.",
                unit="W.h",
                minimum=0,
                maximum=MAX_GAS_WH,
            ),
            Field(
                "electricity_wh",
                "integer",
                "Electricity drawn by the building (outdoor lighting excluded).",
                unit="W.h",
                minimum=0,
                maximum=MAX_ELECTRICITY_WH,
            ),
            Field(
                "lighting_wh",
                "integer",
                "Outdoor and public lighting attached to the building.",
                unit="W.h",
                minimum=0,
                maximum=MAX_LIGHTING_WH,
            ),
        ),
        notes={"coverage": {"since": "2025-01-01", "until": "2026-01-01"}},
    )

    def __init__(self, estate: Estate) -> None:
        self.estate = estate

    def well_formed(self, subject: str) -> bool:
        return True  # the filter is ignored for open data

    def all_subjects(self) -> Sequence[str]:
        return self.estate.ids()

    def records(
        self, subject: str, window: Window, after: Position | None
    ) -> Iterator[tuple[Position, Record]]:
        building = self.estate.lookup(subject)
        if building is None:
            return
        days = window.slots(synth.YEAR_START, synth.DAY, synth.DAYS)
        for day in resume(days, after):
            yield (day,), self.estate.readings(building, day)


class Sites(Dataset):
    schema = Schema(
        id="sites",
        title={
            "fr": "Bâtiments publics équipés de capteurs",
            "en": "Public buildings with sensors",
        },
        data_category="buildings.sensors",
        subject_field="building_id",
        time_field=None,
        personal=False,
        licence=LICENCE_OUVERTE,
        refresh="P1M",
        fields=(
            _BUILDING_ID,
            Field("name", "string", "The building's name."),
            Field("kind", "string", "What the building is.", values=tuple(KINDS)),
            _DISTRICT,
            Field(
                "floor_area_m2",
                "integer",
                "Heated floor area.",
                unit="m2",
                minimum=0,
                maximum=5000,
            ),
            Field("heating", "string", "Heating energy.", values=("gas", "electric")),
        ),
    )

    def __init__(self, estate: Estate) -> None:
        self.estate = estate

    def well_formed(self, subject: str) -> bool:
        return True

    def all_subjects(self) -> Sequence[str]:
        return self.estate.ids()

    def records(
        self, subject: str, window: Window, after: Position | None
    ) -> Iterator[tuple[Position, Record]]:
        building = self.estate.lookup(subject)
        if building is None or after is not None:
            return
        yield (
            (0,),
            {
                "building_id": building.building_id,
                "name": building.name,
                "kind": building.kind,
                "district": building.district,
                "floor_area_m2": building.floor_area_m2,
                "heating": building.heating,
            },
        )


def demo_subjects(estate: Estate) -> list[dict[str, Any]]:
    return [
        {"building_id": b.building_id, "name": b.name, "kind": b.kind, "district": b.district}
        for b in (estate.building(index) for index in range(len(SITES)))
    ]


def holder(seed: str) -> Holder:
    estate = Estate(seed)
    datasets: list[Dataset] = [Readings(estate), Sites(estate)]
    return Holder(
        name="buildings",
        organisation="Ville de Brévanne, bâtiments communaux (demo sensors)",
        description={
            "fr": "Capteurs des bâtiments publics : eau, gaz, électricité, éclairage. "
            "Données ouvertes sous Licence Ouverte 2.0.",
            "en": "Public buildings' sensors: water, gas, electricity, lighting. Open data "
            "under the Licence Ouverte 2.0.",
        },
        datasets={dataset.id: dataset for dataset in datasets},
        demo_subjects=lambda count=None: demo_subjects(estate)[:count],
        seed=seed,
    )
