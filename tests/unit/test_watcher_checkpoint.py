"""Unit tests of the coalesced checkpoint writer."""

from __future__ import annotations

import pytest

from watcher.checkpoint import Checkpoint, Checkpointer
from watcher.metrics import WatcherMetrics
from watcher.scope import Scope
from watcher.testing import FakeCheckpointStore, FakeClock

SCOPE = Scope()
SELECTOR = "app=x"


def make(
    interval: float = 1.0,
) -> tuple[Checkpointer, FakeCheckpointStore, FakeClock, WatcherMetrics]:
    store = FakeCheckpointStore()
    clock = FakeClock()
    metrics = WatcherMetrics()
    checkpointer = Checkpointer(
        store,
        SCOPE,
        label_selector=SELECTOR,
        interval=interval,
        clock=clock,
        metrics=metrics,
    )
    return checkpointer, store, clock, metrics


def test_checkpoint_first_advance_written() -> None:
    checkpointer, store, _, _ = make()

    checkpointer.advance("5")

    assert store.writes == ["5"]


def test_checkpoint_writes_at_most_once_per_interval() -> None:
    checkpointer, store, clock, _ = make()
    checkpointer.advance("5")

    clock.advance(0.4)
    checkpointer.advance("6")
    clock.advance(0.4)
    checkpointer.advance("7")
    clock.advance(0.4)
    checkpointer.advance("8")

    assert store.writes == ["5", "8"]


def test_checkpoint_flush_writes_pending() -> None:
    checkpointer, store, clock, _ = make()
    checkpointer.advance("5")
    clock.advance(0.1)
    checkpointer.advance("6")

    assert checkpointer.flush() is True

    assert store.writes == ["5", "6"]
    assert store.saved[SCOPE.name].label_selector == SELECTOR


def test_checkpoint_flush_without_change_writes_nothing() -> None:
    checkpointer, store, _, _ = make()
    checkpointer.advance("5")

    checkpointer.flush()
    checkpointer.advance("5")
    checkpointer.flush()

    assert store.writes == ["5"]


def test_checkpoint_failed_write_kept_and_counted() -> None:
    checkpointer, store, clock, metrics = make()
    store.failing = True

    checkpointer.advance("5")
    assert checkpointer.flush() is False
    store.failing = False
    clock.advance(2)
    assert checkpointer.flush() is True

    assert store.writes == ["5"]
    failures = metrics.registry.get_sample_value(
        "pod_monitor_watcher_checkpoint_write_failures_total", {"scope": SCOPE.name}
    )
    assert failures == 2


def test_checkpoint_age_metric() -> None:
    checkpointer, _, clock, metrics = make()
    assert checkpointer.age() == -1.0

    checkpointer.advance("5")
    clock.advance(7)

    age = metrics.registry.get_sample_value(
        "pod_monitor_watcher_checkpoint_age_seconds", {"scope": SCOPE.name}
    )
    assert age == pytest.approx(7)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (None, None),
        (Checkpoint("42", SELECTOR, 0.0), "42"),
        (Checkpoint("42", "app=other", 0.0), None),
    ],
)
def test_checkpoint_load(stored: Checkpoint | None, expected: str | None) -> None:
    checkpointer, store, _, _ = make()
    if stored is not None:
        store.saved[SCOPE.name] = stored

    assert checkpointer.load() == expected
