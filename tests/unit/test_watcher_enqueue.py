"""Unit tests of sending tasks with retries, on a fake Celery app and fake time."""

from __future__ import annotations

import threading
from typing import Any

import kombu.exceptions
import pytest

from tasks import names
from tasks.settings import PodSelection
from tasks.snapshots import build_snapshot
from watcher.enqueue import CeleryEnqueuer
from watcher.errors import StopRequested
from watcher.health import Health
from watcher.metrics import WatcherMetrics
from watcher.testing import LABEL_SELECTOR, FakeClock, pod

SNAPSHOT = build_snapshot(pod("a", "10"), PodSelection(label_selector=LABEL_SELECTOR))


class FakeApp:
    """Fails the first ``failures`` sends, then records them."""

    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or kombu.exceptions.OperationalError("Connection refused")
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def send_task(self, name: str, **options: Any) -> None:
        self.calls.append((name, options))
        if self.failures:
            self.failures -= 1
            raise self.error


def make(
    app: FakeApp,
) -> tuple[CeleryEnqueuer, FakeClock, threading.Event, WatcherMetrics]:
    clock = FakeClock()
    stop = threading.Event()
    metrics = WatcherMetrics()
    health = Health(clock, liveness_window=60, staleness=60, enqueue_failure_limit=60)
    health.register("s")
    enqueuer = CeleryEnqueuer(
        app, clock=clock, stop=stop, metrics=metrics, health=health
    )
    return enqueuer, clock, stop, metrics


def test_enqueue_sends_snapshot_by_name() -> None:
    app = FakeApp()
    enqueuer, _, _, metrics = make(app)

    enqueuer(SNAPSHOT, "s")

    name, options = app.calls[0]
    assert name == names.POD_CHANGED_TASK
    assert options["queue"] == names.POD_CHANGES_QUEUE
    assert options["args"] == [SNAPSHOT.model_dump(mode="json")]
    assert (
        metrics.registry.get_sample_value(
            "pod_monitor_watcher_tasks_enqueued_total", {"scope": "s"}
        )
        == 1
    )


@pytest.mark.parametrize(
    "error",
    [
        kombu.exceptions.OperationalError("Connection refused"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError("timed out"),
    ],
)
def test_enqueue_retries_until_sent(error: Exception) -> None:
    app = FakeApp(failures=3, error=error)
    enqueuer, clock, _, metrics = make(app)

    enqueuer(SNAPSHOT, "s")

    assert len(app.calls) == 4
    assert len(clock.sleeps) == 3
    assert clock.sleeps == sorted(clock.sleeps)
    assert (
        metrics.registry.get_sample_value(
            "pod_monitor_watcher_enqueue_failures_total", {"scope": "s"}
        )
        == 3
    )


def test_enqueue_stop_during_retry_raises() -> None:
    app = FakeApp(failures=100)
    enqueuer, clock, stop, _ = make(app)

    clock.on_sleep = stop.set

    with pytest.raises(StopRequested):
        enqueuer(SNAPSHOT, "s")
    assert len(app.calls) == 1


def test_enqueue_other_error_propagates() -> None:
    app = FakeApp(failures=1, error=TypeError("not JSON serializable"))
    enqueuer, _, _, _ = make(app)

    with pytest.raises(TypeError):
        enqueuer(SNAPSHOT, "s")
