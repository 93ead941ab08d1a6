"""Execution events: the models published to Kafka and their JSON Schema.

Every event of one execution goes to one topic, keyed by the execution id,
so a consumer reads them in the order they happened. Each execution gets
at most one terminal event (completed, failed or timed out), and no event
of an earlier stage after it. An event emitted again after a crash carries
the same ``event_id``, derived from the pod uid and the event type, so a
consumer can drop the copy.

Run ``python -m tasks.events`` to print the JSON Schema of the events.
"""

from __future__ import annotations

import base64
import enum
import json
import sys
import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION: Literal["1"] = "1"

#: Namespace of the UUIDv5 event ids; fixed forever, or ids change.
_EVENT_ID_NAMESPACE = uuid.UUID("6c0f3f8e-52a4-4c55-9d2b-3f1f3e0c9a71")


class EventType(enum.StrEnum):
    SCHEDULED = "execution.scheduled"
    RUNNING = "execution.running"
    COMPLETED = "execution.completed"
    FAILED = "execution.failed"
    TIMED_OUT = "execution.timed_out"

    @property
    def stage(self) -> int:
        """Return the lifecycle stage: 1 scheduled, 2 running, 3 terminal."""
        return _STAGES[self]

    @property
    def is_terminal(self) -> bool:
        return self.stage == TERMINAL_STAGE


TERMINAL_STAGE = 3
_STAGES = {
    EventType.SCHEDULED: 1,
    EventType.RUNNING: 2,
    EventType.COMPLETED: TERMINAL_STAGE,
    EventType.FAILED: TERMINAL_STAGE,
    EventType.TIMED_OUT: TERMINAL_STAGE,
}


class TerminalReason(enum.StrEnum):
    """The cause of an execution's end, for machines; ``message`` is for people."""

    COMPLETED = "completed"
    NON_ZERO_EXIT = "non_zero_exit"
    KILLED_BY_SIGNAL = "killed_by_signal"
    OOM_KILLED = "oom_killed"
    #: The runner stopped the program at its own timeout.
    TIMEOUT = "timeout"
    #: The kubelet killed the pod at ``activeDeadlineSeconds``.
    DEADLINE_EXCEEDED = "deadline_exceeded"
    EVICTED = "evicted"
    PREEMPTED = "preempted"
    IMAGE_PULL_FAILED = "image_pull_failed"
    INVALID_IMAGE = "invalid_image"
    CONTAINER_CONFIG_ERROR = "container_config_error"
    CONTAINER_START_FAILED = "container_start_failed"
    INIT_CONTAINER_FAILED = "init_container_failed"
    #: The runner found no such command (exit code 127).
    COMMAND_NOT_FOUND = "command_not_found"
    #: The runner could not execute the command (exit code 126).
    COMMAND_NOT_EXECUTABLE = "command_not_executable"
    #: The runner itself failed or was misconfigured (exit code 125).
    RUNNER_FAILED = "runner_failed"
    CRASH_LOOP = "crash_loop"
    ADMISSION_REJECTED = "admission_rejected"
    NODE_LOST = "node_lost"
    NODE_SHUTDOWN = "node_shutdown"
    DELETED = "deleted_before_completion"
    #: The pod vanished without any record of how it ended; found by the
    #: reconciliation.
    POD_DISAPPEARED = "pod_disappeared"
    UNKNOWN = "unknown"


class LogStatus(enum.StrEnum):
    """The outcome of the worker's read of the container log."""

    READ = "read"
    #: The API server had no log: the pod was deleted, or the node is gone.
    NOT_FOUND = "not_found"
    #: The read failed for another reason, given in ``log_error``.
    FAILED = "failed"
    #: Not read, because the container never started.
    SKIPPED = "skipped"


class PodRef(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", use_attribute_docstrings=True
    )

    namespace: str
    name: str
    uid: str
    node: str | None = None


class CapturedOutput(BaseModel):
    """Bytes a program wrote to one stream.

    ``data`` is the text itself when the bytes are valid UTF-8, else their
    base64, so any output round-trips exactly.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", use_attribute_docstrings=True
    )

    encoding: Literal["utf-8", "base64"] = "utf-8"
    """The form of ``data``: the text itself, or the base64 of the bytes."""
    data: str = ""
    """The output, possibly cut; see ``truncated``."""
    size_bytes: int = Field(default=0, ge=0)
    """Bytes carried in ``data`` once decoded."""
    original_size_bytes: int = Field(default=0, ge=0)
    """Bytes the program wrote; more than ``size_bytes`` when output was cut."""
    truncated: bool = False
    """True when output was cut: by the runner's cap, the log read's cap, or
    the event's size limit."""

    @classmethod
    def from_bytes(
        cls,
        raw: bytes,
        *,
        original_size_bytes: int | None = None,
        truncated: bool = False,
    ) -> CapturedOutput:
        original = len(raw) if original_size_bytes is None else original_size_bytes
        try:
            text, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
        return cls(
            encoding=encoding,
            data=text,
            size_bytes=len(raw),
            original_size_bytes=max(original, len(raw)),
            truncated=truncated or original > len(raw),
        )

    def to_bytes(self) -> bytes:
        if self.encoding == "base64":
            return base64.b64decode(self.data)
        return self.data.encode("utf-8")


class ResourceUsage(BaseModel):
    """Resources the program used, as the runner measured them."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", use_attribute_docstrings=True
    )

    wall_seconds: float | None = None
    """Seconds from the program's start to its exit."""
    cpu_user_seconds: float | None = None
    """CPU seconds in user mode, of the program and its children."""
    cpu_system_seconds: float | None = None
    """CPU seconds in kernel mode, of the program and its children."""
    peak_memory_bytes: int | None = None
    """Largest resident set size of the program's processes (getrusage of
    the runner's children), else the cgroup's peak."""
    cgroup_memory_peak_bytes: int | None = None
    """Peak memory of the container's cgroup, page cache and the runner
    included, where the runner could read it."""


class _Event(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", use_attribute_docstrings=True
    )

    event_id: str
    """UUIDv5 of the pod uid and the event type: a copy has the same id."""
    schema_version: Literal["1"] = SCHEMA_VERSION
    """Version of this schema; a change that breaks consumers raises it."""
    execution_id: str
    """The execution the pod ran; also the Kafka record's key."""
    pod: PodRef
    """The pod that ran the execution."""
    occurred_at: datetime
    """When the state changed in Kubernetes, from the pod's status."""
    observed_at: datetime
    """When the monitor saw the change."""


class ExecutionScheduledEvent(_Event):
    event_type: Literal[EventType.SCHEDULED] = EventType.SCHEDULED


class ExecutionRunningEvent(_Event):
    event_type: Literal[EventType.RUNNING] = EventType.RUNNING


class _TerminalEvent(_Event):
    reason: TerminalReason
    """The cause of the end, for machines; ``message`` is for people."""
    exit_code: int | None = None
    """The program's exit code; None when it never ran or nothing reports it."""
    signal: int | None = None
    """The signal that killed the program, when the runner saw one."""
    message: str | None = None
    """Kubernetes' message about the end (kubelet, eviction, admission)."""
    started_at: datetime | None = None
    """When the execution's container started, from its status."""
    finished_at: datetime | None = None
    """When the execution's container ended, from its status."""
    stdout: CapturedOutput | None = None
    """The program's stdout, or the raw container log when no report was
    read; None when the log could not be read."""
    stderr: CapturedOutput | None = None
    """The program's stderr; None without a report, because the raw log
    mixes both streams."""
    resources: ResourceUsage | None = None
    """Resources used, from the report; None without a report."""
    report_found: bool = False
    """True when the runner's report was read. Otherwise ``stdout`` is the
    raw container log and ``report_problem`` gives the reason."""
    report_problem: str | None = None
    """Why the report was missing or incomplete: absent, truncated,
    malformed, unsupported_version or invalid_field, with details."""
    log_status: LogStatus = LogStatus.SKIPPED
    """The outcome of the worker's read of the container log."""
    log_error: str | None = None
    """The error of a failed log read."""


class ExecutionCompletedEvent(_TerminalEvent):
    event_type: Literal[EventType.COMPLETED] = EventType.COMPLETED


class ExecutionFailedEvent(_TerminalEvent):
    event_type: Literal[EventType.FAILED] = EventType.FAILED


class ExecutionTimedOutEvent(_TerminalEvent):
    event_type: Literal[EventType.TIMED_OUT] = EventType.TIMED_OUT


ExecutionEvent = Annotated[
    ExecutionScheduledEvent
    | ExecutionRunningEvent
    | ExecutionCompletedEvent
    | ExecutionFailedEvent
    | ExecutionTimedOutEvent,
    Field(discriminator="event_type"),
]
TerminalEvent = ExecutionCompletedEvent | ExecutionFailedEvent | ExecutionTimedOutEvent

EVENT_ADAPTER: TypeAdapter[ExecutionEvent] = TypeAdapter(ExecutionEvent)

TERMINAL_EVENT_CLASSES: dict[EventType, type[TerminalEvent]] = {
    EventType.COMPLETED: ExecutionCompletedEvent,
    EventType.FAILED: ExecutionFailedEvent,
    EventType.TIMED_OUT: ExecutionTimedOutEvent,
}


def event_id(pod_uid: str, event_type: EventType) -> str:
    """Return the id of an event: the same pod and type give the same id."""
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"{pod_uid}/{event_type.value}"))


def json_schema() -> dict[str, object]:
    schema = EVENT_ADAPTER.json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ExecutionEvent"
    return schema


if __name__ == "__main__":
    json.dump(json_schema(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
