"""Scripted pods: a status sequence that the stand-in plays instead of processes.

A pod that carries the annotation ``local-stack.pod-monitor.io/script`` runs no
process. The stand-in writes the usual initial status (phase Pending, containers
waiting with reason ContainerCreating) and then applies the script's steps in
order, each after its own delay. The annotation value is JSON::

    {"steps": [
      {"delay": 0.2, "containers": {"*": {"state": "running"}}},
      {"logs": {"main": {"text": "hello\\n"}}},
      {"delay": 1, "containers": {"*": {"state": "terminated", "exitCode": 3}}},
      {"action": "delete"}
    ]}

Build it with :class:`Script` and :class:`Step` instead of writing JSON by hand::

    script = Script([Step.running(delay=0.2), Step.failed(exit_code=3, delay=1)])
    metadata = {"name": "p", "annotations": script.to_annotation()}

``docs/local-stack.md`` describes every field and how the stand-in applies it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

_T = TypeVar("_T")

ANNOTATION = "local-stack.pod-monitor.io/script"

#: Container key in a step that stands for every regular (non-init) container
#: that the same step does not name.
ALL_CONTAINERS = "*"

ContainerStateName = Literal["waiting", "running", "terminated"]
ActionName = Literal["status", "delete", "node-lost"]

_STATES: tuple[ContainerStateName, ...] = ("waiting", "running", "terminated")
_ACTIONS: tuple[ActionName, ...] = ("status", "delete", "node-lost")
_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
_CONDITION_STATUSES = ("True", "False", "Unknown")

#: Pod message that a kubelet writes when it evicts a pod under memory pressure
#: (pkg/kubelet/eviction, Kubernetes 1.36), shortened.
EVICTION_MESSAGE = "The node was low on resource: memory. "


class ScriptError(ValueError):
    """Invalid script annotation. The message names the step and field."""


@dataclass(frozen=True)
class ContainerState:
    """Target state of one container, as a step sets it.

    ``exit_code`` applies to ``terminated`` only and defaults to 0. ``ready``
    defaults to true for ``running`` and false otherwise. A terminated
    container without ``reason`` gets ``Completed`` for exit code 0 and
    ``Error`` otherwise, as a kubelet reports it.
    """

    state: ContainerStateName
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None
    ready: bool | None = None
    restart_count: int | None = None

    @classmethod
    def waiting(cls, reason: str, message: str | None = None) -> ContainerState:
        return cls("waiting", reason=reason, message=message)

    @classmethod
    def running(cls, *, ready: bool = True) -> ContainerState:
        return cls("running", ready=ready)

    @classmethod
    def terminated(
        cls, exit_code: int = 0, reason: str | None = None, message: str | None = None
    ) -> ContainerState:
        return cls("terminated", reason=reason, message=message, exit_code=exit_code)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"state": self.state}
        optional = {
            "reason": self.reason,
            "message": self.message,
            "exitCode": self.exit_code,
            "ready": self.ready,
            "restartCount": self.restart_count,
        }
        data.update(
            {key: value for key, value in optional.items() if value is not None}
        )
        return data

    @classmethod
    def from_json(cls, data: object, where: str) -> ContainerState:
        fields = _expect_object(data, where)
        _reject_unknown(
            fields,
            {"state", "reason", "message", "exitCode", "ready", "restartCount"},
            where,
        )
        state = fields.get("state")
        if state not in _STATES:
            raise ScriptError(f"{where}.state must be one of {_STATES}, got {state!r}")
        exit_code = _optional(fields, "exitCode", int, where)
        if exit_code is not None and state != "terminated":
            raise ScriptError(f"{where}.exitCode is only valid for state terminated")
        return cls(
            state=cast(ContainerStateName, state),
            reason=_optional(fields, "reason", str, where),
            message=_optional(fields, "message", str, where),
            exit_code=exit_code,
            ready=_optional(fields, "ready", bool, where),
            restart_count=_optional(fields, "restartCount", int, where),
        )


@dataclass(frozen=True)
class Condition:
    """Pod condition that a step sets, merged into the status by ``type``."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type, "status": self.status}
        if self.reason is not None:
            data["reason"] = self.reason
        if self.message is not None:
            data["message"] = self.message
        return data

    @classmethod
    def from_json(cls, data: object, where: str) -> Condition:
        fields = _expect_object(data, where)
        _reject_unknown(fields, {"type", "status", "reason", "message"}, where)
        condition_type = fields.get("type")
        if not isinstance(condition_type, str) or not condition_type:
            raise ScriptError(f"{where}.type must be a non-empty string")
        status = fields.get("status")
        if status not in _CONDITION_STATUSES:
            raise ScriptError(
                f"{where}.status must be one of {_CONDITION_STATUSES}, got {status!r}"
            )
        return cls(
            type=condition_type,
            status=cast(Literal["True", "False", "Unknown"], status),
            reason=_optional(fields, "reason", str, where),
            message=_optional(fields, "message", str, where),
        )


@dataclass(frozen=True)
class Log:
    """Content appended to a container's log when the step is applied.

    Exactly one of ``text`` (UTF-8) and ``base64`` (any bytes) is set. The
    content is written ``repeat`` times, which lets a benchmark ask for a large
    log with a small annotation.
    """

    text: str | None = None
    base64: str | None = None
    repeat: int = 1

    @classmethod
    def of(cls, content: str | bytes, repeat: int = 1) -> Log:
        if isinstance(content, bytes):
            return cls(base64=base64.b64encode(content).decode("ascii"), repeat=repeat)
        return cls(text=content, repeat=repeat)

    def content(self) -> bytes:
        """Return one copy of the content as bytes."""
        if self.text is not None:
            return self.text.encode()
        return base64.b64decode(self.base64 or "")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.text is not None:
            data["text"] = self.text
        if self.base64 is not None:
            data["base64"] = self.base64
        if self.repeat != 1:
            data["repeat"] = self.repeat
        return data

    @classmethod
    def from_json(cls, data: object, where: str) -> Log:
        fields = _expect_object(data, where)
        _reject_unknown(fields, {"text", "base64", "repeat"}, where)
        text = _optional(fields, "text", str, where)
        encoded = _optional(fields, "base64", str, where)
        if (text is None) == (encoded is None):
            raise ScriptError(f"{where} must have exactly one of text and base64")
        if encoded is not None:
            try:
                base64.b64decode(encoded, validate=True)
            except binascii.Error as error:
                raise ScriptError(f"{where}.base64 is invalid: {error}") from error
        repeat = _optional(fields, "repeat", int, where)
        if repeat is not None and repeat < 1:
            raise ScriptError(f"{where}.repeat must be at least 1, got {repeat}")
        return cls(text=text, base64=encoded, repeat=1 if repeat is None else repeat)


@dataclass(frozen=True)
class Step:
    """One step of a script, applied ``delay`` seconds after the previous step.

    With ``action="status"`` the step sets what it names and keeps the rest:
    container states (by name, or ``"*"`` for every regular container the step
    does not name), pod conditions, the pod's reason and message, and the
    phase. A phase set by a step stays until another step sets one. Until a
    step sets one, the stand-in derives the phase from the container states
    as a kubelet does for restartPolicy Never. ``logs`` are appended whatever
    the action. ``action="delete"`` deletes the pod with grace period 0.
    ``action="node-lost"`` makes the pod look as if its node stopped
    responding and makes the stand-in stop completing its deletion. What a
    node-lost step sets itself (conditions, reason, message, containers)
    overrides those defaults.
    """

    delay: float = 0.0
    action: ActionName = "status"
    phase: str | None = None
    reason: str | None = None
    message: str | None = None
    containers: Mapping[str, ContainerState] = field(default_factory=dict)
    conditions: Sequence[Condition] = ()
    logs: Mapping[str, Log] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "conditions", tuple(self.conditions))

    @classmethod
    def running(cls, delay: float = 0.0) -> Step:
        """Start every regular container: phase Running, containers ready."""
        return cls(delay=delay, containers={ALL_CONTAINERS: ContainerState.running()})

    @classmethod
    def succeeded(cls, delay: float = 0.0) -> Step:
        """End every regular container with exit code 0: phase Succeeded."""
        return cls(
            delay=delay, containers={ALL_CONTAINERS: ContainerState.terminated(0)}
        )

    @classmethod
    def failed(
        cls,
        exit_code: int = 1,
        reason: str | None = None,
        message: str | None = None,
        delay: float = 0.0,
    ) -> Step:
        """End every regular container with ``exit_code``: phase Failed."""
        state = ContainerState.terminated(exit_code, reason=reason, message=message)
        return cls(delay=delay, containers={ALL_CONTAINERS: state})

    @classmethod
    def oom_killed(cls, delay: float = 0.0) -> Step:
        """End every regular container as the OOM killer does: 137, OOMKilled."""
        return cls.failed(exit_code=137, reason="OOMKilled", delay=delay)

    @classmethod
    def waiting(
        cls, reason: str, message: str | None = None, delay: float = 0.0
    ) -> Step:
        """Keep every regular container waiting with ``reason``, for example
        ErrImagePull, ImagePullBackOff, CreateContainerConfigError or
        InvalidImageName. The phase stays Pending."""
        state = ContainerState.waiting(reason, message)
        return cls(delay=delay, containers={ALL_CONTAINERS: state})

    @classmethod
    def evicted(cls, message: str = EVICTION_MESSAGE, delay: float = 0.0) -> Step:
        """Evict the pod as a kubelet under memory pressure does.

        Phase Failed, reason Evicted, a DisruptionTarget condition with reason
        TerminationByKubelet, and every regular container terminated with exit
        code 137.
        """
        return cls(
            delay=delay,
            phase="Failed",
            reason="Evicted",
            message=message,
            containers={ALL_CONTAINERS: ContainerState.terminated(137, reason="Error")},
            conditions=(
                Condition(
                    "DisruptionTarget",
                    "True",
                    reason="TerminationByKubelet",
                    message=message,
                ),
            ),
        )

    @classmethod
    def delete(cls, delay: float = 0.0) -> Step:
        return cls(delay=delay, action="delete")

    @classmethod
    def node_lost(cls, delay: float = 0.0, ready: str = "False") -> Step:
        """Lose the pod's node. ``ready`` is the status of the pod's Ready
        condition: "False" as the node lifecycle controller writes it, or
        "Unknown"."""
        if ready not in _CONDITION_STATUSES:
            raise ScriptError(
                f"ready must be one of {_CONDITION_STATUSES}, got {ready!r}"
            )
        conditions: tuple[Condition, ...] = ()
        if ready != "False":
            status = cast(Literal["True", "False", "Unknown"], ready)
            conditions = (Condition("Ready", status),)
        return cls(delay=delay, action="node-lost", conditions=conditions)

    @classmethod
    def log(cls, container: str, content: str | bytes, delay: float = 0.0) -> Step:
        """Append ``content`` to ``container``'s log and change nothing else."""
        return cls(delay=delay, logs={container: Log.of(content)})

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.delay:
            data["delay"] = self.delay
        if self.action != "status":
            data["action"] = self.action
        for key, value in (
            ("phase", self.phase),
            ("reason", self.reason),
            ("message", self.message),
        ):
            if value is not None:
                data[key] = value
        if self.containers:
            data["containers"] = {
                name: state.to_json() for name, state in self.containers.items()
            }
        if self.conditions:
            data["conditions"] = [condition.to_json() for condition in self.conditions]
        if self.logs:
            data["logs"] = {name: log.to_json() for name, log in self.logs.items()}
        return data

    @classmethod
    def from_json(cls, data: object, where: str) -> Step:
        fields = _expect_object(data, where)
        _reject_unknown(
            fields,
            {
                "delay",
                "action",
                "phase",
                "reason",
                "message",
                "containers",
                "conditions",
                "logs",
            },
            where,
        )

        delay = fields.get("delay", 0)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            raise ScriptError(f"{where}.delay must be a number >= 0, got {delay!r}")
        action = fields.get("action", "status")
        if action not in _ACTIONS:
            raise ScriptError(
                f"{where}.action must be one of {_ACTIONS}, got {action!r}"
            )
        phase = _optional(fields, "phase", str, where)
        if phase is not None and phase not in _PHASES:
            raise ScriptError(f"{where}.phase must be one of {_PHASES}, got {phase!r}")

        containers = {
            name: ContainerState.from_json(state, f"{where}.containers[{name!r}]")
            for name, state in _expect_object(
                fields.get("containers", {}), f"{where}.containers"
            ).items()
        }
        raw_conditions = fields.get("conditions", [])
        if not isinstance(raw_conditions, list):
            raise ScriptError(f"{where}.conditions must be a list")
        conditions = tuple(
            Condition.from_json(item, f"{where}.conditions[{index}]")
            for index, item in enumerate(raw_conditions)
        )
        logs = {
            name: Log.from_json(log, f"{where}.logs[{name!r}]")
            for name, log in _expect_object(
                fields.get("logs", {}), f"{where}.logs"
            ).items()
        }

        return cls(
            delay=float(delay),
            action=cast(ActionName, action),
            phase=phase,
            reason=_optional(fields, "reason", str, where),
            message=_optional(fields, "message", str, where),
            containers=containers,
            conditions=conditions,
            logs=logs,
        )


@dataclass(frozen=True)
class Script:
    """Steps that the stand-in plays for one pod, in order."""

    steps: Sequence[Step]

    def __post_init__(self) -> None:
        # A tuple makes scripts built from lists equal to parsed ones.
        object.__setattr__(self, "steps", tuple(self.steps))

    def to_json(self) -> str:
        return json.dumps(
            {"steps": [step.to_json() for step in self.steps]}, separators=(",", ":")
        )

    def to_annotation(self) -> dict[str, str]:
        """Return the annotation, ready to merge into ``metadata.annotations``."""
        return {ANNOTATION: self.to_json()}

    @classmethod
    def from_json(cls, text: str) -> Script:
        """Parse and validate an annotation value. Raise ScriptError if invalid."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ScriptError(f"script is not valid JSON: {error}") from error
        fields = _expect_object(data, "script")
        _reject_unknown(fields, {"steps"}, "script")
        steps = fields.get("steps")
        if not isinstance(steps, list):
            raise ScriptError("script.steps must be a list")
        return cls(
            tuple(
                Step.from_json(step, f"steps[{index}]")
                for index, step in enumerate(steps)
            )
        )


def _expect_object(data: object, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ScriptError(f"{where} must be a JSON object, got {type(data).__name__}")
    return cast(dict[str, Any], data)


def _reject_unknown(fields: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ScriptError(
            f"{where} has unknown fields {unknown}; known: {sorted(known)}"
        )


def _optional(
    fields: Mapping[str, Any], key: str, kind: type[_T], where: str
) -> _T | None:
    value = fields.get(key)
    if value is None:
        return None
    # bool is a subclass of int, so an int field must reject true and false.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ScriptError(
            f"{where}.{key} must be of type {kind.__name__}, got {value!r}"
        )
    return value
