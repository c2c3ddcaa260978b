"""The one source of "now": timezone-aware UTC, replaceable in tests (never utcnow())."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

_now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return _now()


@contextmanager
def frozen(at: datetime) -> Iterator[Callable[[datetime], None]]:
    """Freeze the clock at `at` (aware) for the block; the yielded function moves it."""
    global _now
    if at.tzinfo is None:
        raise ValueError("the clock only holds timezone-aware times")
    previous, moment = _now, [at]
    _now = lambda: moment[0]  # noqa: E731

    def move_to(when: datetime) -> None:
        moment[0] = when

    try:
        yield move_to
    finally:
        _now = previous


def as_utc(value: datetime) -> datetime:
    """Read back a stored time as aware UTC (SQLite forgets the zone, PostgreSQL keeps it)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
