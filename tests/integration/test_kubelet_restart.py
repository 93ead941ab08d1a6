"""A restarted kubelet stand-in leaves finished pods alone and fails lost ones.

The test runs a second stand-in of its own on a free port with
``--no-scheduling`` and its own node name, so it can kill and restart it
without touching the stack's stand-in. Pods name that node directly.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as kube_client

from local_stack.config import StackConfig
from local_stack.kubelet.script import Script, Step
from tests.integration.test_kubelet_pods import create_pod, terminal, wait_for_pod

CHECKOUT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class StandIn:
    """A stand-in process that the test starts, kills and starts again."""

    def __init__(self, stack: StackConfig, state_dir: Path) -> None:
        self.node = f"restart-{uuid.uuid4().hex[:8]}"
        self.port = _free_port()
        self.state_dir = state_dir
        self.kubeconfig = str(stack.kubeconfig_path)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, core: kube_client.CoreV1Api) -> None:
        log = (self.state_dir / "kubelet.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "local_stack.kubelet",
                "--kubeconfig",
                self.kubeconfig,
                "--node-name",
                self.node,
                "--port",
                str(self.port),
                "--state-dir",
                str(self.state_dir),
                "--no-scheduling",
            ],
            cwd=CHECKOUT,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                node: Any = core.read_node(self.node)
                ports = node.status.daemon_endpoints.kubelet_endpoint.port
                if ports == self.port:
                    return
            except kube_client.ApiException as error:
                if error.status != 404:
                    raise
            time.sleep(0.2)
        raise AssertionError(f"stand-in for node {self.node} did not register")

    def kill(self) -> None:
        """Kill the stand-in with SIGKILL, so it cannot clean up."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None


@pytest.fixture
def core(kube_api_client: kube_client.ApiClient) -> kube_client.CoreV1Api:
    return kube_client.CoreV1Api(kube_api_client)


@pytest.fixture
def stand_in(
    stack: StackConfig, core: kube_client.CoreV1Api, tmp_path: Path
) -> Iterator[StandIn]:
    instance = StandIn(stack, tmp_path)
    instance.start(core)
    yield instance
    instance.stop()
    try:
        core.delete_node(instance.node)
        kube_client.CoordinationV1Api(core.api_client).delete_namespaced_lease(
            instance.node, "kube-node-lease"
        )
    except kube_client.ApiException as error:
        if error.status != 404:
            raise


def _pod(
    name: str, node: str, code: str, annotations: dict[str, str] | None = None
) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "python:3.11",
                    "command": [sys.executable, "-c", code],
                }
            ],
        },
    }


def _process_alive(marker: str) -> bool:
    result = subprocess.run(["pgrep", "-f", marker], capture_output=True, check=False)
    return result.returncode == 0


def test_restart_keeps_done_and_fails_lost(
    core: kube_client.CoreV1Api, kube_namespace: str, stand_in: StandIn
) -> None:
    marker = f"sleep-marker-{uuid.uuid4().hex}"
    create_pod(core, kube_namespace, _pod("done", stand_in.node, "print('finished')"))
    create_pod(
        core,
        kube_namespace,
        _pod("long", stand_in.node, f"import time\n# {marker}\ntime.sleep(300)"),
    )
    script = Script([Step.running(), Step.succeeded(delay=3)])
    create_pod(
        core,
        kube_namespace,
        _pod("scripted", stand_in.node, "", annotations=script.to_annotation()),
    )
    done = wait_for_pod(core, kube_namespace, "done", terminal)
    wait_for_pod(
        core, kube_namespace, "long", lambda pod: pod.status.phase == "Running"
    )
    wait_for_pod(
        core, kube_namespace, "scripted", lambda pod: pod.status.phase == "Running"
    )
    assert _process_alive(marker)

    stand_in.kill()
    # Container processes live in their own sessions, so they outlive the
    # stand-in killed with SIGKILL until the restarted one finds them.
    assert _process_alive(marker)
    stand_in.start(core)

    long = wait_for_pod(core, kube_namespace, "long", terminal)
    assert long.status.phase == "Failed"
    assert "restarted" in long.status.message
    state = long.status.container_statuses[0].state.terminated
    assert state.reason == "ContainerStatusUnknown"
    assert state.exit_code == 137
    assert not _process_alive(marker)

    scripted = wait_for_pod(core, kube_namespace, "scripted", terminal)
    assert scripted.status.phase == "Succeeded"

    again: Any = core.read_namespaced_pod("done", kube_namespace)
    assert again.status.phase == "Succeeded"
    assert again.metadata.resource_version == done.metadata.resource_version
    log = core.read_namespaced_pod_log("done", kube_namespace)
    assert log == "finished\n"
    assert (stand_in.state_dir / "pods").is_dir()
