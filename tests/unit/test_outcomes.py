"""The mapping from pod snapshots to execution events, case by case."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tasks.events import (
    CapturedOutput,
    EventType,
    LogStatus,
    PodRef,
    ResourceUsage,
    TerminalEvent,
    TerminalReason,
    event_id,
)
from tasks.outcomes import (
    ExecutionState,
    LogOutcome,
    RunnerFacts,
    SkipReason,
    classify,
    disappeared_event,
    plan,
    terminal_event,
)
from tasks.settings import PodSelection, Policy
from tasks.snapshots import build_snapshot
from tests.unit.pods import (
    DELETING,
    STARTED,
    pod,
    running,
    terminated,
    waiting,
)

POLICY = Policy(pending_grace_seconds=120, node_lost_grace_seconds=300)
SELECTION = PodSelection()
#: Shortly after the pod's times, inside every grace period.
SOON = datetime(2026, 12, 4, 10, 0, 30, tzinfo=UTC)
#: Long after, past every grace period.
LATER = datetime(2026, 12, 4, 11, 0, 0, tzinfo=UTC)

S, R = EventType.SCHEDULED, EventType.RUNNING
COMPLETED, FAILED, TIMED_OUT = (
    EventType.COMPLETED,
    EventType.FAILED,
    EventType.TIMED_OUT,
)
NOTHING: frozenset[EventType] = frozenset()


def stdout_of(event: TerminalEvent) -> CapturedOutput:
    assert event.stdout is not None
    return event.stdout


def stderr_of(event: TerminalEvent) -> CapturedOutput:
    assert event.stderr is not None
    return event.stderr


def snap(raw: dict[str, Any], *, deleted: bool = False) -> Any:
    return build_snapshot(raw, SELECTION, deleted=deleted)


@dataclass(frozen=True)
class Case:
    id: str
    pod: dict[str, Any]
    #: Event types emitted now, terminal last.
    want: tuple[EventType, ...]
    want_reason: TerminalReason | None = None
    want_exit_code: int | None = None
    already: frozenset[EventType] = NOTHING
    deleted: bool = False
    now: datetime = SOON
    want_read_log: bool | None = None


CASES = [
    Case("unscheduled pending pod", pod(node=None), ()),
    Case("scheduled pending pod", pod(), (S,)),
    Case("running pod", pod(phase="Running", main=running()), (S, R)),
    Case(
        "running pod after scheduled",
        pod(phase="Running", main=running()),
        (R,),
        already=frozenset({S}),
    ),
    Case(
        "running pod already reported",
        pod(phase="Running", main=running()),
        (),
        already=frozenset({S, R}),
    ),
    Case(
        "succeeded pod first seen finished",
        pod(phase="Succeeded", main=terminated(0)),
        (S, R, COMPLETED),
        TerminalReason.COMPLETED,
        0,
        want_read_log=True,
    ),
    Case(
        "succeeded pod after running",
        pod(phase="Succeeded", main=terminated(0)),
        (COMPLETED,),
        TerminalReason.COMPLETED,
        0,
        already=frozenset({S, R}),
    ),
    Case(
        "no scheduled event after running",
        pod(phase="Succeeded", main=terminated(0)),
        (COMPLETED,),
        TerminalReason.COMPLETED,
        0,
        already=frozenset({R}),
    ),
    Case(
        "nothing after terminal",
        pod(phase="Failed", main=terminated(1)),
        (),
        already=frozenset({S, R, COMPLETED}),
    ),
    Case(
        "non-zero exit",
        pod(phase="Failed", main=terminated(3)),
        (S, R, FAILED),
        TerminalReason.NON_ZERO_EXIT,
        3,
    ),
    Case(
        "oom killed",
        pod(phase="Failed", main=terminated(137, "OOMKilled")),
        (S, R, FAILED),
        TerminalReason.OOM_KILLED,
        137,
    ),
    Case(
        "oom killed with exit code 0 still fails",
        pod(phase="Succeeded", main=terminated(0, "OOMKilled")),
        (S, R, FAILED),
        TerminalReason.OOM_KILLED,
        0,
    ),
    Case(
        "deadline exceeded",
        pod(
            phase="Failed",
            reason="DeadlineExceeded",
            message="Pod was active on the node longer than the specified deadline",
            main=terminated(137),
        ),
        (S, R, TIMED_OUT),
        TerminalReason.DEADLINE_EXCEEDED,
        137,
    ),
    Case(
        "evicted by the kubelet",
        pod(
            phase="Failed",
            reason="Evicted",
            message="The node was low on resource: memory.",
            main=terminated(137),
        ),
        (S, R, FAILED),
        TerminalReason.EVICTED,
        137,
    ),
    Case(
        "evicted through the eviction API",
        pod(
            phase="Failed",
            conditions=[
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "EvictionByEvictionAPI",
                }
            ],
            main=terminated(143),
        ),
        (S, R, FAILED),
        TerminalReason.EVICTED,
        143,
    ),
    Case(
        "preempted",
        pod(
            phase="Failed",
            conditions=[
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "PreemptionByScheduler",
                }
            ],
            main=terminated(137),
        ),
        (S, R, FAILED),
        TerminalReason.PREEMPTED,
        137,
    ),
    Case(
        "deleted by the taint manager",
        pod(
            phase="Failed",
            conditions=[
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "DeletionByTaintManager",
                }
            ],
            main=running(),
        ),
        (S, R, FAILED),
        TerminalReason.NODE_LOST,
    ),
    Case(
        "pod reason NodeLost",
        pod(phase="Failed", reason="NodeLost", main=running()),
        (S, R, FAILED),
        TerminalReason.NODE_LOST,
    ),
    Case(
        "node shutdown",
        pod(
            phase="Failed",
            reason="Terminated",
            message="Pod was terminated in response to imminent node shutdown.",
            main=terminated(143),
        ),
        (S, R, FAILED),
        TerminalReason.NODE_SHUTDOWN,
        143,
    ),
    Case(
        "rejected at admission for memory",
        pod(phase="Failed", reason="OutOfmemory", message="Node didn't have enough"),
        (S, FAILED),
        TerminalReason.ADMISSION_REJECTED,
        want_read_log=False,
    ),
    Case(
        "rejected at admission for node affinity",
        pod(phase="Failed", reason="NodeAffinity"),
        (S, FAILED),
        TerminalReason.ADMISSION_REJECTED,
    ),
    Case(
        "init container failed",
        pod(
            phase="Failed",
            init=[{"name": "setup", **terminated(2)}],
            main=waiting("PodInitializing"),
        ),
        (S, FAILED),
        TerminalReason.INIT_CONTAINER_FAILED,
        2,
        want_read_log=False,
    ),
    Case(
        "container could not run",
        pod(phase="Failed", main=terminated(128, "ContainerCannotRun")),
        (S, R, FAILED),
        TerminalReason.CONTAINER_START_FAILED,
        128,
    ),
    Case(
        "failed phase with no container status",
        pod(phase="Failed"),
        (S, FAILED),
        TerminalReason.UNKNOWN,
    ),
    Case(
        "image pull error inside grace",
        pod(main=waiting("ErrImagePull")),
        (S,),
    ),
    Case(
        "image pull back-off past grace",
        pod(main=waiting("ImagePullBackOff", "Back-off pulling image")),
        (S, FAILED),
        TerminalReason.IMAGE_PULL_FAILED,
        now=LATER,
        want_read_log=False,
    ),
    Case(
        "invalid image name past grace",
        pod(main=waiting("InvalidImageName")),
        (S, FAILED),
        TerminalReason.INVALID_IMAGE,
        now=LATER,
    ),
    Case(
        "container config error past grace",
        pod(main=waiting("CreateContainerConfigError", 'secret "x" not found')),
        (S, FAILED),
        TerminalReason.CONTAINER_CONFIG_ERROR,
        now=LATER,
    ),
    Case(
        "init container stuck on image pull past grace",
        pod(
            init=[{"name": "setup", **waiting("ErrImagePull")}],
            main=waiting("PodInitializing"),
        ),
        (S, FAILED),
        TerminalReason.IMAGE_PULL_FAILED,
        now=LATER,
    ),
    Case(
        "crash loop past grace",
        pod(phase="Running", main=waiting("CrashLoopBackOff")),
        (S, R, FAILED),
        TerminalReason.CRASH_LOOP,
        now=LATER,
    ),
    Case(
        "ContainerCreating is not fatal",
        pod(main=waiting("ContainerCreating")),
        (S,),
        now=LATER,
    ),
    Case(
        "deletion requested while running waits",
        pod(phase="Running", main=running(), deletion=DELETING),
        (S, R),
    ),
    Case(
        "deletion stuck past grace fails as node lost",
        pod(phase="Running", main=running(), deletion=DELETING),
        (FAILED,),
        TerminalReason.NODE_LOST,
        already=frozenset({S, R}),
        now=LATER,
    ),
    Case(
        "deletion stuck by taint manager past grace",
        pod(
            phase="Running",
            main=running(),
            deletion=DELETING,
            conditions=[
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "DeletionByTaintManager",
                }
            ],
        ),
        (FAILED,),
        TerminalReason.NODE_LOST,
        already=frozenset({S, R}),
        now=LATER,
    ),
    Case(
        "failed after deletion request",
        pod(phase="Failed", main=terminated(143), deletion=DELETING),
        (S, R, FAILED),
        TerminalReason.DELETED,
        143,
    ),
    Case(
        "failed by itself while being deleted",
        pod(phase="Failed", main=terminated(1), deletion=DELETING),
        (S, R, FAILED),
        TerminalReason.NON_ZERO_EXIT,
        1,
    ),
    Case(
        "succeeded while being deleted",
        pod(phase="Succeeded", main=terminated(0), deletion=DELETING),
        (S, R, COMPLETED),
        TerminalReason.COMPLETED,
        0,
    ),
    Case(
        "deleted while running",
        pod(phase="Running", main=running(), deletion=DELETING),
        (FAILED,),
        TerminalReason.DELETED,
        already=frozenset({S, R}),
        deleted=True,
        want_read_log=True,
    ),
    Case(
        "deleted while pending unscheduled",
        pod(node=None),
        (FAILED,),
        TerminalReason.DELETED,
        deleted=True,
        want_read_log=False,
    ),
    Case(
        "deleted after its container finished",
        pod(phase="Running", main=terminated(0)),
        (S, R, COMPLETED),
        TerminalReason.COMPLETED,
        0,
        deleted=True,
    ),
    Case(
        "deleted after its container failed",
        pod(phase="Running", main=terminated(5)),
        (FAILED,),
        TerminalReason.NON_ZERO_EXIT,
        5,
        already=frozenset({S, R}),
        deleted=True,
    ),
    Case(
        "node lost inside grace",
        pod(
            phase="Running",
            main=running(),
            conditions=[
                {"type": "Ready", "status": "Unknown", "lastTransitionTime": STARTED}
            ],
        ),
        (),
        already=frozenset({S, R}),
    ),
    Case(
        "node lost past grace",
        pod(
            phase="Running",
            main=running(),
            conditions=[
                {"type": "Ready", "status": "Unknown", "lastTransitionTime": STARTED}
            ],
        ),
        (FAILED,),
        TerminalReason.NODE_LOST,
        already=frozenset({S, R}),
        now=LATER,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_plan_emits_expected_events(case: Case) -> None:
    snapshot = snap(case.pod, deleted=case.deleted)

    result = plan(snapshot, ExecutionState(case.already), now=case.now, policy=POLICY)

    emitted: tuple[EventType, ...] = tuple(event.event_type for event in result.events)
    if result.terminal is not None:
        emitted += (result.terminal.event_type,)
    assert emitted == case.want
    if case.want_reason is not None:
        assert result.terminal is not None
        assert result.terminal.reason is case.want_reason
        assert result.terminal.exit_code == case.want_exit_code
    if case.want_read_log is not None:
        assert result.terminal is not None
        assert result.terminal.read_log is case.want_read_log


def test_plan_skips_pod_without_execution_id() -> None:
    result = plan(
        snap(pod(execution_id=None)), ExecutionState(), now=SOON, policy=POLICY
    )

    assert result.skipped is SkipReason.NO_EXECUTION_ID
    assert result.events == ()


def test_execution_id_falls_back_to_annotation() -> None:
    raw = pod(
        execution_id=None,
        annotations={"pod-monitor.io/execution-id": "from-annotation"},
    )

    assert snap(raw).execution_id == "from-annotation"


def test_plan_asks_for_recheck_inside_grace() -> None:
    result = plan(
        snap(pod(main=waiting("ErrImagePull"))),
        ExecutionState(frozenset({S})),
        now=SOON,
        policy=POLICY,
    )

    assert result.terminal is None
    assert result.recheck_after == pytest.approx(120 - 29)


def test_events_take_times_from_status() -> None:
    result = plan(
        snap(pod(phase="Succeeded", main=terminated(0))),
        ExecutionState(),
        now=SOON,
        policy=POLICY,
    )

    scheduled, started = result.events
    assert scheduled.occurred_at == datetime(2026, 12, 4, 10, 0, 1, tzinfo=UTC)
    assert started.occurred_at == datetime(2026, 12, 4, 10, 0, 5, tzinfo=UTC)
    assert result.terminal is not None
    assert result.terminal.occurred_at == datetime(2026, 12, 4, 10, 0, 9, tzinfo=UTC)


def test_event_ids_are_stable_per_pod_and_type() -> None:
    first = plan(
        snap(pod(phase="Running", main=running())),
        ExecutionState(),
        now=SOON,
        policy=POLICY,
    )
    again = plan(
        snap(pod(phase="Running", main=running())),
        ExecutionState(),
        now=LATER,
        policy=POLICY,
    )

    assert [e.event_id for e in first.events] == [e.event_id for e in again.events]
    assert first.events[0].event_id == event_id("uid-1", EventType.SCHEDULED)
    assert first.events[0].event_id != first.events[1].event_id


def _facts(
    *,
    exit_code: int = 0,
    signal: int | None = None,
    timed_out: bool = False,
    outcome: str = "exited",
) -> RunnerFacts:
    return RunnerFacts(
        exit_code=exit_code,
        signal=signal,
        timed_out=timed_out,
        outcome=outcome,
        stdout=CapturedOutput.from_bytes(b"out\n"),
        stderr=CapturedOutput.from_bytes(b"err\n"),
        resources=ResourceUsage(wall_seconds=1.5, peak_memory_bytes=1024),
    )


REPORT_CASES = [
    # (pod, facts, want type, want reason)
    (
        pod(phase="Failed", main=terminated(127)),
        _facts(exit_code=127, outcome="command_not_found"),
        FAILED,
        TerminalReason.COMMAND_NOT_FOUND,
    ),
    (
        pod(phase="Failed", main=terminated(125)),
        _facts(exit_code=125, outcome="runner_failed"),
        FAILED,
        TerminalReason.RUNNER_FAILED,
    ),
    (
        pod(phase="Succeeded", main=terminated(0)),
        _facts(),
        COMPLETED,
        TerminalReason.COMPLETED,
    ),
    (
        pod(phase="Failed", main=terminated(124)),
        _facts(exit_code=124, timed_out=True),
        TIMED_OUT,
        TerminalReason.TIMEOUT,
    ),
    (
        pod(phase="Failed", main=terminated(137)),
        _facts(exit_code=137, signal=9),
        FAILED,
        TerminalReason.KILLED_BY_SIGNAL,
    ),
    (
        pod(phase="Failed", main=terminated(137, "OOMKilled")),
        _facts(exit_code=137, signal=9),
        FAILED,
        TerminalReason.OOM_KILLED,
    ),
    (
        pod(phase="Failed", reason="DeadlineExceeded", main=terminated(137)),
        _facts(exit_code=137, timed_out=True),
        TIMED_OUT,
        TerminalReason.DEADLINE_EXCEEDED,
    ),
]


@pytest.mark.parametrize(("raw", "facts", "want_type", "want_reason"), REPORT_CASES)
def test_terminal_event_refined_by_report(
    raw: dict[str, Any],
    facts: RunnerFacts,
    want_type: EventType,
    want_reason: TerminalReason,
) -> None:
    snapshot = snap(raw)
    verdict, _ = classify(snapshot, now=SOON, policy=POLICY)
    assert verdict is not None

    event = terminal_event(snapshot, verdict, LogOutcome(LogStatus.READ, facts=facts))

    assert event.event_type is want_type
    assert event.reason is want_reason
    assert event.report_found is True
    assert stdout_of(event).to_bytes() == b"out\n"
    assert stderr_of(event).to_bytes() == b"err\n"
    assert event.resources == facts.resources


def test_terminal_event_without_report_carries_raw_log() -> None:
    snapshot = snap(pod(phase="Failed", main=terminated(137, "OOMKilled")))
    verdict, _ = classify(snapshot, now=SOON, policy=POLICY)
    assert verdict is not None
    log = LogOutcome(
        LogStatus.READ, raw=b"partial \xff output", report_problem="absent"
    )

    event = terminal_event(snapshot, verdict, log)

    assert event.event_type is FAILED
    assert event.reason is TerminalReason.OOM_KILLED
    assert event.report_found is False
    assert event.report_problem == "absent"
    assert stdout_of(event).encoding == "base64"
    assert stdout_of(event).to_bytes() == b"partial \xff output"
    assert event.finished_at == datetime(2026, 12, 4, 10, 0, 9, tzinfo=UTC)


def test_disappeared_event_names_reason() -> None:
    now = SOON + timedelta(minutes=5)
    ref = PodRef(namespace="runs", name="exec-1-pod", uid="uid-1")

    event = disappeared_event("exec-1", ref, now=now, last_seen_at=SOON)

    assert event.event_type is FAILED
    assert event.reason is TerminalReason.POD_DISAPPEARED
    assert event.occurred_at == SOON
    assert event.event_id == event_id("uid-1", EventType.FAILED)


def test_unread_log_leaves_output_unknown() -> None:
    snapshot = snap(pod(phase="Succeeded", main=terminated(0)), deleted=True)
    verdict, _ = classify(snapshot, now=SOON, policy=POLICY)
    assert verdict is not None

    event = terminal_event(snapshot, verdict, LogOutcome(LogStatus.NOT_FOUND))

    assert event.stdout is None
    assert event.stderr is None
    assert event.log_status is LogStatus.NOT_FOUND
