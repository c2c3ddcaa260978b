"""The relay kick with a broker: sent from a thread, coalesced, and never missing a commit."""

from __future__ import annotations

import threading
import time

from common.outbox import Kicker


class _Sends:
    """A fake `relay_outbox.apply_async`: counts, and can hold a send until released."""

    def __init__(self) -> None:
        self.count = 0
        self.sent = threading.Event()
        self.hold = threading.Event()
        self.hold.set()

    def __call__(self) -> None:
        self.hold.wait(5)
        self.count += 1
        self.sent.set()


def _wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_a_kick_is_sent_without_the_committing_thread_waiting_for_it():
    sends = _Sends()
    sends.hold.clear()  # the broker is slow
    kicker = Kicker(sends, interval=0.0)
    started = time.monotonic()
    kicker.kick()
    assert time.monotonic() - started < 0.5
    assert sends.count == 0
    sends.hold.set()
    assert _wait_for(lambda: sends.count == 1)


def test_kicks_asked_for_together_are_sent_as_one():
    sends = _Sends()
    sends.hold.clear()
    kicker = Kicker(sends, interval=0.0)
    kicker.kick()
    assert _wait_for(lambda: kicker._wanted.is_set() is False)  # the thread took the first
    for _ in range(50):
        kicker.kick()  # while the first is being sent
    sends.hold.set()
    assert _wait_for(lambda: sends.count == 2)
    time.sleep(0.1)
    assert sends.count == 2  # 51 commits, 2 kicks


def test_a_commit_during_the_pause_is_kicked_when_the_pause_ends():
    sends = _Sends()
    kicker = Kicker(sends, interval=0.2)
    kicker.kick()
    assert _wait_for(lambda: sends.count == 1)
    kicker.kick()  # within the pause after the first kick
    time.sleep(0.05)
    assert sends.count == 1
    assert _wait_for(lambda: sends.count == 2, timeout=2.0)


def test_a_failing_send_does_not_stop_later_kicks():
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("broker down")

    kicker = Kicker(flaky, interval=0.0)
    kicker.kick()
    assert _wait_for(lambda: len(calls) == 1)
    time.sleep(0.05)
    kicker.kick()
    assert _wait_for(lambda: len(calls) == 2)
