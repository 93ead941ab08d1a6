"""Per-execution state in Redis: what was emitted, locks and retention.

Keys, all under the ``pod-monitor:`` prefix:

- ``execution:<id>`` (hash): ``emitted:<event type>`` = event id for each
  event Kafka confirmed, and the pod it came from. It expires a retention
  period after the terminal event.
- ``executions:active`` (sorted set): executions with no terminal event,
  scored by when their pod was last seen; the reconciliation walks it to
  find executions whose pod vanished.
- ``executions:finished`` (sorted set): executions with a terminal event,
  scored by when it was recorded; the reconciliation trims it.
- ``lock:execution:<id>``: held while a task plans, publishes and records
  the events of that execution, so two workers never emit the same event.

The state is written only after Kafka confirmed the delivery, so a crash
between the two leaves the event to be emitted again (with the same event
id), never lost.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from redis.exceptions import LockError

from tasks.errors import ExecutionLockedError
from tasks.events import EventType, PodRef
from tasks.outcomes import ExecutionState
from tasks.settings import BrokerSettings, WorkerSettings

logger = logging.getLogger(__name__)

PREFIX = "pod-monitor:"
ACTIVE_KEY = PREFIX + "executions:active"
FINISHED_KEY = PREFIX + "executions:finished"
_EMITTED = "emitted:"


@dataclass(frozen=True)
class TrackedExecution:
    """An execution with no terminal event, as the state last saw it."""

    execution_id: str
    pod: PodRef | None
    last_seen_at: datetime | None
    state: ExecutionState


def connect(broker: BrokerSettings) -> redis.Redis:
    """Return a Redis client whose calls fail in bounded time when Redis is down."""
    return redis.Redis.from_url(
        broker.redis_url,
        socket_connect_timeout=broker.redis_connect_timeout_seconds,
        socket_timeout=broker.redis_connect_timeout_seconds * 2,
        health_check_interval=25,
    )


def execution_key(execution_id: str) -> str:
    return f"{PREFIX}execution:{execution_id}"


class StateStore:
    """Reads and writes per-execution state in one Redis database."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        retention_seconds: float,
        lock_seconds: float,
    ) -> None:
        self._redis = client
        self._retention_seconds = int(retention_seconds)
        self._lock_seconds = lock_seconds

    @classmethod
    def from_settings(
        cls, broker: BrokerSettings, worker: WorkerSettings
    ) -> StateStore:
        return cls(
            connect(broker),
            retention_seconds=worker.state_retention_days * 86400,
            lock_seconds=worker.execution_lock_seconds,
        )

    @contextlib.contextmanager
    def locked(self, execution_id: str, *, wait_seconds: float = 5.0) -> Iterator[None]:
        """Hold the lock of one execution for the duration of the block.

        Raises ``ExecutionLockedError`` when another task holds it for longer than
        ``wait_seconds``. The lock expires by itself after ``lock_seconds``,
        so a killed worker does not block the execution forever.
        """
        lock = self._redis.lock(
            f"{PREFIX}lock:execution:{execution_id}",
            timeout=self._lock_seconds,
            blocking=True,
            blocking_timeout=wait_seconds,
            thread_local=False,
        )
        if not lock.acquire():
            raise ExecutionLockedError(execution_id)
        try:
            yield
        finally:
            try:
                lock.release()
            except LockError:
                # The lock expired while the task ran, so another task may have
                # taken it since. Nothing can be undone; the warning tells the
                # operator.
                logger.warning(
                    "execution lock expired before release",
                    extra={"execution_id": execution_id},
                )

    def load(self, execution_id: str) -> ExecutionState:
        fields = self._redis.hkeys(execution_key(execution_id))
        return ExecutionState(emitted=_emitted_types(fields))

    def load_many(self, execution_ids: list[str]) -> list[ExecutionState]:
        """Return the state of each execution, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for execution_id in execution_ids:
            pipe.hkeys(execution_key(execution_id))
        return [
            ExecutionState(emitted=_emitted_types(fields)) for fields in pipe.execute()
        ]

    def forget(self, execution_id: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(execution_key(execution_id))
        pipe.zrem(ACTIVE_KEY, execution_id)
        pipe.zrem(FINISHED_KEY, execution_id)
        pipe.execute()

    def record(
        self, execution_id: str, event_type: EventType, event_id: str, pod: PodRef
    ) -> None:
        """Record one event that Kafka confirmed."""
        now = datetime.now(UTC)
        key = execution_key(execution_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(
            key,
            mapping={
                _EMITTED + event_type.value: event_id,
                "pod_namespace": pod.namespace,
                "pod_name": pod.name,
                "pod_uid": pod.uid,
                "pod_node": pod.node or "",
                "last_seen_at": now.isoformat(),
            },
        )
        if event_type.is_terminal:
            pipe.hset(key, "finished_at", now.isoformat())
            pipe.expire(key, self._retention_seconds)
            pipe.zrem(ACTIVE_KEY, execution_id)
            pipe.zadd(FINISHED_KEY, {execution_id: now.timestamp()})
        else:
            pipe.zadd(ACTIVE_KEY, {execution_id: now.timestamp()})
        pipe.execute()

    def touch(self, execution_id: str) -> None:
        """Note that the pod of an active execution was seen just now."""
        now = datetime.now(UTC)
        pipe = self._redis.pipeline(transaction=True)
        pipe.zadd(ACTIVE_KEY, {execution_id: now.timestamp()}, xx=True)
        pipe.hset(execution_key(execution_id), "last_seen_at", now.isoformat())
        pipe.execute()

    def active(self, *, seen_before: datetime) -> Iterator[TrackedExecution]:
        """Yield the active executions whose pod was last seen before a time."""
        cursor_max = seen_before.timestamp()
        batch = 500
        offset = 0
        while True:
            ids: list[bytes] = self._redis.zrangebyscore(  # type: ignore[assignment]
                ACTIVE_KEY, "-inf", cursor_max, start=offset, num=batch
            )
            if not ids:
                return
            for raw_id in ids:
                yield self._tracked(_text(raw_id))
            offset += len(ids)

    def expire_finished(self, *, finished_before: datetime) -> int:
        """Forget finished executions older than a time; return how many."""
        old: list[bytes] = self._redis.zrangebyscore(  # type: ignore[assignment]
            FINISHED_KEY, "-inf", finished_before.timestamp()
        )
        if not old:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for raw_id in old:
            pipe.delete(execution_key(_text(raw_id)))
        pipe.zrem(FINISHED_KEY, *old)
        pipe.execute()
        return len(old)

    def _tracked(self, execution_id: str) -> TrackedExecution:
        fields = {
            _text(k): _text(v)
            for k, v in self._redis.hgetall(execution_key(execution_id)).items()
        }
        pod = None
        if fields.get("pod_uid"):
            pod = PodRef(
                namespace=fields.get("pod_namespace", ""),
                name=fields.get("pod_name", ""),
                uid=fields["pod_uid"],
                node=fields.get("pod_node") or None,
            )
        last_seen = fields.get("last_seen_at")
        return TrackedExecution(
            execution_id=execution_id,
            pod=pod,
            last_seen_at=datetime.fromisoformat(last_seen) if last_seen else None,
            state=ExecutionState(emitted=_emitted_types(fields)),
        )


def _emitted_types(fields: object) -> frozenset[EventType]:
    emitted = set()
    for raw in fields:  # type: ignore[attr-defined]
        name = _text(raw)
        if name.startswith(_EMITTED):
            with contextlib.suppress(ValueError):
                emitted.add(EventType(name.removeprefix(_EMITTED)))
    return frozenset(emitted)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
