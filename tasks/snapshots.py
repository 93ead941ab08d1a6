"""The compact pod snapshot that the watcher sends and the workers map.

A snapshot keeps only what the mapping to execution events reads: identity,
phase, the conditions and container states that classify an outcome, and the
times the API server recorded. It is built from the pod as the API server
serializes it (camelCase JSON), so the watcher never builds the Kubernetes
client's model objects, which costs far more CPU than parsing the JSON.

The snapshot is the contract between the watcher and the workers: the
watcher depends on it, and nothing here imports the watcher.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.settings import PodSelection

#: Pod conditions that take part in the classification of an outcome.
_KEPT_CONDITIONS = frozenset({"PodScheduled", "Ready", "DisruptionTarget"})

#: Characters of a Kubernetes message kept in a snapshot; messages come from
#: the kubelet and admission plugins and are sometimes whole stack traces.
MAX_MESSAGE_CHARS = 2048


class Source(enum.StrEnum):
    """The producer of a snapshot."""

    WATCH = "watch"
    RECONCILE = "reconcile"


class ContainerKind(enum.StrEnum):
    INIT = "init"
    MAIN = "main"


class ContainerState(enum.StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    TERMINATED = "terminated"
    UNKNOWN = "unknown"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ContainerSnapshot(_Frozen):
    """The state of one container, from ``status.containerStatuses``."""

    name: str
    kind: ContainerKind
    state: ContainerState
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    restart_count: int = 0


class ConditionSnapshot(_Frozen):
    type: str
    status: str
    reason: str | None = None
    message: str | None = None
    last_transition_time: datetime | None = None


class PodSnapshot(_Frozen):
    """The state of one pod at one resourceVersion, as the workers need it."""

    uid: str
    namespace: str
    name: str
    resource_version: str
    #: None when the pod carries neither the label nor the annotation.
    execution_id: str | None
    node_name: str | None = None
    phase: str | None = None
    reason: str | None = None
    message: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    deletion_requested_at: datetime | None = None
    active_deadline_seconds: int | None = None
    restart_policy: str | None = None
    #: The container whose log holds the runner's report.
    main_container: str | None = None
    conditions: tuple[ConditionSnapshot, ...] = ()
    containers: tuple[ContainerSnapshot, ...] = ()
    #: True when the watch reported the pod DELETED. A DELETED event also
    #: comes when a pod stops matching the label selector, so the worker
    #: confirms with the API server before it trusts this.
    deleted: bool = False
    observed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    source: Source = Source.WATCH

    @property
    def ref(self) -> str:
        """Return ``namespace/name``, the form kubectl prints."""
        return f"{self.namespace}/{self.name}"

    def condition(self, type_: str) -> ConditionSnapshot | None:
        for condition in self.conditions:
            if condition.type == type_:
                return condition
        return None

    def container(self, name: str | None) -> ContainerSnapshot | None:
        for container in self.containers:
            if container.kind is ContainerKind.MAIN and container.name == name:
                return container
        return None

    @property
    def init_containers(self) -> tuple[ContainerSnapshot, ...]:
        return tuple(c for c in self.containers if c.kind is ContainerKind.INIT)

    @property
    def main_containers(self) -> tuple[ContainerSnapshot, ...]:
        return tuple(c for c in self.containers if c.kind is ContainerKind.MAIN)


def build_snapshot(
    pod: Mapping[str, Any],
    selection: PodSelection,
    *,
    deleted: bool = False,
    source: Source = Source.WATCH,
    observed_at: datetime | None = None,
) -> PodSnapshot:
    """Build a snapshot from a pod as the API server serializes it.

    Raises ``KeyError`` or ``pydantic.ValidationError`` when the object
    lacks ``metadata.uid``, ``namespace``, ``name`` or ``resourceVersion``,
    which every pod read from the API server has.
    """
    metadata = pod["metadata"]
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    annotations = metadata.get("annotations") or {}
    return PodSnapshot(
        uid=metadata["uid"],
        namespace=metadata["namespace"],
        name=metadata["name"],
        resource_version=metadata["resourceVersion"],
        execution_id=execution_id_of(metadata, selection),
        node_name=spec.get("nodeName"),
        phase=status.get("phase"),
        reason=status.get("reason"),
        message=_short(status.get("message")),
        created_at=_time(metadata.get("creationTimestamp")),
        started_at=_time(status.get("startTime")),
        deletion_requested_at=_time(metadata.get("deletionTimestamp")),
        active_deadline_seconds=spec.get("activeDeadlineSeconds"),
        restart_policy=spec.get("restartPolicy"),
        main_container=_main_container(spec, annotations, selection),
        conditions=tuple(
            _condition(raw)
            for raw in status.get("conditions") or ()
            if raw.get("type") in _KEPT_CONDITIONS
        ),
        containers=(
            *_containers(
                spec.get("initContainers"),
                status.get("initContainerStatuses"),
                ContainerKind.INIT,
            ),
            *_containers(
                spec.get("containers"),
                status.get("containerStatuses"),
                ContainerKind.MAIN,
            ),
        ),
        deleted=deleted,
        source=source,
        observed_at=observed_at or datetime.now(UTC),
    )


def execution_id_of(metadata: Mapping[str, Any], selection: PodSelection) -> str | None:
    """Return the execution id from the label, else from the annotation."""
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    value = labels.get(selection.execution_id_label) or annotations.get(
        selection.execution_id_annotation
    )
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()


def change_key(snapshot: PodSnapshot) -> tuple[object, ...]:
    """Return the part of a snapshot that execution events depend on.

    Two snapshots with the same key lead to the same events, so the watcher
    enqueues a task only when the key of a pod changes. Container restarts,
    readiness flaps and resourceVersion bumps alone change nothing here.
    """
    return (
        snapshot.execution_id,
        snapshot.node_name,
        snapshot.phase,
        snapshot.reason,
        snapshot.deletion_requested_at is not None,
        snapshot.deleted,
        tuple(
            (c.type, c.status, c.reason)
            for c in snapshot.conditions
            if c.type in {"PodScheduled", "DisruptionTarget"}
        ),
        _ready_status(snapshot),
        tuple(
            (c.name, c.kind, c.state, c.reason, c.exit_code)
            for c in snapshot.containers
        ),
    )


def _ready_status(snapshot: PodSnapshot) -> str | None:
    # Only Unknown matters: it is how a lost node shows on its pods.
    ready = snapshot.condition("Ready")
    return "Unknown" if ready is not None and ready.status == "Unknown" else None


def _main_container(
    spec: Mapping[str, Any],
    annotations: Mapping[str, Any],
    selection: PodSelection,
) -> str | None:
    named = annotations.get(selection.container_annotation)
    if isinstance(named, str) and named:
        return named
    containers = spec.get("containers") or ()
    return containers[0].get("name") if containers else None


def _containers(
    specs: Sequence[Mapping[str, Any]] | None,
    statuses: Sequence[Mapping[str, Any]] | None,
    kind: ContainerKind,
) -> list[ContainerSnapshot]:
    # Every container of the spec gets an entry, in spec order, so that a
    # container with no status yet (nothing started) is still visible.
    by_name = {status.get("name"): status for status in statuses or ()}
    return [
        _container(spec["name"], by_name.get(spec["name"]), kind)
        for spec in specs or ()
    ]


def _container(
    name: str, status: Mapping[str, Any] | None, kind: ContainerKind
) -> ContainerSnapshot:
    if status is None:
        return ContainerSnapshot(name=name, kind=kind, state=ContainerState.UNKNOWN)
    state = status.get("state") or {}
    restart_count = int(status.get("restartCount") or 0)
    if "terminated" in state:
        terminated = state["terminated"] or {}
        return ContainerSnapshot(
            name=name,
            kind=kind,
            state=ContainerState.TERMINATED,
            reason=terminated.get("reason"),
            message=_short(terminated.get("message")),
            exit_code=terminated.get("exitCode"),
            signal=terminated.get("signal"),
            started_at=_time(terminated.get("startedAt")),
            finished_at=_time(terminated.get("finishedAt")),
            restart_count=restart_count,
        )
    if "running" in state:
        running = state["running"] or {}
        return ContainerSnapshot(
            name=name,
            kind=kind,
            state=ContainerState.RUNNING,
            started_at=_time(running.get("startedAt")),
            restart_count=restart_count,
        )
    if "waiting" in state:
        waiting = state["waiting"] or {}
        return ContainerSnapshot(
            name=name,
            kind=kind,
            state=ContainerState.WAITING,
            reason=waiting.get("reason"),
            message=_short(waiting.get("message")),
            restart_count=restart_count,
        )
    return ContainerSnapshot(
        name=name, kind=kind, state=ContainerState.UNKNOWN, restart_count=restart_count
    )


def _condition(raw: Mapping[str, Any]) -> ConditionSnapshot:
    return ConditionSnapshot(
        type=raw["type"],
        status=raw.get("status", "Unknown"),
        reason=raw.get("reason"),
        message=_short(raw.get("message")),
        last_transition_time=_time(raw.get("lastTransitionTime")),
    )


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    # The API server writes RFC 3339 in UTC with a trailing "Z".
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _short(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    if len(value) <= MAX_MESSAGE_CHARS:
        return value
    return value[:MAX_MESSAGE_CHARS] + "... [cut]"
