"""Builders of pods as the API server serializes them, for unit tests."""

from __future__ import annotations

import copy
from typing import Any

CREATED = "2026-12-04T10:00:00Z"
SCHEDULED = "2026-12-04T10:00:01Z"
STARTED = "2026-12-04T10:00:05Z"
FINISHED = "2026-12-04T10:00:09Z"
DELETING = "2026-12-04T10:00:07Z"

EXECUTION_LABEL = "pod-monitor.io/execution-id"


def pod(
    *,
    phase: str = "Pending",
    node: str | None = "node-a",
    execution_id: str | None = "exec-1",
    reason: str | None = None,
    message: str | None = None,
    main: dict[str, Any] | None = None,
    init: list[dict[str, Any]] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    deletion: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Return a pod with one container named ``main``, in the given state."""
    labels = {"app.kubernetes.io/managed-by": "pod-monitor-executions"}
    if execution_id is not None:
        labels[EXECUTION_LABEL] = execution_id
    metadata: dict[str, Any] = {
        "name": "exec-1-pod",
        "namespace": "runs",
        "uid": "uid-1",
        "resourceVersion": "100",
        "creationTimestamp": CREATED,
        "labels": labels,
        "annotations": annotations or {},
    }
    if deletion is not None:
        metadata["deletionTimestamp"] = deletion
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": "python:3.12"}],
        "restartPolicy": "Never",
    }
    if node is not None:
        spec["nodeName"] = node
    status: dict[str, Any] = {"phase": phase}
    if node is not None:
        status["startTime"] = SCHEDULED
        status["conditions"] = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": SCHEDULED}
        ]
    if conditions:
        status.setdefault("conditions", []).extend(copy.deepcopy(conditions))
    if reason is not None:
        status["reason"] = reason
    if message is not None:
        status["message"] = message
    if main is not None:
        status["containerStatuses"] = [{"name": "main", **main}]
    if init is not None:
        spec["initContainers"] = [
            {"name": entry["name"], "image": "busybox"} for entry in init
        ]
        status["initContainerStatuses"] = copy.deepcopy(init)
    return {"metadata": metadata, "spec": spec, "status": status}


def running() -> dict[str, Any]:
    return {"state": {"running": {"startedAt": STARTED}}, "restartCount": 0}


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"state": {"waiting": {"reason": reason, "message": message}}}


def terminated(exit_code: int, reason: str = "", message: str = "") -> dict[str, Any]:
    terminated_state: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": reason or ("Completed" if exit_code == 0 else "Error"),
        "startedAt": STARTED,
        "finishedAt": FINISHED,
    }
    if message:
        terminated_state["message"] = message
    return {"state": {"terminated": terminated_state}, "restartCount": 0}
