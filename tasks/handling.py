"""Handling one pod snapshot: plan, read the log, publish, record.

Both the pod-change task and the reconciliation come through here, so a
snapshot has the same effect, from the watch or from a list. The order of the steps is
the delivery contract:

1. Take the execution's lock, so no other task emits for it meanwhile.
2. Read what was emitted, and plan the events this snapshot calls for.
3. For a terminal outcome, read the container log and parse the report.
4. Publish each event and wait until Kafka confirmed it; only then record
   it in the state. A crash between the two re-emits the event with the
   same id on the next attempt; nothing is recorded that Kafka lacks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from tasks import extraction, metrics
from tasks.errors import KubernetesApiError, LogReadError
from tasks.events import EventType, ExecutionEvent, LogStatus
from tasks.outcomes import LogOutcome, SkipReason, plan, terminal_event
from tasks.publishing import Delivery
from tasks.settings import KafkaSettings, LogSettings, Policy
from tasks.sizing import fit_event
from tasks.snapshots import PodSnapshot
from tasks.state import StateStore

logger = logging.getLogger(__name__)

_NOT_FOUND = 404


class EventPublisher(Protocol):
    def publish(self, event: ExecutionEvent) -> Delivery: ...


@dataclass(frozen=True)
class Context:
    """The clients and settings that handling a snapshot needs."""

    store: StateStore
    publisher: EventPublisher
    core_v1: Any
    policy: Policy
    kafka: KafkaSettings
    logs: LogSettings


@dataclass
class Result:
    emitted: list[EventType] = field(default_factory=list)
    #: Reason of the terminal event, when one was emitted.
    terminal_reason: str | None = None
    skipped: str | None = None
    recheck_after: float | None = None

    def summary(self) -> dict[str, object]:
        return {
            "emitted": [event_type.value for event_type in self.emitted],
            "terminal_reason": self.terminal_reason,
            "skipped": self.skipped,
            "recheck_after": self.recheck_after,
        }


def handle(
    snapshot: PodSnapshot,
    context: Context,
    *,
    give_up_on_log: bool = False,
    now: datetime | None = None,
) -> Result:
    """Emit the events that ``snapshot`` calls for and the state lacks.

    An event is emitted once. The exception is a process that dies between
    Kafka's confirmation and the state write: the next attempt then emits
    the event again, with the same id.

    ``give_up_on_log`` makes a failing log read end in an event that
    reports the failed read, instead of a ``LogReadError``. The task sets it
    on its last attempt. Raises ``RetryableError`` subclasses for failures
    a later attempt may not meet.
    """
    fields = _log_fields(snapshot)
    execution_id = snapshot.execution_id
    if execution_id is None:
        return Result(skipped=SkipReason.NO_EXECUTION_ID.value)
    if snapshot.deleted and _still_exists(context.core_v1, snapshot):
        # The watch sent DELETED because the pod stopped matching the label
        # selector, not because it was deleted.
        logger.info("pod left the selection, not deleted; skipped", extra=fields)
        return Result(skipped="left_selection")

    with context.store.locked(execution_id):
        state = context.store.load(execution_id)
        planned = plan(
            snapshot, state, now=now or datetime.now(UTC), policy=context.policy
        )
        result = Result(
            skipped=planned.skipped.value if planned.skipped else None,
            recheck_after=planned.recheck_after,
        )
        for event in planned.events:
            _publish(event, context, result, fields)
        if planned.terminal is not None:
            log = _read_log(
                snapshot, planned.terminal.read_log, context, give_up_on_log
            )
            terminal = fit_event(
                terminal_event(snapshot, planned.terminal, log),
                context.kafka.max_event_bytes,
            )
            _publish(terminal, context, result, fields)
            result.terminal_reason = terminal.reason.value
    return result


def _publish(
    event: ExecutionEvent, context: Context, result: Result, fields: dict[str, object]
) -> None:
    delivery = context.publisher.publish(event)
    context.store.record(
        event.execution_id, event.event_type, event.event_id, event.pod
    )
    result.emitted.append(event.event_type)
    metrics.EVENTS_PUBLISHED.labels(event.event_type.value).inc()
    reason = getattr(event, "reason", None)
    if reason is not None:
        metrics.TERMINAL_REASONS.labels(str(reason)).inc()
    extra = {
        **fields,
        "event_type": event.event_type.value,
        "event_id": event.event_id,
        "partition": delivery.partition,
        "offset": delivery.offset,
    }
    if event.event_type.is_terminal:
        extra["reason"] = getattr(event, "reason", None)
        extra["exit_code"] = getattr(event, "exit_code", None)
    logger.info("event published", extra=extra)


def _read_log(
    snapshot: PodSnapshot,
    container_started: bool,
    context: Context,
    give_up: bool,
) -> LogOutcome:
    outcome = _read_log_once(snapshot, container_started, context, give_up)
    metrics.LOG_READS.labels(outcome.status.value).inc()
    return outcome


def _read_log_once(
    snapshot: PodSnapshot,
    container_started: bool,
    context: Context,
    give_up: bool,
) -> LogOutcome:
    named = snapshot.main_container
    if named is not None and snapshot.container(named) is None:
        # The container annotation names a container the pod does not have.
        logger.warning(
            "execution container not found in pod; log not read",
            extra={**_log_fields(snapshot), "container": snapshot.main_container},
        )
        return LogOutcome(
            LogStatus.SKIPPED,
            error=f"the pod has no container named {snapshot.main_container!r}",
        )
    if not container_started or snapshot.main_container is None:
        return LogOutcome(LogStatus.SKIPPED)
    try:
        outcome = extraction.read_outcome(
            context.core_v1,
            namespace=snapshot.namespace,
            pod=snapshot.name,
            container=snapshot.main_container,
            settings=context.logs,
        )
    except LogReadError as error:
        if not give_up:
            raise
        logger.error(
            "container log unreadable after retries; emitting without it",
            extra={**_log_fields(snapshot), "error": str(error)},
        )
        return LogOutcome(LogStatus.FAILED, error=str(error))
    for note in outcome.notes:
        logger.warning(
            "container log needs a look", extra={**_log_fields(snapshot), "note": note}
        )
    return outcome


def _still_exists(core_v1: Any, snapshot: PodSnapshot) -> bool:
    try:
        pod = core_v1.read_namespaced_pod(snapshot.name, snapshot.namespace)
    except ApiException as error:
        if error.status == _NOT_FOUND:
            return False
        raise KubernetesApiError(
            f"reading pod {snapshot.ref} failed: {error.status}"
        ) from error
    return bool(pod.metadata.uid == snapshot.uid)


def _log_fields(snapshot: PodSnapshot) -> dict[str, object]:
    return {
        "execution_id": snapshot.execution_id,
        "namespace": snapshot.namespace,
        "pod": snapshot.name,
        "pod_uid": snapshot.uid,
        "resource_version": snapshot.resource_version,
    }
