"""Execution pods, as the platform would create them, for tests and the demo.

An execution pod runs the in-pod runner as its entrypoint, which runs the
user's command and prints the report. On the local stack the kubelet
stand-in runs commands on this machine, so the runner is this checkout's
file; in a cluster it is a path inside the image.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

RUNNER_PATH = Path(__file__).resolve().parent.parent / "runner" / "execution_runner.py"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "pod-monitor-executions"
EXECUTION_ID_LABEL = "pod-monitor.io/execution-id"
#: Seconds between the runner's own timeout and the pod's deadline, so the
#: runner stops the program and prints its report before the kubelet kills.
DEADLINE_MARGIN_SECONDS = 5


def execution_pod(
    execution_id: str,
    code: str,
    *,
    timeout_seconds: int | None = None,
    deadline_seconds: int | None = None,
    memory_limit: str | None = None,
    max_output_bytes: int | None = None,
    python: str = sys.executable,
    runner: Path | str = RUNNER_PATH,
    extra_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Return the manifest of a pod that runs Python ``code`` under the runner.

    ``timeout_seconds`` is the runner's timeout; the pod's
    ``activeDeadlineSeconds`` defaults to it plus a margin, so the runner's
    timeout comes first. ``deadline_seconds`` alone sets a deadline that the
    runner does not know, to test what the kubelet does.
    """
    runner_args = [python, str(runner)]
    if timeout_seconds is not None:
        runner_args += ["--timeout", str(timeout_seconds)]
        if deadline_seconds is None:
            deadline_seconds = timeout_seconds + DEADLINE_MARGIN_SECONDS
    if max_output_bytes is not None:
        runner_args += ["--max-output-bytes", str(max_output_bytes)]
    container: dict[str, Any] = {
        "name": "main",
        "image": "python:3.12-slim",
        "command": [*runner_args, "--", python, "-c", code],
    }
    if memory_limit is not None:
        container["resources"] = {"limits": {"memory": memory_limit}}
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = deadline_seconds
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(execution_id),
            "labels": {
                MANAGED_BY_LABEL: MANAGED_BY_VALUE,
                EXECUTION_ID_LABEL: execution_id,
                **(extra_labels or {}),
            },
        },
        "spec": spec,
    }


def pod_name(execution_id: str) -> str:
    return f"exec-{execution_id}"[:63].rstrip("-.")
