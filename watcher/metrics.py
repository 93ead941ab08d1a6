"""Prometheus metrics of the watcher, served at ``/metrics``.

Every metric but ``leader`` has a ``scope`` label (``all-namespaces`` or
``namespace:NAME``), which separates the watches of several namespaces.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

_PREFIX = "pod_monitor_watcher_"


class WatcherMetrics:
    """The metrics, registered in one registry (a fresh one per test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            _PREFIX + "watch_events",
            "Watch events received, by event type.",
            ["scope", "type"],
            registry=r,
        )
        self.enqueued = Counter(
            _PREFIX + "tasks_enqueued",
            "Pod-change tasks sent to the broker.",
            ["scope"],
            registry=r,
        )
        self.skipped = Counter(
            _PREFIX + "changes_skipped",
            "Pod changes not enqueued, by reason: unchanged (same change key), "
            "no_execution_id, invalid_object.",
            ["scope", "reason"],
            registry=r,
        )
        self.enqueue_failures = Counter(
            _PREFIX + "enqueue_failures",
            "Failed attempts to send a task; each is retried.",
            ["scope"],
            registry=r,
        )
        self.reconnects = Counter(
            _PREFIX + "reconnects",
            "Watch requests opened again, by the cause of the end of the last one: "
            "closed (server timeout), stalled (read timeout), error.",
            ["scope", "cause"],
            registry=r,
        )
        self.relists = Counter(
            _PREFIX + "relists",
            "Lists of all selected pods, by cause: start, expired, selector_changed.",
            ["scope", "cause"],
            registry=r,
        )
        self.expired = Counter(
            _PREFIX + "resource_version_expired",
            "410 Gone answers, by where they came: watch, list, resume.",
            ["scope", "source"],
            registry=r,
        )
        self.invalid_lines = Counter(
            _PREFIX + "invalid_lines",
            "Watch stream lines that are not a JSON watch event.",
            ["scope"],
            registry=r,
        )
        self.checkpoint_write_failures = Counter(
            _PREFIX + "checkpoint_write_failures",
            "Failed writes of the resourceVersion checkpoint to Redis.",
            ["scope"],
            registry=r,
        )
        self.checkpoint_age = Gauge(
            _PREFIX + "checkpoint_age_seconds",
            "Seconds since the checkpoint was last written; -1 before the first write.",
            ["scope"],
            registry=r,
        )
        self.watch_established = Gauge(
            _PREFIX + "watch_established",
            "1 while a watch request of the scope is open.",
            ["scope"],
            registry=r,
        )
        self.leader = Gauge(
            _PREFIX + "leader",
            "1 while this process holds the Lease, or leader election is off.",
            registry=r,
        )

    def track_checkpoint_age(self, scope: str, age: Callable[[], float]) -> None:
        """Compute the checkpoint age of ``scope`` at each scrape."""
        self.checkpoint_age.labels(scope=scope).set_function(age)
