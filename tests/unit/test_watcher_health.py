"""Unit tests of liveness, readiness and their HTTP server on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from watcher.health import Health, HealthServer
from watcher.metrics import WatcherMetrics
from watcher.testing import FakeClock

SCOPE = "namespace:jobs"


def make() -> tuple[Health, FakeClock]:
    clock = FakeClock()
    health = Health(clock, liveness_window=100, staleness=50, enqueue_failure_limit=30)
    health.register(SCOPE)
    return health, clock


def ready_health() -> tuple[Health, FakeClock]:
    health, clock = make()
    health.set_established(SCOPE, True)
    health.heard(SCOPE)
    return health, clock


def test_readiness_ok_when_established_and_heard() -> None:
    health, _ = ready_health()

    ready, report = health.readiness()

    assert ready is True
    assert report["scopes"][SCOPE]["problems"] == []


def test_readiness_fails_before_watch_established() -> None:
    health, _ = make()

    ready, report = health.readiness()

    assert ready is False
    assert "watch not established" in report["scopes"][SCOPE]["problems"]


def test_readiness_fails_when_stale() -> None:
    health, clock = ready_health()

    clock.advance(51)

    assert health.readiness()[0] is False


def test_readiness_fails_when_enqueue_keeps_failing() -> None:
    health, clock = ready_health()
    health.enqueue_failed(SCOPE)
    clock.advance(20)
    health.heard(SCOPE)
    assert health.readiness()[0] is True

    clock.advance(11)
    health.heard(SCOPE)

    ready, report = health.readiness()
    assert ready is False
    assert "sending tasks keeps failing" in report["scopes"][SCOPE]["problems"]


def test_readiness_recovers_after_enqueue() -> None:
    health, clock = ready_health()
    health.enqueue_failed(SCOPE)
    clock.advance(40)
    health.heard(SCOPE)

    health.enqueue_succeeded(SCOPE)

    ready, report = health.readiness()
    assert ready is True
    assert report["scopes"][SCOPE]["last_enqueue_age_seconds"] == 0


def test_standby_is_ready() -> None:
    health, _ = make()

    health.set_standby(True)

    assert health.readiness() == (True, {"ready": True, "standby": True})


def test_liveness_fails_without_heartbeat() -> None:
    health, clock = make()
    assert health.liveness()[0] is True

    clock.advance(101)

    assert health.liveness()[0] is False
    health.beat(SCOPE)
    assert health.liveness()[0] is True


@pytest.fixture
def server() -> Iterator[tuple[HealthServer, Health]]:
    health, _ = ready_health()
    metrics = WatcherMetrics()
    metrics.enqueued.labels(scope=SCOPE).inc()
    http_server = HealthServer(health, metrics.registry, "127.0.0.1", 0)
    http_server.start()
    yield http_server, health
    http_server.stop()


def test_health_server_endpoints(server: tuple[HealthServer, Health]) -> None:
    http_server, health = server
    base = f"http://127.0.0.1:{http_server.port}"

    assert httpx.get(f"{base}/livez").status_code == 200
    assert httpx.get(f"{base}/readyz").status_code == 200
    metrics = httpx.get(f"{base}/metrics")
    assert metrics.status_code == 200
    assert 'pod_monitor_watcher_tasks_enqueued_total{scope="namespace:jobs"} 1.0' in (
        metrics.text
    )
    assert httpx.get(f"{base}/nothing").status_code == 404

    health.set_established(SCOPE, False)
    not_ready = httpx.get(f"{base}/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["ready"] is False
