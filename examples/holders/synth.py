"""Deterministic, lazy synthetic data: every value is a pure function of (seed, label, coordinates).

Nothing is generated ahead or kept per subject: a page is computed from its subject and its time
slots alone, so the same request always gives the same bytes and memory stays flat however many
meters or days are read. Only the seed changes the data (ids included).
"""

from __future__ import annotations

import hashlib
import math
import struct
from datetime import UTC, date, datetime, timedelta
from statistics import NormalDist
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")
YEAR = 2025
YEAR_START = datetime(YEAR, 1, 1, tzinfo=UTC)
YEAR_END = datetime(YEAR + 1, 1, 1, tzinfo=UTC)
DAYS = 365
DAY = timedelta(days=1)
HALF_HOUR = timedelta(minutes=30)
SLOTS_PER_DAY = 48
SLOTS = DAYS * SLOTS_PER_DAY  # 17,520 half-hours in the year
LATITUDE = 46.58  # the fictional Pays de Brévanne sits where Poitiers does
LONGITUDE = 0.34

# examples/charter.yaml, territory.partitions.districts: public keys, so statistics by district
# need no partition selection (DESIGN.md, "The charter").
DISTRICTS = tuple(f"D{n:02d}" for n in range(1, 21))

# Public holidays in France in 2025 (Code du travail, art. L3133-1).
PUBLIC_HOLIDAYS = frozenset(
    date(YEAR, month, day)
    for month, day in (
        (1, 1),
        (4, 21),  # Easter Monday
        (5, 1),
        (5, 8),
        (5, 29),  # Ascension
        (6, 9),  # Whit Monday
        (7, 14),
        (8, 15),
        (11, 1),
        (11, 11),
        (12, 25),
    )
)
# School holidays of academic zone A (Poitiers) for 2024-25 and 2025-26, half-open [first day
# off, day classes resume), plus the Ascension bridge day.
SCHOOL_HOLIDAYS = (
    (date(2024, 12, 21), date(2025, 1, 6)),
    (date(2025, 2, 22), date(2025, 3, 10)),
    (date(2025, 4, 19), date(2025, 5, 5)),
    (date(2025, 5, 30), date(2025, 5, 31)),
    (date(2025, 7, 5), date(2025, 9, 1)),
    (date(2025, 10, 18), date(2025, 11, 3)),
    (date(2025, 12, 20), date(2026, 1, 5)),
)

_STANDARD_NORMAL = NormalDist()
_TWO_32 = 2.0**32


def iso_instant(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, to the second: one spelling per instant."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day_date(day: int) -> date:
    return (YEAR_START + day * DAY).date()


def is_day_off(day: date) -> bool:
    """Weekends and public holidays."""
    return day.weekday() >= 5 or day in PUBLIC_HOLIDAYS


def is_school_holiday(day: date) -> bool:
    return any(first <= day < resume for first, resume in SCHOOL_HOLIDAYS)


def season(day: int) -> float:
    """1 in the coldest days (around 20 January), -1 in the warmest (around 21 July)."""
    return math.cos(2 * math.pi * (day - 19) / DAYS)


def day_length(day: int) -> float:
    """Hours between sunrise and sunset at the territory's latitude (Cooper's declination)."""
    declination = math.radians(23.44) * math.sin(2 * math.pi * (284 + day + 1) / DAYS)
    cos_hour_angle = -math.tan(math.radians(LATITUDE)) * math.tan(declination)
    return 24 / math.pi * math.acos(max(-1.0, min(1.0, cos_hour_angle)))


def solar_noon_utc() -> float:
    """Solar noon in UTC hours at the territory's longitude (equation of time ignored)."""
    return 12 - LONGITUDE / 15


class Draws:
    """Uniform draws in (0, 1) addressed by a label and coordinates, keyed by the seed.

    BLAKE2b in keyed mode is a pseudo-random function: no state, no order, so any record can be
    computed alone, in any order, by any process, and always comes out the same.
    """

    def __init__(self, seed: str) -> None:
        self.seed = seed
        self._key = hashlib.blake2b(seed.encode("utf-8"), digest_size=32).digest()

    def _digest(self, parts: tuple[object, ...]) -> bytes:
        message = "\x1f".join(str(part) for part in parts).encode("utf-8")
        return hashlib.blake2b(message, digest_size=16, key=self._key).digest()

    def uniforms(self, *parts: object) -> tuple[float, float, float, float]:
        """Four independent uniforms in (0, 1) from one hash (never exactly 0 or 1)."""
        a, b, c, d = struct.unpack(">4I", self._digest(parts))
        return (
            (a + 0.5) / _TWO_32,
            (b + 0.5) / _TWO_32,
            (c + 0.5) / _TWO_32,
            (d + 0.5) / _TWO_32,
        )

    def uniform(self, *parts: object) -> float:
        return self.uniforms(*parts)[0]

    def integer(self, *parts: object) -> int:
        """A 128-bit integer: for identifiers and round functions."""
        return int.from_bytes(self._digest(parts), "big")

    def normal(self, *parts: object) -> float:
        return normal(self.uniform(*parts))

    def token(self, *parts: object, length: int = 16) -> str:
        """An opaque hexadecimal id that reveals nothing of its coordinates."""
        return self._digest(parts).hex()[:length]


def normal(u: float) -> float:
    """A standard normal deviate from a uniform in (0, 1) (inverse CDF, so one draw each)."""
    return _STANDARD_NORMAL.inv_cdf(u)


def lognormal(u: float, sigma: float) -> float:
    """A multiplicative noise with median 1."""
    return math.exp(sigma * normal(u))


def between(u: float, low: float, high: float) -> float:
    return low + (high - low) * u


class Identifiers:
    """A keyed permutation between indexes 0..count-1 and `digits`-digit identifiers.

    A four-round Feistel network over two halves of the digits: a bijection of the whole
    10**digits space, so ids never collide, look random (no visible step between neighbours),
    and map back to their index without any table (constant memory).
    """

    ROUNDS = 4

    def __init__(self, draws: Draws, label: str, *, digits: int, count: int) -> None:
        if digits % 2 or not 0 < count <= 10**digits:
            raise ValueError("digits must be even and count must fit in them")
        self._draws = draws
        self._label = label
        self.digits = digits
        self.count = count
        self._half = int(10 ** (digits // 2))

    def _round(self, number: int, value: int) -> int:
        return self._draws.integer("feistel", self._label, number, value) % self._half

    def encode(self, index: int) -> str:
        if not 0 <= index < self.count:
            raise IndexError(index)
        left, right = divmod(index, self._half)
        for number in range(self.ROUNDS):
            left, right = right, (left + self._round(number, right)) % self._half
        return f"{left * self._half + right:0{self.digits}d}"

    def decode(self, identifier: str) -> int | None:
        """The index of a well-formed identifier, or None when it names no subject of ours."""
        if len(identifier) != self.digits or not identifier.isascii() or not identifier.isdigit():
            return None
        left, right = divmod(int(identifier), self._half)
        for number in reversed(range(self.ROUNDS)):
            left, right = (right - self._round(number, left)) % self._half, left
        index = left * self._half + right
        return index if index < self.count else None

    def well_formed(self, identifier: str) -> bool:
        return len(identifier) == self.digits and identifier.isascii() and identifier.isdigit()


class Weather:
    """Outdoor temperature of the territory, shared by every holder built with the same seed.

    A seasonal sine (about 4 °C in January, 19.5 °C in July, as in Poitiers), day-to-day
    anomalies smoothed over neighbouring days and weeks (cold snaps, heat waves), and a daily
    cycle (coldest before dawn, warmest mid-afternoon).
    """

    _CACHE_SIZE = 64  # a bounded memo: the daily means of the days a page is walking

    def __init__(self, draws: Draws) -> None:
        self._draws = draws
        self._means: dict[int, float] = {}

    def _noise(self, day: int) -> float:
        return self._draws.normal("weather-day", day)

    def daily_mean(self, day: int) -> float:
        cached = self._means.get(day)
        if cached is not None:
            return cached
        smoothed = (self._noise(day - 1) + 2 * self._noise(day) + self._noise(day + 1)) / 4
        regime = self._draws.normal("weather-week", (day + 3) // 7)
        mean = 11.8 - 7.7 * season(day) + 3.6 * smoothed + 1.6 * regime
        if len(self._means) >= self._CACHE_SIZE:
            self._means.clear()
        self._means[day] = mean
        return mean

    def at(self, day: int, local_hour: float, *, inertia: float = 0.0) -> float:
        """Temperature (°C) on `day` (days since 1 January) at `local_hour` (0-24).

        `inertia` (0-1) damps the daily cycle, as a building's walls do for its heating needs.
        """
        cycle = 4.0 * math.cos(2 * math.pi * (local_hour - 15) / 24)
        return self.daily_mean(day) + (1 - inertia) * cycle


def interpolate(profile: tuple[float, ...], hour: float) -> float:
    """A 24-point hourly profile read at a fractional hour, linearly, wrapping at midnight."""
    low = int(hour) % 24
    fraction = hour - int(hour)
    return profile[low] * (1 - fraction) + profile[(low + 1) % 24] * fraction


def round_half_up(value: float) -> int:
    """Rounding for non-negative quantities that a reader can redo by hand (no banker's rule)."""
    return math.floor(value + 0.5)
