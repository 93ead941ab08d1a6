"""The resourceVersion checkpoint of each scope, kept in Redis.

The checkpoint is where a restarted watcher resumes its watch. Its
resourceVersion is never past the last change that was enqueued (or
skipped as mattering to no event), so a restart replays at most the
changes after it and loses none. It is written coalesced: at most once per
interval while events flow, and at once on a BOOKMARK, after a list and on
stop, because a write per event would double the Redis traffic.

The value stores the label selector too: a checkpoint written for another
selector is ignored, because resuming from it would never list the pods
that only the new selector matches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import orjson
import redis

from watcher.clock import Clock
from watcher.errors import CheckpointError
from watcher.metrics import WatcherMetrics
from watcher.scope import Scope

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpoint:
    resource_version: str
    label_selector: str
    #: Wall-clock time of the write, in seconds since the epoch.
    saved_at: float


class CheckpointStore(Protocol):
    def load(self, scope: Scope) -> Checkpoint | None:
        """Return the stored checkpoint, or None; raise ``CheckpointError``."""
        ...

    def save(self, scope: Scope, checkpoint: Checkpoint) -> None:
        """Store the checkpoint; raise ``CheckpointError``."""
        ...


class RedisCheckpointStore:
    """Checkpoints as JSON strings at ``PREFIX + "checkpoint:" + scope name``."""

    def __init__(self, client: redis.Redis, key_prefix: str) -> None:
        self._client = client
        self._key_prefix = key_prefix

    def key(self, scope: Scope) -> str:
        return f"{self._key_prefix}checkpoint:{scope.name}"

    def load(self, scope: Scope) -> Checkpoint | None:
        try:
            raw = self._client.get(self.key(scope))
        except redis.RedisError as error:
            raise CheckpointError(
                f"reading {self.key(scope)} failed: {error}"
            ) from error
        if raw is None:
            return None
        try:
            data = orjson.loads(raw)
            return Checkpoint(
                resource_version=str(data["resourceVersion"]),
                label_selector=str(data["labelSelector"]),
                saved_at=float(data["savedAt"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            logger.warning(
                "checkpoint is not valid, ignoring it",
                extra={"key": self.key(scope), "value": repr(raw)[:200]},
            )
            return None

    def save(self, scope: Scope, checkpoint: Checkpoint) -> None:
        value = orjson.dumps(
            {
                "resourceVersion": checkpoint.resource_version,
                "labelSelector": checkpoint.label_selector,
                "savedAt": checkpoint.saved_at,
            }
        )
        try:
            self._client.set(self.key(scope), value)
        except redis.RedisError as error:
            raise CheckpointError(
                f"writing {self.key(scope)} failed: {error}"
            ) from error


def redis_client(url: str, *, timeout: float) -> redis.Redis:
    """Build the Redis client of the checkpoints, with bounded timeouts."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        health_check_interval=25,
    )


class Checkpointer:
    """The coalesced writer of one scope's checkpoint.

    Not thread-safe: one watch loop owns it.
    """

    def __init__(
        self,
        store: CheckpointStore,
        scope: Scope,
        *,
        label_selector: str,
        interval: float,
        clock: Clock,
        metrics: WatcherMetrics,
    ) -> None:
        self._store = store
        self._scope = scope
        self._label_selector = label_selector
        self._interval = interval
        self._clock = clock
        self._metrics = metrics
        self._pending: str | None = None
        self._saved: str | None = None
        self._saved_at_monotonic: float | None = None
        self._last_attempt: float | None = None
        metrics.track_checkpoint_age(scope.name, self.age)

    def load(self) -> str | None:
        """Return the stored resourceVersion, or None (absent, or another selector).

        Raises ``CheckpointError`` when Redis cannot be read.
        """
        checkpoint = self._store.load(self._scope)
        if checkpoint is None:
            return None
        if checkpoint.label_selector != self._label_selector:
            logger.info(
                "checkpoint was written for another label selector, ignoring it",
                extra={
                    "scope": self._scope.name,
                    "checkpoint_selector": checkpoint.label_selector,
                    "label_selector": self._label_selector,
                },
            )
            return None
        self._saved = checkpoint.resource_version
        return checkpoint.resource_version

    def advance(self, resource_version: str) -> None:
        """Record that all changes up to ``resource_version`` are handled.

        Writes the checkpoint when the interval since the last write passed.
        """
        if resource_version == self._saved:
            self._pending = None
            return
        self._pending = resource_version
        now = self._clock.monotonic()
        if self._last_attempt is None or now - self._last_attempt >= self._interval:
            self.flush()

    def flush(self) -> bool:
        """Write the pending resourceVersion now; return False when that failed.

        A failed write is logged, counted and kept pending for the next call.
        """
        if self._pending is None:
            return True
        resource_version = self._pending
        self._last_attempt = self._clock.monotonic()
        checkpoint = Checkpoint(
            resource_version=resource_version,
            label_selector=self._label_selector,
            saved_at=self._clock.time(),
        )
        try:
            self._store.save(self._scope, checkpoint)
        except CheckpointError as error:
            self._metrics.checkpoint_write_failures.labels(scope=self._scope.name).inc()
            logger.warning(
                "checkpoint write failed, will retry with the next change",
                extra={
                    "scope": self._scope.name,
                    "resource_version": resource_version,
                    "error": str(error),
                },
            )
            return False
        self._saved = resource_version
        self._saved_at_monotonic = self._last_attempt
        if self._pending == resource_version:
            self._pending = None
        return True

    def age(self) -> float:
        """Return seconds since the last successful write, or -1 before it."""
        if self._saved_at_monotonic is None:
            return -1.0
        return self._clock.monotonic() - self._saved_at_monotonic
