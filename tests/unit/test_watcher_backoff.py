"""Unit tests of the reconnect backoff, with fake time and fixed randomness."""

from __future__ import annotations

import random

import pytest

from watcher.backoff import (
    RECONNECT_INITIAL_SECONDS,
    RECONNECT_MAX_SECONDS,
    RECONNECT_RESET_AFTER_SECONDS,
    Backoff,
)
from watcher.testing import FakeClock


class ConstantRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("jitter_draw", "expected"),
    [
        (0.0, [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0]),
        (1.0, [1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0]),
    ],
)
def test_backoff_doubles_to_max(jitter_draw: float, expected: list[float]) -> None:
    clock = FakeClock()
    backoff = Backoff(clock, rng=ConstantRandom(jitter_draw))

    delays = [backoff.next_delay() for _ in expected]

    assert delays == pytest.approx(expected)


def test_backoff_stays_within_bounds() -> None:
    clock = FakeClock()
    backoff = Backoff(clock, rng=random.Random(1))

    delays = [backoff.next_delay() for _ in range(50)]

    assert min(delays) >= RECONNECT_INITIAL_SECONDS
    assert max(delays) <= RECONNECT_MAX_SECONDS


def test_backoff_resets_after_healthy_period() -> None:
    clock = FakeClock()
    backoff = Backoff(clock, rng=ConstantRandom(0.0))
    for _ in range(5):
        clock.advance(backoff.next_delay())

    clock.advance(RECONNECT_RESET_AFTER_SECONDS + 1)

    assert backoff.next_delay() == pytest.approx(RECONNECT_INITIAL_SECONDS)
    assert backoff.attempt == 1


def test_backoff_keeps_growing_within_reset_period() -> None:
    clock = FakeClock()
    backoff = Backoff(clock, rng=ConstantRandom(0.0))
    clock.advance(backoff.next_delay())

    clock.advance(RECONNECT_RESET_AFTER_SECONDS - 1)

    assert backoff.next_delay() == pytest.approx(1.6)
