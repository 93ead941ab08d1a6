"""Fakes of the watcher's outside world, for unit tests: time, API server, Redis.

Nothing here is used by the watcher itself. The fake API server plays
scripted list pages and watch streams. When its script runs out it sets the
stop event, so ``ScopeWatcher.run`` returns in a test.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from tasks.snapshots import PodSnapshot
from watcher.checkpoint import Checkpoint
from watcher.errors import (
    ApiError,
    ApiUnavailableError,
    CheckpointError,
    StopRequested,
    StreamStalledError,
)
from watcher.scope import Scope

LABEL_SELECTOR = "app.kubernetes.io/managed-by=pod-monitor-executions"
EXECUTION_ID_LABEL = "pod-monitor.io/execution-id"


class FakeClock:
    """Time that moves only when slept on or advanced; sleeps are recorded."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        #: Called at the start of each sleep, to change the world meanwhile.
        self.on_sleep: Callable[[], None] | None = None

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        self.sleeps.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep()
        self.now += seconds
        return stop.is_set()

    def advance(self, seconds: float) -> None:
        self.now += seconds


def pod(
    name: str,
    resource_version: str,
    *,
    namespace: str = "jobs",
    uid: str | None = None,
    phase: str = "Pending",
    execution_id: str | None = "exec-1",
) -> dict[str, Any]:
    """Return a minimal pod as the API server serializes it."""
    labels = {"app.kubernetes.io/managed-by": "pod-monitor-executions"}
    if execution_id is not None:
        labels[EXECUTION_ID_LABEL] = execution_id
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or f"uid-{name}",
            "resourceVersion": resource_version,
            "labels": labels,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        "status": {"phase": phase},
    }


def event(event_type: str, obj: dict[str, Any]) -> bytes:
    """Return one watch stream line."""
    return orjson.dumps({"type": event_type, "object": obj})


def bookmark(resource_version: str) -> bytes:
    return event(
        "BOOKMARK", {"kind": "Pod", "metadata": {"resourceVersion": resource_version}}
    )


def error_event(code: int, reason: str, message: str = "") -> bytes:
    return event(
        "ERROR",
        {
            "kind": "Status",
            "status": "Failure",
            "code": code,
            "reason": reason,
            "message": message,
        },
    )


def pod_list(
    resource_version: str,
    items: list[dict[str, Any]],
    continue_token: str | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    return {"kind": "PodList", "metadata": metadata, "items": items}


@dataclass(frozen=True)
class Stall:
    """In a watch script: no bytes within the read timeout."""


@dataclass(frozen=True)
class Break:
    """In a watch script: the connection breaks."""


@dataclass(frozen=True)
class Advance:
    """In a watch script: time passes before the next line."""

    seconds: float


ScriptItem = bytes | Stall | Break | Advance
#: The lines and markers of one watch stream.
Script = list[ScriptItem]
#: A stream, or an error that opening the watch raises.
WatchScript = Script | ApiError | ApiUnavailableError


@dataclass
class WatchCall:
    scope: Scope
    resource_version: str
    timeout_seconds: int
    read_timeout: float


@dataclass
class ListCall:
    scope: Scope
    limit: int
    continue_token: str | None


@dataclass
class FakePodApi:
    """Plays ``lists`` (pages or errors) and ``watches`` in order."""

    clock: FakeClock
    stop: threading.Event
    lists: list[dict[str, Any] | ApiError | ApiUnavailableError] = field(
        default_factory=list
    )
    watches: list[WatchScript] = field(default_factory=list)
    list_calls: list[ListCall] = field(default_factory=list)
    watch_calls: list[WatchCall] = field(default_factory=list)

    def list_pods(
        self,
        scope: Scope,
        *,
        label_selector: str,
        limit: int,
        continue_token: str | None,
    ) -> dict[str, Any]:
        self.list_calls.append(ListCall(scope, limit, continue_token))
        if not self.lists:
            self.stop.set()
            raise ApiUnavailableError("fake API server: no list scripted")
        page = self.lists.pop(0)
        if isinstance(page, Exception):
            raise page
        return page

    @contextlib.contextmanager
    def watch_pods(
        self,
        scope: Scope,
        *,
        label_selector: str,
        resource_version: str,
        timeout_seconds: int,
        read_timeout: float,
    ) -> Iterator[Iterable[bytes]]:
        self.watch_calls.append(
            WatchCall(scope, resource_version, timeout_seconds, read_timeout)
        )
        if not self.watches:
            self.stop.set()
            yield iter(())
            return
        script = self.watches.pop(0)
        if isinstance(script, Exception):
            raise script
        yield self._play(script)

    def _play(self, script: Script) -> Iterator[bytes]:
        for item in script:
            if isinstance(item, Stall):
                raise StreamStalledError("fake stream stalled")
            if isinstance(item, Break):
                raise ApiUnavailableError("fake connection broken")
            if isinstance(item, Advance):
                self.clock.advance(item.seconds)
                continue
            yield item


@dataclass
class FakeCheckpointStore:
    """Checkpoints in a dict; ``failing`` makes every call raise."""

    saved: dict[str, Checkpoint] = field(default_factory=dict)
    writes: list[str] = field(default_factory=list)
    failing: bool = False

    def load(self, scope: Scope) -> Checkpoint | None:
        if self.failing:
            raise CheckpointError("fake Redis down")
        return self.saved.get(scope.name)

    def save(self, scope: Scope, checkpoint: Checkpoint) -> None:
        if self.failing:
            raise CheckpointError("fake Redis down")
        self.saved[scope.name] = checkpoint
        self.writes.append(checkpoint.resource_version)


@dataclass
class RecordingEnqueue:
    """Records every snapshot sent; stops the loop after ``stop_after`` sends."""

    sent: list[PodSnapshot] = field(default_factory=list)
    stop_after: int | None = None
    stop: threading.Event | None = None

    def __call__(self, snapshot: PodSnapshot, scope: str) -> None:
        # Stopping here plays a stop that arrives while a send is retried.
        if self.stop_after is not None and len(self.sent) >= self.stop_after:
            assert self.stop is not None
            self.stop.set()
            raise StopRequested
        self.sent.append(snapshot)

    def names(self) -> list[str]:
        return [snapshot.name for snapshot in self.sent]
