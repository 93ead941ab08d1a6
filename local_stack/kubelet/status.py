"""Pod status as a kubelet writes it, and the patch between two versions.

:class:`PodStatusModel` stores the stand-in's view of one pod (container
states, phase, pod reason and message, extra conditions) and renders the
``status`` object from it. Conditions Initialized, ContainersReady and Ready
follow the rules of the kubelet's status generator (pkg/kubelet/status,
Kubernetes 1.36) without readiness probes or gates, so a running container is
ready as soon as it runs. :meth:`PodStatusModel.patch` returns only the fields
that changed since the last patch, as a strategic merge patch in which
conditions merge by type.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from local_stack.kubelet.clock import format_time, parse_time, utc_now
from local_stack.kubelet.containers import POD_IP

TERMINAL_PHASES = ("Succeeded", "Failed")

#: Pod reason and message that a kubelet sets when activeDeadlineSeconds passes.
DEADLINE_REASON = "DeadlineExceeded"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"


def container_id_for(uid: str, name: str, restart_count: int = 0) -> str:
    digest = hashlib.sha256(f"{uid}/{name}/{restart_count}".encode()).hexdigest()
    return f"local://{digest}"


@dataclass
class ContainerStatus:
    """State of one container, in the terms of the API's ContainerStatus."""

    name: str
    image: str
    init: bool
    state: str = "waiting"
    reason: str | None = "ContainerCreating"
    message: str | None = None
    exit_code: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    container_id: str | None = None
    ready: bool = False
    started: bool = False
    restart_count: int = 0

    @property
    def terminated(self) -> bool:
        return self.state == "terminated"

    @property
    def succeeded(self) -> bool:
        return self.state == "terminated" and self.exit_code == 0

    def set_waiting(self, reason: str, message: str | None = None) -> None:
        self.state, self.reason, self.message = "waiting", reason, message
        self.ready = self.started = False

    def set_running(self, uid: str, started_at: str | None = None) -> None:
        self.state, self.reason, self.message = "running", None, None
        self.started_at = started_at or utc_now()
        self.container_id = self.container_id or container_id_for(
            uid, self.name, self.restart_count
        )
        self.ready = self.started = True

    def set_terminated(
        self,
        uid: str,
        exit_code: int,
        reason: str | None = None,
        message: str | None = None,
        finished_at: str | None = None,
    ) -> None:
        """End the container. Without ``reason`` it is Completed for exit code
        0 and Error otherwise, as a kubelet reports it."""
        self.finished_at = finished_at or utc_now()
        self.started_at = self.started_at or self.finished_at
        self.container_id = self.container_id or container_id_for(
            uid, self.name, self.restart_count
        )
        self.state = "terminated"
        self.exit_code = exit_code
        self.reason = reason or ("Completed" if exit_code == 0 else "Error")
        self.message = message
        # A regular init container stays ready after it succeeded.
        self.ready = self.init and exit_code == 0
        self.started = False

    def to_json(self) -> dict[str, Any]:
        detail: dict[str, Any]
        if self.state == "waiting":
            detail = {"reason": self.reason} if self.reason else {}
        elif self.state == "running":
            detail = {"startedAt": self.started_at}
        else:
            detail = {
                "exitCode": self.exit_code,
                "reason": self.reason,
                "startedAt": self.started_at,
                "finishedAt": self.finished_at,
                "containerID": self.container_id,
            }
        if self.message and self.state != "running":
            detail["message"] = self.message
        data: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": {self.state: detail},
            "lastState": {},
        }
        if self.container_id and self.state != "waiting":
            data["containerID"] = self.container_id
            data["imageID"] = f"local://image/{self.image}"
        return data


class PodStatusModel:
    """Status that the stand-in reports for one pod, rendered as ``status``."""

    def __init__(self, pod: dict[str, Any]) -> None:
        spec = pod.get("spec", {})
        self.uid: str = pod["metadata"]["uid"]
        #: metadata.generation of the latest pod version seen, reported as
        #: status.observedGeneration.
        self.generation: int | None = pod["metadata"].get("generation")
        self.restart_policy = spec.get("restartPolicy", "Always")
        init_specs = spec.get("initContainers") or []
        waiting_reason = "PodInitializing" if init_specs else "ContainerCreating"
        self.init_containers = [
            ContainerStatus(
                c["name"], c.get("image", ""), init=True, reason="PodInitializing"
            )
            for c in init_specs
        ]
        self.containers = [
            ContainerStatus(
                c["name"], c.get("image", ""), init=False, reason=waiting_reason
            )
            for c in spec.get("containers") or []
        ]

        self.phase: str | None = None
        self.reason: str | None = None
        self.message: str | None = None
        previous_start = (pod.get("status") or {}).get("startTime")
        #: Start in seconds since the epoch, exact when this run started the pod,
        #: because startTime has whole seconds only.
        self.start_epoch = parse_time(previous_start) if previous_start else time.time()
        self.start_time = previous_start or format_time(self.start_epoch)

        #: Conditions set from outside the derivation (scripts, node loss),
        #: by type. They replace derived conditions of the same type.
        self.extra_conditions: dict[str, dict[str, Any]] = {}
        self._transitions: dict[str, tuple[str, str]] = {
            c["type"]: (c.get("status", ""), c.get("lastTransitionTime") or utc_now())
            for c in (pod.get("status") or {}).get("conditions") or []
        }
        self._sent: dict[str, Any] = {}
        self._sent_conditions: dict[str, dict[str, Any]] = {}

    def adopt(self, status: dict[str, Any]) -> None:
        """Take over container states, reason and message from a status that
        an earlier run of the stand-in wrote. A terminal phase is kept, any
        other phase is derived again."""
        for item in (status.get("initContainerStatuses") or []) + (
            status.get("containerStatuses") or []
        ):
            container = self.container(item.get("name", ""))
            if container is None:
                continue
            state = item.get("state") or {}
            container.restart_count = int(item.get("restartCount") or 0)
            container.container_id = item.get("containerID") or container.container_id
            if "running" in state:
                container.state, container.reason, container.message = (
                    "running",
                    None,
                    None,
                )
                container.started_at = state["running"].get("startedAt")
                container.ready = bool(item.get("ready"))
                container.started = True
            elif "terminated" in state:
                detail = state["terminated"]
                container.state = "terminated"
                container.exit_code = int(detail.get("exitCode") or 0)
                container.reason = detail.get("reason")
                container.message = detail.get("message")
                container.started_at = detail.get("startedAt")
                container.finished_at = detail.get("finishedAt")
                container.ready = bool(item.get("ready"))
                container.started = False
            elif "waiting" in state:
                detail = state["waiting"]
                container.set_waiting(
                    detail.get("reason", "ContainerCreating"), detail.get("message")
                )
        phase = status.get("phase")
        self.phase = phase if phase in TERMINAL_PHASES else None
        self.reason = status.get("reason")
        self.message = status.get("message")

    def container(self, name: str) -> ContainerStatus | None:
        for status in self.init_containers + self.containers:
            if status.name == name:
                return status
        return None

    def current_phase(self) -> str:
        return self.phase or self.derived_phase()

    def derived_phase(self) -> str:
        """Return the phase that a kubelet derives from the container states,
        with every restartPolicy treated as Never."""
        for init in self.init_containers:
            if init.terminated and not init.succeeded:
                return "Failed"
            if not init.succeeded:
                return "Pending"
        if any(c.state == "waiting" for c in self.containers):
            return "Pending"
        if any(c.state == "running" for c in self.containers):
            return "Running"
        if self.containers and all(c.succeeded for c in self.containers):
            return "Succeeded"
        return "Failed" if self.containers else "Pending"

    def render(self) -> dict[str, Any]:
        """Return the full ``status`` object."""
        status: dict[str, Any] = {
            "phase": self.current_phase(),
            "conditions": self._conditions(),
            "hostIP": POD_IP,
            "hostIPs": [{"ip": POD_IP}],
            "podIP": POD_IP,
            "podIPs": [{"ip": POD_IP}],
            "startTime": self.start_time,
            "observedGeneration": self.generation,
            "containerStatuses": [c.to_json() for c in self.containers],
            "reason": self.reason,
            "message": self.message,
        }
        if self.init_containers:
            status["initContainerStatuses"] = [
                c.to_json() for c in self.init_containers
            ]
        return status

    def patch(self) -> dict[str, Any] | None:
        """Return the strategic merge patch from the last returned patch to the
        current status, or None when nothing changed. The model assumes that
        the caller sends every patch it returns."""
        status = self.render()
        changes: dict[str, Any] = {}
        for key, value in status.items():
            if key == "conditions":
                continue
            if (
                key in ("reason", "message", "observedGeneration")
                and value is None
                and self._sent.get(key) is None
            ):
                continue
            if self._sent.get(key) != value:
                changes[key] = value
        changed_conditions = [
            condition
            for condition in status["conditions"]
            if self._sent_conditions.get(condition["type"]) != condition
        ]
        if changed_conditions:
            changes["conditions"] = changed_conditions
        if not changes:
            return None
        self._sent.update(status)
        for condition in changed_conditions:
            self._sent_conditions[condition["type"]] = condition
        return changes

    def _conditions(self) -> list[dict[str, Any]]:
        phase = self.current_phase()
        derived = [
            {"type": "PodReadyToStartContainers", "status": "True"},
            self._initialized(phase),
            self._ready("Ready", phase),
            self._ready("ContainersReady", phase),
            {"type": "PodScheduled", "status": "True"},
        ]
        by_type = {c["type"]: c for c in derived}
        by_type.update(self.extra_conditions)
        return [self._with_transition(condition) for condition in by_type.values()]

    def _with_transition(self, condition: dict[str, Any]) -> dict[str, Any]:
        kind, status = condition["type"], condition["status"]
        previous = self._transitions.get(kind)
        if previous is None or previous[0] != status:
            previous = (status, utc_now())
            self._transitions[kind] = previous
        # Reason and message are null rather than absent when empty, because
        # a strategic merge patch keeps fields that it does not mention.
        return {
            "type": kind,
            "status": status,
            "reason": condition.get("reason") or None,
            "message": condition.get("message") or None,
            "lastProbeTime": None,
            "lastTransitionTime": previous[1],
        }

    def _initialized(self, phase: str) -> dict[str, Any]:
        if phase == "Succeeded":
            return {"type": "Initialized", "status": "True", "reason": "PodCompleted"}
        if any(c.state != "waiting" for c in self.containers):
            return {"type": "Initialized", "status": "True"}
        incomplete = [c.name for c in self.init_containers if not c.succeeded]
        if incomplete:
            return {
                "type": "Initialized",
                "status": "False",
                "reason": "ContainersNotInitialized",
                "message": f"containers with incomplete status: {_go_list(incomplete)}",
            }
        return {"type": "Initialized", "status": "True"}

    def _ready(self, kind: str, phase: str) -> dict[str, Any]:
        if phase == "Failed":
            return {"type": kind, "status": "False", "reason": "PodFailed"}
        if phase == "Succeeded":
            return {"type": kind, "status": "False", "reason": "PodCompleted"}
        unready = [c.name for c in self.containers if not c.ready]
        if unready:
            return {
                "type": kind,
                "status": "False",
                "reason": "ContainersNotReady",
                "message": f"containers with unready status: {_go_list(unready)}",
            }
        return {"type": kind, "status": "True"}


def _go_list(names: list[str]) -> str:
    # The kubelet formats name lists with Go's %s: "[a b]".
    return "[" + " ".join(names) + "]"
