"""The mapping from a pod snapshot to execution events. Pure: no I/O.

``plan`` looks at one snapshot and at what was already emitted for the
execution, and returns the events to emit now. Its rules:

- An event is emitted only for a stage the pod's status proves: scheduled
  once the pod is bound to a node, running once the execution's container
  has started, terminal once the outcome is known. A pod first seen when it
  has already finished gets all three, with the times from its status.
- Stages only move forward: nothing of an earlier stage is emitted after a
  later one, and nothing at all after the terminal event.
- A terminal outcome that needs the container log (the runner's report)
  comes back as a ``TerminalVerdict``. The task then reads the log and
  calls ``terminal_event`` to build the event.

The classification follows what mature systems do: the Job controller
counts a pod with a deletionTimestamp that did not succeed as failed,
Tekton fails on OOMKilled whatever the exit code says, and Airflow fails a
pending pod stuck on a fatal waiting reason.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tasks.events import (
    TERMINAL_EVENT_CLASSES,
    CapturedOutput,
    EventType,
    ExecutionRunningEvent,
    ExecutionScheduledEvent,
    LogStatus,
    PodRef,
    ResourceUsage,
    TerminalEvent,
    TerminalReason,
    event_id,
)
from tasks.settings import Policy
from tasks.snapshots import ContainerSnapshot, ContainerState, PodSnapshot

#: Pod ``status.reason`` values that the kubelet sets when it rejects a pod
#: at admission (pkg/kubelet/lifecycle in Kubernetes 1.36), besides the
#: ``OutOf<resource>`` family.
_ADMISSION_REASONS = frozenset(
    {
        "NodeAffinity",
        "NodeSelectorMismatching",
        "NodeName",
        "NodePorts",
        "Taint",
        "UnexpectedAdmissionError",
        "PodOSNotSupported",
        "PodOSSelectorNodeLabelDoesNotMatch",
        "InvalidNodeInfo",
        "SysctlForbidden",
        "AppArmor",
        "InitContainerRestartPolicyForbidden",
        "SupplementalGroupsPolicyNotSupported",
    }
)

#: ``DisruptionTarget`` condition reasons (Kubernetes 1.26 and later).
_DISRUPTION_REASONS = {
    "PreemptionByScheduler": TerminalReason.PREEMPTED,
    "PreemptionByKubeScheduler": TerminalReason.PREEMPTED,
    "EvictionByEvictionAPI": TerminalReason.EVICTED,
    "DeletionByTaintManager": TerminalReason.NODE_LOST,
    "DeletionByPodGC": TerminalReason.NODE_LOST,
    "TerminationByKubelet": TerminalReason.EVICTED,
}

#: Outcomes of the runner's report that are failures of their own kind.
_RUNNER_OUTCOMES = {
    "command_not_found": TerminalReason.COMMAND_NOT_FOUND,
    "command_not_executable": TerminalReason.COMMAND_NOT_EXECUTABLE,
    "runner_failed": TerminalReason.RUNNER_FAILED,
}

_WAITING_REASONS = {
    "ErrImagePull": TerminalReason.IMAGE_PULL_FAILED,
    "ImagePullBackOff": TerminalReason.IMAGE_PULL_FAILED,
    "ErrImageNeverPull": TerminalReason.IMAGE_PULL_FAILED,
    "InvalidImageName": TerminalReason.INVALID_IMAGE,
    "CreateContainerConfigError": TerminalReason.CONTAINER_CONFIG_ERROR,
    "CreateContainerError": TerminalReason.CONTAINER_START_FAILED,
    "RunContainerError": TerminalReason.CONTAINER_START_FAILED,
    "CrashLoopBackOff": TerminalReason.CRASH_LOOP,
}

_SIGNAL_EXIT_BASE = 128


@dataclass(frozen=True)
class ExecutionState:
    """The events already emitted for one execution, as ``tasks.state`` stores them."""

    emitted: frozenset[EventType] = frozenset()

    @property
    def stage(self) -> int:
        return max((event_type.stage for event_type in self.emitted), default=0)

    @property
    def terminal(self) -> EventType | None:
        for event_type in self.emitted:
            if event_type.is_terminal:
                return event_type
        return None


@dataclass(frozen=True)
class TerminalVerdict:
    """The end of an execution, as far as the pod's status shows it."""

    event_type: EventType
    reason: TerminalReason
    occurred_at: datetime
    exit_code: int | None = None
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: True when the execution's container started, so its log may hold the
    #: runner's report.
    read_log: bool = False


class SkipReason(enum.StrEnum):
    NO_EXECUTION_ID = "no_execution_id"
    ALREADY_TERMINAL = "already_terminal"
    NOTHING_NEW = "nothing_new"


@dataclass(frozen=True)
class Plan:
    events: tuple[ExecutionScheduledEvent | ExecutionRunningEvent, ...] = ()
    terminal: TerminalVerdict | None = None
    #: Seconds after which the same pod should be looked at again, because
    #: it waits on a fatal reason or a lost node inside its grace period.
    recheck_after: float | None = None
    skipped: SkipReason | None = None


@dataclass(frozen=True)
class RunnerFacts:
    """The facts of the runner's report, in the terms of the events."""

    exit_code: int | None
    signal: int | None
    timed_out: bool
    #: The runner's own outcome: exited, signaled, timed_out,
    #: command_not_found, command_not_executable or runner_failed.
    outcome: str | None
    stdout: CapturedOutput
    stderr: CapturedOutput
    resources: ResourceUsage | None


@dataclass(frozen=True)
class LogOutcome:
    """The result of reading the container log and looking for a report."""

    status: LogStatus
    facts: RunnerFacts | None = None
    #: The raw log, kept as stdout when no report was read.
    raw: bytes = b""
    raw_truncated: bool = False
    report_problem: str | None = None
    error: str | None = None
    notes: tuple[str, ...] = field(default=())


def plan(
    snapshot: PodSnapshot,
    state: ExecutionState,
    *,
    now: datetime,
    policy: Policy,
) -> Plan:
    """Return the events that ``snapshot`` calls for, given ``state``."""
    if snapshot.execution_id is None:
        return Plan(skipped=SkipReason.NO_EXECUTION_ID)
    if state.terminal is not None:
        return Plan(skipped=SkipReason.ALREADY_TERMINAL)

    events: list[ExecutionScheduledEvent | ExecutionRunningEvent] = []
    scheduled_at = _scheduled_at(snapshot)
    if scheduled_at is not None and state.stage < EventType.SCHEDULED.stage:
        events.append(
            ExecutionScheduledEvent(
                **_common(snapshot, EventType.SCHEDULED, scheduled_at)
            )
        )
    running_at = _running_at(snapshot)
    if running_at is not None and state.stage < EventType.RUNNING.stage:
        events.append(
            ExecutionRunningEvent(**_common(snapshot, EventType.RUNNING, running_at))
        )

    verdict, recheck_after = classify(snapshot, now=now, policy=policy)
    if not events and verdict is None:
        return Plan(recheck_after=recheck_after, skipped=SkipReason.NOTHING_NEW)
    return Plan(events=tuple(events), terminal=verdict, recheck_after=recheck_after)


def classify(
    snapshot: PodSnapshot, *, now: datetime, policy: Policy
) -> tuple[TerminalVerdict | None, float | None]:
    """Return the terminal verdict of a pod, or when to look again.

    The second value is set when the pod may turn out failed later without
    any change of its own: a fatal waiting reason or a lost node inside its
    grace period.
    """
    main = snapshot.container(snapshot.main_container)
    if snapshot.phase == "Succeeded":
        return _succeeded(snapshot, main), None
    if snapshot.phase == "Failed":
        return _failed(snapshot, main), None
    if snapshot.deleted:
        return _deleted(snapshot, main), None
    if snapshot.deletion_requested_at is not None:
        return _deleting(snapshot, main, now=now, policy=policy)
    return _still_active(snapshot, main, now=now, policy=policy)


def terminal_event(
    snapshot: PodSnapshot, verdict: TerminalVerdict, log: LogOutcome
) -> TerminalEvent:
    """Build the terminal event from the verdict and what the log held."""
    event_type, reason = verdict.event_type, verdict.reason
    exit_code = verdict.exit_code
    signal: int | None = None
    facts = log.facts
    if facts is not None:
        exit_code = facts.exit_code if facts.exit_code is not None else exit_code
        signal = facts.signal
        event_type, reason = _refine(verdict, facts)
        stdout, stderr, resources = facts.stdout, facts.stderr, facts.resources
    elif log.status is LogStatus.READ:
        stdout = CapturedOutput.from_bytes(log.raw, truncated=log.raw_truncated)
        stderr, resources = None, None
    else:
        # The log was not read: nothing is known of the output, which is
        # not the same as no output.
        stdout, stderr, resources = None, None, None

    cls = TERMINAL_EVENT_CLASSES[event_type]
    return cls(
        **_common(snapshot, event_type, verdict.occurred_at),
        reason=reason,
        exit_code=exit_code,
        signal=signal,
        message=verdict.message,
        started_at=verdict.started_at,
        finished_at=verdict.finished_at,
        stdout=stdout,
        stderr=stderr,
        resources=resources,
        report_found=facts is not None,
        report_problem=log.report_problem,
        log_status=log.status,
        log_error=log.error,
    )


def disappeared_event(
    execution_id: str,
    pod: PodRef,
    *,
    now: datetime,
    last_seen_at: datetime | None,
) -> TerminalEvent:
    """Build the failed event of a tracked execution whose pod is gone."""
    common = {
        "event_id": event_id(pod.uid, EventType.FAILED),
        "execution_id": execution_id,
        "pod": pod,
        "occurred_at": last_seen_at or now,
        "observed_at": now,
    }
    return TERMINAL_EVENT_CLASSES[EventType.FAILED](
        **common,
        reason=TerminalReason.POD_DISAPPEARED,
        message="the pod disappeared before the monitor saw how it ended",
        log_status=LogStatus.NOT_FOUND,
    )


def _refine(
    verdict: TerminalVerdict, facts: RunnerFacts
) -> tuple[EventType, TerminalReason]:
    # The pod's status records what the kubelet did (OOM kill, deadline),
    # and the report records what the runner did (its own timeout, a signal).
    if verdict.reason in {TerminalReason.OOM_KILLED, TerminalReason.DEADLINE_EXCEEDED}:
        return verdict.event_type, verdict.reason
    if facts.timed_out:
        return EventType.TIMED_OUT, TerminalReason.TIMEOUT
    if facts.outcome in _RUNNER_OUTCOMES:
        return EventType.FAILED, _RUNNER_OUTCOMES[facts.outcome]
    if verdict.reason in {TerminalReason.COMPLETED, TerminalReason.NON_ZERO_EXIT}:
        if facts.signal is not None:
            return EventType.FAILED, TerminalReason.KILLED_BY_SIGNAL
        if facts.exit_code not in (None, 0):
            return EventType.FAILED, TerminalReason.NON_ZERO_EXIT
    return verdict.event_type, verdict.reason


def _succeeded(
    snapshot: PodSnapshot, main: ContainerSnapshot | None
) -> TerminalVerdict:
    if main is not None and main.reason == "OOMKilled":
        return _container_verdict(
            snapshot, main, EventType.FAILED, TerminalReason.OOM_KILLED
        )
    return _container_verdict(
        snapshot, main, EventType.COMPLETED, TerminalReason.COMPLETED
    )


def _failed(snapshot: PodSnapshot, main: ContainerSnapshot | None) -> TerminalVerdict:
    # Reasons of the pod first: they name what killed the containers, while
    # the containers only show the kill (exit code 137 or 143).
    pod_reason = _pod_level_reason(snapshot)
    if pod_reason is TerminalReason.DEADLINE_EXCEEDED:
        return _container_verdict(snapshot, main, EventType.TIMED_OUT, pod_reason)
    if pod_reason is not None:
        return _container_verdict(snapshot, main, EventType.FAILED, pod_reason)

    failed_init = _failed_init_container(snapshot)
    if failed_init is not None:
        return TerminalVerdict(
            event_type=EventType.FAILED,
            reason=TerminalReason.INIT_CONTAINER_FAILED,
            occurred_at=failed_init.finished_at or snapshot.observed_at,
            exit_code=failed_init.exit_code,
            message=_join(
                f"init container {failed_init.name!r} failed",
                failed_init.reason,
                failed_init.message,
            ),
            finished_at=failed_init.finished_at,
        )

    if snapshot.deletion_requested_at is not None and not _ended_by_itself(main):
        return _container_verdict(
            snapshot, main, EventType.FAILED, TerminalReason.DELETED
        )
    return _container_verdict(snapshot, main, EventType.FAILED, _container_reason(main))


def _deleted(snapshot: PodSnapshot, main: ContainerSnapshot | None) -> TerminalVerdict:
    # The pod is gone while its last known phase was not terminal. If its
    # container had already ended by itself, that end is the outcome.
    if (
        main is not None
        and main.state is ContainerState.TERMINATED
        and _ended_by_itself(main)
    ):
        if main.exit_code == 0 and main.reason != "OOMKilled":
            return _container_verdict(
                snapshot, main, EventType.COMPLETED, TerminalReason.COMPLETED
            )
        return _container_verdict(
            snapshot, main, EventType.FAILED, _container_reason(main)
        )
    verdict = _container_verdict(
        snapshot, main, EventType.FAILED, TerminalReason.DELETED
    )
    return TerminalVerdict(
        event_type=verdict.event_type,
        reason=verdict.reason,
        occurred_at=snapshot.deletion_requested_at or snapshot.observed_at,
        exit_code=verdict.exit_code,
        message=verdict.message or "the pod was deleted before it finished",
        started_at=verdict.started_at,
        finished_at=verdict.finished_at,
        read_log=verdict.read_log,
    )


def _deleting(
    snapshot: PodSnapshot,
    main: ContainerSnapshot | None,
    *,
    now: datetime,
    policy: Policy,
) -> tuple[TerminalVerdict | None, float | None]:
    # The kubelet stops the containers and reports their end; the pod's
    # Failed phase or its DELETED event follows and decides. The
    # deletionTimestamp is when the grace period ends: a pod still there
    # long after it has no kubelet to finish it, as on an unreachable node,
    # where it stays until the Node object is removed.
    assert snapshot.deletion_requested_at is not None
    remaining = _remaining(
        snapshot.deletion_requested_at, policy.node_lost_grace_seconds, now
    )
    if remaining > 0:
        return None, remaining
    reason = _pod_level_reason(snapshot) or TerminalReason.NODE_LOST
    message = "the pod's deletion did not complete; its node stopped reporting"
    return (
        _container_verdict(
            snapshot, main, EventType.FAILED, reason, message=message, occurred_at=now
        ),
        None,
    )


def _still_active(
    snapshot: PodSnapshot,
    main: ContainerSnapshot | None,
    *,
    now: datetime,
    policy: Policy,
) -> tuple[TerminalVerdict | None, float | None]:
    # A started pod whose node stopped reporting, with a Ready condition of
    # Unknown. NOTE: the node lifecycle controller of recent releases marks
    # such pods Ready=False instead, which this rule does not catch; those
    # pods fail through the taint manager's deletion, which no kubelet
    # completes (see _deleting).
    ready = snapshot.condition("Ready")
    if ready is not None and ready.status == "Unknown" and snapshot.node_name:
        since = ready.last_transition_time or snapshot.observed_at
        remaining = _remaining(since, policy.node_lost_grace_seconds, now)
        if remaining > 0:
            return None, remaining
        return (
            _container_verdict(
                snapshot,
                main,
                EventType.FAILED,
                TerminalReason.NODE_LOST,
                message=_join("the node stopped reporting", ready.message),
                occurred_at=now,
            ),
            None,
        )

    stuck = _fatal_waiting_container(snapshot, policy.fatal_waiting_reasons)
    if stuck is None:
        return None, None
    since = snapshot.started_at or snapshot.created_at or snapshot.observed_at
    remaining = _remaining(since, policy.pending_grace_seconds, now)
    if remaining > 0:
        return None, remaining
    reason = _WAITING_REASONS.get(
        stuck.reason or "", TerminalReason.CONTAINER_START_FAILED
    )
    return (
        TerminalVerdict(
            event_type=EventType.FAILED,
            reason=reason,
            occurred_at=now,
            message=_join(
                f"container {stuck.name!r} is waiting", stuck.reason, stuck.message
            ),
        ),
        None,
    )


def _pod_level_reason(snapshot: PodSnapshot) -> TerminalReason | None:
    reason = snapshot.reason or ""
    if reason == "DeadlineExceeded":
        return TerminalReason.DEADLINE_EXCEEDED
    if reason == "Evicted":
        return TerminalReason.EVICTED
    if reason == "NodeLost":
        return TerminalReason.NODE_LOST
    if reason in {"Terminated", "Shutdown"} or "node shutdown" in (
        snapshot.message or ""
    ):
        return TerminalReason.NODE_SHUTDOWN
    if reason.startswith("OutOf") or reason in _ADMISSION_REASONS:
        return TerminalReason.ADMISSION_REJECTED
    disruption = snapshot.condition("DisruptionTarget")
    if disruption is not None and disruption.status == "True":
        return _DISRUPTION_REASONS.get(disruption.reason or "", TerminalReason.EVICTED)
    return None


def _container_reason(main: ContainerSnapshot | None) -> TerminalReason:
    if main is None or main.state is not ContainerState.TERMINATED:
        return TerminalReason.UNKNOWN
    if main.reason == "OOMKilled":
        return TerminalReason.OOM_KILLED
    if main.reason in {"ContainerCannotRun", "StartError"}:
        return TerminalReason.CONTAINER_START_FAILED
    if main.exit_code == 0:
        return TerminalReason.UNKNOWN
    return TerminalReason.NON_ZERO_EXIT


def _container_verdict(
    snapshot: PodSnapshot,
    main: ContainerSnapshot | None,
    event_type: EventType,
    reason: TerminalReason,
    *,
    message: str | None = None,
    occurred_at: datetime | None = None,
) -> TerminalVerdict:
    terminated = main is not None and main.state is ContainerState.TERMINATED
    started_at = main.started_at if main is not None else None
    finished_at = main.finished_at if main is not None and terminated else None
    container_message = main.message if main is not None and terminated else None
    return TerminalVerdict(
        event_type=event_type,
        reason=reason,
        occurred_at=occurred_at or finished_at or snapshot.observed_at,
        exit_code=main.exit_code if main is not None and terminated else None,
        message=message or _join(snapshot.message, container_message),
        started_at=started_at,
        finished_at=finished_at,
        read_log=started_at is not None or terminated,
    )


def _ended_by_itself(main: ContainerSnapshot | None) -> bool:
    # A container stopped for a deletion ends with SIGTERM (143) or SIGKILL
    # (137); any other end happened before the deletion mattered.
    if main is None or main.state is not ContainerState.TERMINATED:
        return False
    return main.exit_code not in (_SIGNAL_EXIT_BASE + 9, _SIGNAL_EXIT_BASE + 15)


def _failed_init_container(snapshot: PodSnapshot) -> ContainerSnapshot | None:
    for container in snapshot.init_containers:
        if container.state is ContainerState.TERMINATED and container.exit_code not in (
            None,
            0,
        ):
            return container
    return None


def _fatal_waiting_container(
    snapshot: PodSnapshot, fatal_reasons: Collection[str]
) -> ContainerSnapshot | None:
    for container in snapshot.containers:
        if (
            container.state is ContainerState.WAITING
            and container.reason in fatal_reasons
        ):
            return container
    return None


def _scheduled_at(snapshot: PodSnapshot) -> datetime | None:
    condition = snapshot.condition("PodScheduled")
    if condition is not None and condition.status == "True":
        return condition.last_transition_time or snapshot.observed_at
    if snapshot.node_name:
        return snapshot.started_at or snapshot.created_at or snapshot.observed_at
    return None


def _running_at(snapshot: PodSnapshot) -> datetime | None:
    main = snapshot.container(snapshot.main_container)
    if main is not None and main.started_at is not None:
        return main.started_at
    if snapshot.phase == "Running":
        return snapshot.observed_at
    return None


def _common(
    snapshot: PodSnapshot, event_type: EventType, occurred_at: datetime
) -> dict[str, object]:
    assert snapshot.execution_id is not None  # plan() returns early without one
    return {
        "event_id": event_id(snapshot.uid, event_type),
        "execution_id": snapshot.execution_id,
        "pod": PodRef(
            namespace=snapshot.namespace,
            name=snapshot.name,
            uid=snapshot.uid,
            node=snapshot.node_name,
        ),
        "occurred_at": occurred_at,
        "observed_at": snapshot.observed_at,
    }


def _remaining(since: datetime, grace_seconds: float, now: datetime) -> float:
    deadline = since + timedelta(seconds=grace_seconds)
    return max(0.0, (deadline - now).total_seconds())


def _join(*parts: str | None) -> str | None:
    kept = [part for part in parts if part]
    return ": ".join(kept) if kept else None
