"""Reconciliation: list the pods again and repair the event stream.

Watches miss things: the watcher was down, a watch expired, a task was
lost, a pod vanished with its node. One reconciliation:

1. takes the reconciliation lock, or returns at once with ``status:
   skipped`` and the description of the run that has it, so no two runs
   overlap, however they were sent;
2. lists the selected pods page by page and hands every pod whose
   execution has no terminal event yet, and whose snapshot calls for an
   event, to ``tasks.handling``, the path of the watcher's tasks, which
   emits whatever the state is missing: a pod that finished unwatched gets
   its terminal event with its output, a pod stuck pending past its grace
   period fails;
3. fails every execution that is tracked but whose pod is gone and never
   got a terminal event, with reason ``pod_disappeared``;
4. forgets executions that finished longer ago than the retention;
5. returns a summary and logs it.

Every event goes through the execution's lock and the state, exactly as the
watcher's tasks do, so a reconciliation racing them emits nothing twice.

A run renews its lock while it works. It stops early, with the summary of
what it did, when it reaches its time limit (``status: incomplete``) or
finds that its lock expired and may be held by another run (``status:
aborted``); the next run starts over.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from kubernetes.client.exceptions import ApiException
from redis.exceptions import LockError, LockNotOwnedError

from tasks import handling, listing
from tasks.errors import KubernetesApiError, RetryableError
from tasks.events import EventType
from tasks.outcomes import ExecutionState, disappeared_event, plan
from tasks.settings import PodSelection
from tasks.snapshots import PodSnapshot, Source, build_snapshot, execution_id_of
from tasks.state import PREFIX, TrackedExecution

logger = logging.getLogger(__name__)

#: Redis key of the reconciliation lock. Its value is the description of
#: the run that owns it, which a skipped run reports.
LOCK_KEY = PREFIX + "lock:reconcile"
_NOT_FOUND = 404
#: Terminal reasons of pods stuck at or before container start, counted as "stuck".
_STUCK_REASONS = frozenset(
    {
        "image_pull_failed",
        "invalid_image",
        "container_config_error",
        "container_start_failed",
        "crash_loop",
    }
)

COMPLETED = "completed"
SKIPPED = "skipped"
INCOMPLETE = "incomplete"
ABORTED = "aborted"


@dataclass
class Summary:
    """Outcome and counts of one reconciliation, returned as the task's result."""

    #: ``completed``, ``skipped`` (another run holds the lock),
    #: ``incomplete`` (stopped at the time limit) or ``aborted`` (lost the
    #: lock).
    status: str = COMPLETED
    trigger: str = "unknown"
    #: Id of the run: the Celery task id when a task runs it.
    run_id: str = ""
    started_at: str = ""
    duration_seconds: float = 0.0
    pods_seen: int = 0
    #: Listed executions with no terminal event in the state.
    executions_checked: int = 0
    #: Executions that got at least one event from this run.
    executions_repaired: int = 0
    #: Count of emitted events by event type, such as ``execution.failed``.
    events_emitted: dict[str, int] = field(default_factory=dict)
    vanished: int = 0
    stuck: int = 0
    skipped_no_execution_id: int = 0
    skipped_too_old: int = 0
    expired_states: int = 0
    errors: int = 0
    #: Why the run did nothing or stopped early; None when it completed.
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Stopped(Exception):  # noqa: N818 - control flow, not an error
    """Signal that ends a run early, with the summary's status and reason."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _LockKeeper:
    """Renews the reconciliation lock as a run goes, and ends it at its deadline.

    ``check`` is called before each unit of work. It renews the lock once a
    third of its timeout has passed, so the lock outlives any gap between
    two checks shorter than two thirds of the timeout. ``force`` renews it
    at once, which a run does between its steps to find out whether a long
    unit of work outlived the lock.
    """

    def __init__(
        self, lock: Any, lock_seconds: float, time_limit_seconds: float | None
    ) -> None:
        self._lock = lock
        self._renew_every = lock_seconds / 3
        self._time_limit = time_limit_seconds
        now = time.monotonic()
        self._renewed = now
        self._deadline = (
            None if time_limit_seconds is None else now + time_limit_seconds
        )

    def check(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._deadline is not None and now >= self._deadline:
            raise _Stopped(
                INCOMPLETE,
                f"stopped at the time limit of {self._time_limit:g} s; "
                "the next run starts over",
            )
        if not force and now - self._renewed < self._renew_every:
            return
        try:
            self._lock.reacquire()
        except LockNotOwnedError as error:
            raise _Stopped(
                ABORTED,
                "the reconciliation lock expired while this run worked, so "
                "another run may hold it; stopped",
            ) from error
        self._renewed = now

    def release(self) -> None:
        try:
            self._lock.release()
        except LockError:
            # The lock expired, and another run that took it since keeps it.
            logger.warning("reconciliation lock expired before release")


class Reconciler:
    """One reconciliation over the given clients.

    ``time_limit_seconds`` bounds how long ``run`` works before it stops
    with ``status: incomplete``; None means no bound.
    """

    def __init__(
        self,
        context: handling.Context,
        redis_client: redis.Redis,
        selection: PodSelection,
        *,
        retention: timedelta,
        lock_seconds: float,
        time_limit_seconds: float | None = None,
        page_size: int = 500,
    ) -> None:
        self._context = context
        self._redis = redis_client
        self._selection = selection
        self._retention = retention
        self._lock_seconds = lock_seconds
        self._time_limit_seconds = time_limit_seconds
        self._page_size = page_size

    def run(self, *, trigger: str, run_id: str | None = None) -> Summary:
        """Reconcile once and return the summary; never overlaps another run.

        Raises ``RetryableError`` subclasses when listing the pods fails,
        after releasing the lock. Errors of single executions are counted
        in ``errors`` and logged; the next run retries them.
        """
        started = datetime.now(UTC)
        clock = time.monotonic()
        summary = Summary(
            trigger=trigger,
            run_id=run_id or uuid.uuid4().hex,
            started_at=started.isoformat(),
        )
        lock = self._redis.lock(
            LOCK_KEY, timeout=self._lock_seconds, thread_local=False
        )
        holder = f"{trigger} run {summary.run_id} started at {started.isoformat()}"
        # The token is this run's description, so a run that finds the lock
        # taken reads the owner from the same key, with no race.
        if not lock.acquire(blocking=False, token=holder):
            summary.status = SKIPPED
            summary.reason = "another reconciliation is running: " + self._holder()
            summary.duration_seconds = round(time.monotonic() - clock, 3)
            logger.info(
                "reconciliation skipped",
                extra={
                    "trigger": trigger,
                    "run_id": summary.run_id,
                    "reason": summary.reason,
                },
            )
            return summary

        keeper = _LockKeeper(lock, self._lock_seconds, self._time_limit_seconds)
        emitted: Counter[str] = Counter()
        try:
            seen = self._repair_listed(summary, emitted, keeper)
            keeper.check(force=True)
            self._fail_vanished(summary, emitted, seen, started, keeper)
            keeper.check(force=True)
            summary.expired_states = self._context.store.expire_finished(
                finished_before=started - self._retention
            )
        except _Stopped as stopped:
            summary.status = stopped.status
            summary.reason = stopped.reason
        finally:
            summary.events_emitted = dict(emitted)
            keeper.release()
        summary.duration_seconds = round(time.monotonic() - clock, 3)
        level = logging.INFO if summary.status == COMPLETED else logging.WARNING
        logger.log(level, "reconciliation finished", extra=_flat(summary))
        return summary

    def _repair_listed(
        self, summary: Summary, emitted: Counter[str], keeper: _LockKeeper
    ) -> set[str]:
        seen: set[str] = set()
        for page in listing.list_pods(
            self._context.core_v1,
            namespaces=self._selection.namespaces,
            label_selector=self._selection.label_selector,
            page_size=self._page_size,
        ):
            keeper.check()
            summary.pods_seen += len(page.items)
            for pod, execution_id, state in self._open_executions(page.items, summary):
                seen.add(execution_id)
                if state is None:
                    continue
                keeper.check()
                snapshot = build_snapshot(pod, self._selection, source=Source.RECONCILE)
                if self._finished_before_retention(snapshot):
                    summary.skipped_too_old += 1
                    continue
                summary.executions_checked += 1
                if self._calls_for_nothing(snapshot, state):
                    continue
                self._handle(snapshot, summary, emitted)
        return seen

    def _open_executions(
        self, pods: Sequence[dict[str, Any]], summary: Summary
    ) -> list[tuple[dict[str, Any], str, ExecutionState | None]]:
        """Pair each pod with its execution id and, if it has no terminal
        event, its state; the state is None for finished executions.

        Pods without an execution id are counted and left out.
        """
        with_ids: list[tuple[dict[str, Any], str]] = []
        for pod in pods:
            execution_id = execution_id_of(pod["metadata"], self._selection)
            if execution_id is None:
                summary.skipped_no_execution_id += 1
                continue
            with_ids.append((pod, execution_id))
        states = self._context.store.load_many([i for _, i in with_ids])
        return [
            (pod, execution_id, None if state.terminal is not None else state)
            for (pod, execution_id), state in zip(with_ids, states, strict=True)
        ]

    def _calls_for_nothing(self, snapshot: PodSnapshot, state: ExecutionState) -> bool:
        # Planning against the state read with the page needs no lock. The
        # state only grows, so a snapshot that calls for nothing now calls for
        # nothing under the lock either. This spares a lock per running pod.
        planned = plan(
            snapshot, state, now=datetime.now(UTC), policy=self._context.policy
        )
        return not planned.events and planned.terminal is None

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
        if result.emitted:
            summary.executions_repaired += 1
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
        keeper: _LockKeeper,
    ) -> None:
        # Only executions last seen before this run began count, because one
        # recorded since may have a pod created after the list was taken. The
        # ids are read in full first, because failing an execution removes it
        # from the sorted set that ``active`` pages through by offset.
        tracked_executions = list(self._context.store.active(seen_before=started))
        for tracked in tracked_executions:
            if tracked.execution_id in seen or not self._in_scope(tracked):
                continue
            keeper.check()
            try:
                if tracked.pod is not None and self._pod_exists(tracked):
                    continue
                if self._emit_disappeared(tracked):
                    summary.vanished += 1
                    summary.executions_repaired += 1
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
                "event_id": event.event_id,
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
        holder = self._redis.get(LOCK_KEY)
        if isinstance(holder, bytes):
            return holder.decode(errors="replace")
        # The holder released the lock between the two calls.
        return str(holder) if holder else "a run that has just finished"


def _flat(summary: Summary) -> dict[str, object]:
    fields = summary.as_dict()
    emitted = fields.pop("events_emitted")
    fields.update(
        {f"emitted_{name.split('.')[-1]}": count for name, count in emitted.items()}
    )
    return fields
