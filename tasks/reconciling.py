"""Reconciliation: list the pods again and repair the event stream.

Watches miss things: the watcher was down, a watch expired, a task was
lost, a pod vanished with its node. One reconciliation:

1. takes the reconciliation lock, or returns at once saying who holds it,
   so two runs never overlap whoever started them;
2. lists the selected pods page by page and hands every pod whose
   execution has no terminal event yet to ``tasks.handling``, the path of
   the watcher's tasks, which emits whatever the state is missing: a pod
   that finished unwatched gets its terminal event with its output, a pod
   stuck pending past its grace period fails;
3. fails every execution that is tracked but whose pod is gone and never
   got a terminal event, with reason ``pod_disappeared``;
4. forgets executions that finished longer ago than the retention;
5. returns a summary and logs it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from kubernetes.client.exceptions import ApiException

from tasks import handling, listing
from tasks.errors import KubernetesApiError, RetryableError
from tasks.events import EventType
from tasks.outcomes import disappeared_event
from tasks.settings import PodSelection
from tasks.snapshots import PodSnapshot, Source, build_snapshot, execution_id_of
from tasks.state import PREFIX, TrackedExecution

logger = logging.getLogger(__name__)

LOCK_KEY = PREFIX + "lock:reconcile"
HOLDER_KEY = PREFIX + "reconcile:holder"
_NOT_FOUND = 404
#: Terminal reasons of pods that never got going; counted as "stuck".
_STUCK_REASONS = frozenset(
    {
        "image_pull_failed",
        "invalid_image",
        "container_config_error",
        "container_start_failed",
        "crash_loop",
    }
)


@dataclass
class Summary:
    """What one reconciliation did; the task's result."""

    status: str = "completed"
    trigger: str = "unknown"
    started_at: str = ""
    duration_seconds: float = 0.0
    pods_seen: int = 0
    executions_checked: int = 0
    events_emitted: dict[str, int] = field(default_factory=dict)
    vanished: int = 0
    stuck: int = 0
    skipped_no_execution_id: int = 0
    skipped_too_old: int = 0
    expired_states: int = 0
    errors: int = 0
    #: Why the run did nothing, when it was skipped.
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Reconciler:
    """One reconciliation over the given clients."""

    def __init__(
        self,
        context: handling.Context,
        redis_client: redis.Redis,
        selection: PodSelection,
        *,
        retention: timedelta,
        lock_seconds: float,
        page_size: int = 500,
    ) -> None:
        self._context = context
        self._redis = redis_client
        self._selection = selection
        self._retention = retention
        self._lock_seconds = lock_seconds
        self._page_size = page_size

    def run(self, *, trigger: str) -> Summary:
        started = datetime.now(UTC)
        clock = time.monotonic()
        summary = Summary(trigger=trigger, started_at=started.isoformat())
        lock = self._redis.lock(
            LOCK_KEY, timeout=self._lock_seconds, thread_local=False
        )
        if not lock.acquire(blocking=False):
            summary.status = "skipped"
            summary.reason = "another reconciliation is running: " + self._holder()
            logger.info("reconciliation skipped", extra={"reason": summary.reason})
            return summary
        try:
            self._redis.set(
                HOLDER_KEY, f"{trigger} run started at {started.isoformat()}"
            )
            emitted: Counter[str] = Counter()
            seen = self._repair_listed(summary, emitted, lock)
            self._fail_vanished(summary, emitted, seen, started)
            summary.expired_states = self._context.store.expire_finished(
                finished_before=started - self._retention
            )
            summary.events_emitted = dict(emitted)
        finally:
            self._redis.delete(HOLDER_KEY)
            lock.release()
        summary.duration_seconds = round(time.monotonic() - clock, 3)
        logger.info("reconciliation finished", extra=_flat(summary))
        return summary

    def _repair_listed(
        self, summary: Summary, emitted: Counter[str], lock: Any
    ) -> set[str]:
        seen: set[str] = set()
        for page in listing.list_pods(
            self._context.core_v1,
            namespaces=self._selection.namespaces,
            label_selector=self._selection.label_selector,
            page_size=self._page_size,
        ):
            # A long list must not outlive its lock.
            lock.reacquire()
            summary.pods_seen += len(page.items)
            open_ids = self._open_executions(page.items)
            for pod in page.items:
                execution_id = execution_id_of(pod["metadata"], self._selection)
                if execution_id is None:
                    summary.skipped_no_execution_id += 1
                    continue
                seen.add(execution_id)
                if execution_id not in open_ids:
                    continue
                snapshot = build_snapshot(pod, self._selection, source=Source.RECONCILE)
                if self._finished_before_retention(snapshot):
                    summary.skipped_too_old += 1
                    continue
                summary.executions_checked += 1
                self._handle(snapshot, summary, emitted)
        return seen

    def _open_executions(self, pods: Sequence[dict[str, Any]]) -> set[str]:
        """Return the execution ids of ``pods`` that have no terminal event."""
        ids = [
            execution_id
            for pod in pods
            if (execution_id := execution_id_of(pod["metadata"], self._selection))
        ]
        states = self._context.store.load_many(ids)
        return {
            execution_id
            for execution_id, state in zip(ids, states, strict=True)
            if state.terminal is None
        }

    def _handle(
        self, snapshot: PodSnapshot, summary: Summary, emitted: Counter[str]
    ) -> None:
        try:
            result = handling.handle(snapshot, self._context, give_up_on_log=True)
        except RetryableError as error:
            summary.errors += 1
            logger.warning(
                "reconciliation could not repair an execution; the next run retries",
                extra={
                    "execution_id": snapshot.execution_id,
                    "namespace": snapshot.namespace,
                    "pod": snapshot.name,
                    "error": str(error),
                },
            )
            return
        for event_type in result.emitted:
            emitted[event_type.value] += 1
        if result.terminal_reason in _STUCK_REASONS:
            summary.stuck += 1

    def _fail_vanished(
        self,
        summary: Summary,
        emitted: Counter[str],
        seen: set[str],
        started: datetime,
    ) -> None:
        # Only executions last seen before this run began: one recorded
        # since may have a pod created after the list was taken.
        for tracked in self._context.store.active(seen_before=started):
            if tracked.execution_id in seen or not self._in_scope(tracked):
                continue
            try:
                if tracked.pod is not None and self._pod_exists(tracked):
                    continue
                if self._emit_disappeared(tracked):
                    summary.vanished += 1
                    emitted[EventType.FAILED.value] += 1
            except RetryableError as error:
                summary.errors += 1
                logger.warning(
                    "could not fail a vanished execution; the next run retries",
                    extra={"execution_id": tracked.execution_id, "error": str(error)},
                )

    def _emit_disappeared(self, tracked: TrackedExecution) -> bool:
        store = self._context.store
        with store.locked(tracked.execution_id):
            if store.load(tracked.execution_id).terminal is not None:
                return False
            if tracked.pod is None:
                # State without a pod reference was never written by this
                # version; drop it rather than invent a pod for the event.
                logger.warning(
                    "tracked execution has no pod reference; dropped",
                    extra={"execution_id": tracked.execution_id},
                )
                store.forget(tracked.execution_id)
                return False
            event = disappeared_event(
                tracked.execution_id,
                tracked.pod,
                now=datetime.now(UTC),
                last_seen_at=tracked.last_seen_at,
            )
            delivery = self._context.publisher.publish(event)
            store.record(
                event.execution_id, event.event_type, event.event_id, event.pod
            )
        logger.info(
            "event published",
            extra={
                "execution_id": tracked.execution_id,
                "namespace": tracked.pod.namespace,
                "pod": tracked.pod.name,
                "event_type": event.event_type.value,
                "reason": event.reason.value,
                "partition": delivery.partition,
                "offset": delivery.offset,
            },
        )
        return True

    def _pod_exists(self, tracked: TrackedExecution) -> bool:
        assert tracked.pod is not None
        try:
            pod = self._context.core_v1.read_namespaced_pod(
                tracked.pod.name, tracked.pod.namespace
            )
        except ApiException as error:
            if error.status == _NOT_FOUND:
                return False
            ref = f"{tracked.pod.namespace}/{tracked.pod.name}"
            raise KubernetesApiError(
                f"reading pod {ref} failed: {error.status}"
            ) from error
        return bool(pod.metadata.uid == tracked.pod.uid)

    def _in_scope(self, tracked: TrackedExecution) -> bool:
        namespaces = self._selection.namespaces
        return not namespaces or (
            tracked.pod is not None and tracked.pod.namespace in namespaces
        )

    def _finished_before_retention(self, snapshot: PodSnapshot) -> bool:
        # The state of such an execution may have expired already; emitting
        # its events again would double them.
        if snapshot.phase not in {"Succeeded", "Failed"}:
            return False
        finished = [
            c.finished_at for c in snapshot.containers if c.finished_at is not None
        ]
        if not finished:
            return False
        return max(finished) < datetime.now(UTC) - self._retention

    def _holder(self) -> str:
        holder = self._redis.get(HOLDER_KEY)
        if isinstance(holder, bytes):
            return holder.decode()
        return str(holder) if holder else "unknown holder"


def _flat(summary: Summary) -> dict[str, object]:
    fields = summary.as_dict()
    emitted = fields.pop("events_emitted")
    fields.update(
        {f"emitted_{name.split('.')[-1]}": count for name, count in emitted.items()}
    )
    return fields
