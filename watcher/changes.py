"""The decision per pod change: enqueue it, or skip it as mattering to no event.

``PodChanges`` builds the snapshot of a pod from its raw object and sends it
unless the pod has no execution id or its change key is unchanged. Its
memory maps a pod's uid to the change key of the snapshot last
enqueued, so a change that leads to no new event costs no task. It also
keeps the pod's identity, so that a pod missing from a relist (deleted
while the watch was down) can be sent as deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import pydantic

from tasks.settings import PodSelection
from tasks.snapshots import PodSnapshot, Source, build_snapshot, change_key
from watcher.clock import Clock
from watcher.enqueue import Enqueue
from watcher.metrics import WatcherMetrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Enqueued:
    key: Hashable
    namespace: str
    name: str
    resource_version: str
    execution_id: str


class PodMemory:
    """Change keys of the pods of one scope, by uid. Not thread-safe."""

    def __init__(self) -> None:
        self._pods: dict[str, _Enqueued] = {}

    def __len__(self) -> int:
        return len(self._pods)

    def is_unchanged(self, snapshot: PodSnapshot) -> bool:
        """Return True when the last enqueued snapshot of the pod has the same key."""
        known = self._pods.get(snapshot.uid)
        return known is not None and known.key == change_key(snapshot)

    def remember(self, snapshot: PodSnapshot) -> None:
        """Record an enqueued snapshot; a deleted pod is forgotten instead."""
        if snapshot.deleted:
            self._pods.pop(snapshot.uid, None)
            return
        assert snapshot.execution_id is not None  # only such pods are enqueued
        self._pods[snapshot.uid] = _Enqueued(
            key=change_key(snapshot),
            namespace=snapshot.namespace,
            name=snapshot.name,
            resource_version=snapshot.resource_version,
            execution_id=snapshot.execution_id,
        )

    def uids(self) -> set[str]:
        return set(self._pods)

    def tombstone(self, uid: str) -> PodSnapshot:
        """Return a deleted snapshot of a remembered pod that a relist no longer shows.

        It carries only the pod's identity; the task confirms the deletion
        with the API server.
        """
        known = self._pods[uid]
        return PodSnapshot(
            uid=uid,
            namespace=known.namespace,
            name=known.name,
            resource_version=known.resource_version,
            execution_id=known.execution_id,
            deleted=True,
            source=Source.WATCH,
        )


class SkipWarnings:
    """Warnings about skipped pods, at most one per interval.

    Each warning names one pod and counts the skips it stands for, so a
    flood of pods without an execution id costs one line per interval.
    """

    def __init__(self, clock: Clock, interval: float) -> None:
        self._clock = clock
        self._interval = interval
        self._last: float | None = None
        self._suppressed = 0

    def warn(self, message: str, **fields: object) -> None:
        now = self._clock.monotonic()
        if self._last is not None and now - self._last < self._interval:
            self._suppressed += 1
            return
        logger.warning(
            message, extra={**fields, "suppressed_since_last": self._suppressed}
        )
        self._last = now
        self._suppressed = 0


class PodChanges:
    """Enqueues the changes of the pods of one scope that matter. Not thread-safe."""

    def __init__(
        self,
        scope: str,
        *,
        selection: PodSelection,
        enqueue: Enqueue,
        metrics: WatcherMetrics,
        warnings: SkipWarnings,
    ) -> None:
        self._scope = scope
        self._selection = selection
        self._enqueue = enqueue
        self._metrics = metrics
        self._warnings = warnings
        self.memory = PodMemory()

    def handle(self, pod: dict[str, Any], *, deleted: bool) -> None:
        """Enqueue the pod's snapshot unless it matters to no new event.

        Returns after the task was sent or the change skipped. Raises
        ``StopRequested`` when stopped while the send is retried.
        """
        metadata = pod.get("metadata") or {}
        fields = {
            "scope": self._scope,
            "namespace": metadata.get("namespace"),
            "pod": metadata.get("name"),
            "resource_version": metadata.get("resourceVersion"),
        }
        try:
            snapshot = build_snapshot(pod, self._selection, deleted=deleted)
        except (KeyError, TypeError, AttributeError, pydantic.ValidationError) as error:
            self._skip("invalid_object")
            logger.error(
                "pod object is not valid, skipping it",
                extra={**fields, "error": f"{type(error).__name__}: {error}"},
            )
            return
        if snapshot.execution_id is None:
            self._skip("no_execution_id")
            self._warnings.warn(
                "pod has no execution id, skipping it",
                **fields,
                label=self._selection.execution_id_label,
                annotation=self._selection.execution_id_annotation,
            )
            return
        if not deleted and self.memory.is_unchanged(snapshot):
            self._skip("unchanged")
            return
        self._send(snapshot)

    def send_tombstones(self, listed: set[str]) -> None:
        """Send a deleted snapshot of every remembered pod whose uid a list lacks.

        Such pods were deleted, or stopped matching the selector, while no
        watch was open.
        """
        for uid in sorted(self.memory.uids() - listed):
            self._send(self.memory.tombstone(uid))

    def _send(self, snapshot: PodSnapshot) -> None:
        self._enqueue(snapshot, self._scope)
        self.memory.remember(snapshot)
        logger.debug(
            "task enqueued",
            extra={
                "scope": self._scope,
                "namespace": snapshot.namespace,
                "pod": snapshot.name,
                "resource_version": snapshot.resource_version,
                "execution_id": snapshot.execution_id,
                "deleted": snapshot.deleted,
            },
        )

    def _skip(self, reason: str) -> None:
        self._metrics.skipped.labels(scope=self._scope, reason=reason).inc()
