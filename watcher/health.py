"""Liveness and readiness of the watcher, and the HTTP server of both.

``/livez`` returns 200 while every watch loop made progress within its
liveness window: a read, an event, a retry or a backoff step all count, so
a loop that waits for the broker is alive. ``/readyz`` returns 200 when
every scope has an open watch that heard from the API server within the
staleness window (bookmarks may never come, so the window is longer than
the max watch request) and sending tasks has not been failing longer
than its limit. A standby replica under leader election is ready, so a
rolling update does not wait for it. ``/metrics`` serves Prometheus text.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from watcher.clock import Clock

logger = logging.getLogger(__name__)


@dataclass
class _ScopeState:
    heartbeat_at: float
    established: bool = False
    heard_at: float | None = None
    enqueued_at: float | None = None
    enqueue_failing_since: float | None = None


class Health:
    """Thread-safe record of what each watch loop last did."""

    def __init__(
        self,
        clock: Clock,
        *,
        liveness_window: float,
        staleness: float,
        enqueue_failure_limit: float,
    ) -> None:
        self._clock = clock
        self._liveness_window = liveness_window
        self._staleness = staleness
        self._enqueue_failure_limit = enqueue_failure_limit
        self._lock = threading.Lock()
        self._scopes: dict[str, _ScopeState] = {}
        self._standby = False

    def register(self, scope: str) -> None:
        with self._lock:
            self._scopes[scope] = _ScopeState(heartbeat_at=self._clock.monotonic())

    def set_standby(self, standby: bool) -> None:
        """Mark this replica as waiting for the Lease (ready, not watching)."""
        with self._lock:
            self._standby = standby

    def beat(self, scope: str) -> None:
        """Record that the loop of ``scope`` is making progress."""
        with self._lock:
            self._scopes[scope].heartbeat_at = self._clock.monotonic()

    def heard(self, scope: str) -> None:
        """Record bytes or a response from the API server."""
        now = self._clock.monotonic()
        with self._lock:
            state = self._scopes[scope]
            state.heard_at = now
            state.heartbeat_at = now

    def set_established(self, scope: str, established: bool) -> None:
        with self._lock:
            self._scopes[scope].established = established

    def enqueue_succeeded(self, scope: str) -> None:
        now = self._clock.monotonic()
        with self._lock:
            state = self._scopes[scope]
            state.enqueued_at = now
            state.enqueue_failing_since = None
            state.heartbeat_at = now

    def enqueue_failed(self, scope: str) -> None:
        now = self._clock.monotonic()
        with self._lock:
            state = self._scopes[scope]
            if state.enqueue_failing_since is None:
                state.enqueue_failing_since = now
            state.heartbeat_at = now

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """Return whether every loop is alive, and a report per scope."""
        now = self._clock.monotonic()
        with self._lock:
            report = {
                name: {"heartbeat_age_seconds": round(now - state.heartbeat_at, 3)}
                for name, state in self._scopes.items()
            }
            alive = all(
                now - state.heartbeat_at <= self._liveness_window
                for state in self._scopes.values()
            )
        return alive or self._standby, {"alive": alive, "scopes": report}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Return whether every scope is ready, and a report per scope."""
        now = self._clock.monotonic()
        with self._lock:
            if self._standby:
                return True, {"ready": True, "standby": True}
            report: dict[str, Any] = {}
            ready = bool(self._scopes)
            for name, state in self._scopes.items():
                heard_age = None if state.heard_at is None else now - state.heard_at
                failing_for = (
                    None
                    if state.enqueue_failing_since is None
                    else now - state.enqueue_failing_since
                )
                problems = []
                if not state.established:
                    problems.append("watch not established")
                if heard_age is None or heard_age > self._staleness:
                    problems.append("no bytes from the API server within the staleness")
                if (
                    failing_for is not None
                    and failing_for > self._enqueue_failure_limit
                ):
                    problems.append("sending tasks keeps failing")
                ready = ready and not problems
                report[name] = {
                    "established": state.established,
                    "heard_age_seconds": _rounded(heard_age),
                    "last_enqueue_age_seconds": _rounded(
                        None if state.enqueued_at is None else now - state.enqueued_at
                    ),
                    "enqueue_failing_seconds": _rounded(failing_for),
                    "problems": problems,
                }
        return ready, {"ready": ready, "scopes": report}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class HealthServer:
    """``/livez``, ``/readyz`` and ``/metrics`` on one threaded HTTP server."""

    def __init__(
        self, health: Health, registry: CollectorRegistry, host: str, port: int
    ) -> None:
        handler = _handler_class(health, registry)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-server", daemon=True
        )

    @property
    def port(self) -> int:
        """Return the bound port, useful when 0 picked a free one."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        logger.info("health server started", extra={"port": self.port})

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_class(
    health: Health, registry: CollectorRegistry
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/livez":
                self._send_report(*health.liveness())
            elif path == "/readyz":
                self._send_report(*health.readiness())
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")

        def _send_report(self, ok: bool, report: dict[str, Any]) -> None:
            self._send(
                200 if ok else 503, "application/json", orjson.dumps(report) + b"\n"
            )

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Probes come every few seconds; their access log is noise.
            return

    return Handler
