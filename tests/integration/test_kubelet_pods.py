"""The kubelet stand-in running real processes, checked through the API server.

Every pod here is created without spec.nodeName, so each test also checks
that the stand-in of the stack binds pods as a scheduler would. To run these
tests against a second stand-in started by hand with ``--no-scheduling``, set
POD_MONITOR_TEST_KUBELET_NODE and POD_MONITOR_TEST_KUBELET_PORT to its node
name and port: pods then get that spec.nodeName.
"""

from __future__ import annotations

import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as kube_client

from local_stack.config import NODE_NAME, StackConfig

#: Seconds a test waits for a pod to reach the expected state.
POD_TIMEOUT = 60.0

#: Node of a stand-in started by hand, or None for the stack's stand-in.
TEST_NODE = os.environ.get("POD_MONITOR_TEST_KUBELET_NODE") or None

RFC3339_NANO = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z ")


@pytest.fixture
def core(kube_api_client: kube_client.ApiClient) -> kube_client.CoreV1Api:
    return kube_client.CoreV1Api(kube_api_client)


def python_pod(
    name: str,
    code: str,
    *,
    init_code: str | None = None,
    memory_limit: str | None = None,
    deadline: int | None = None,
) -> dict[str, Any]:
    """Return a pod whose container runs ``code`` with this interpreter."""
    container: dict[str, Any] = {
        "name": "main",
        "image": "python:3.11",
        "command": [sys.executable, "-u", "-c", code],
        "env": [
            {"name": "GREETING", "value": "hello"},
            {
                "name": "POD_NAME",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
            },
        ],
    }
    if memory_limit is not None:
        container["resources"] = {"limits": {"memory": memory_limit}}
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if init_code is not None:
        spec["initContainers"] = [
            {
                "name": "setup",
                "image": "python:3.11",
                "command": [sys.executable, "-c", init_code],
            }
        ]
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    return pod_manifest(name, spec)


def pod_manifest(name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    """Return a pod manifest, bound to TEST_NODE when that is set."""
    if TEST_NODE is not None:
        spec = {**spec, "nodeName": TEST_NODE}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **metadata},
        "spec": spec,
    }


def expected_node() -> str:
    return TEST_NODE or NODE_NAME


def kubelet_port(stack: StackConfig) -> int:
    return int(os.environ.get("POD_MONITOR_TEST_KUBELET_PORT") or stack.kubelet_port)


def create_pod(
    core: kube_client.CoreV1Api, namespace: str, manifest: dict[str, Any]
) -> None:
    # The client accepts a plain dict in place of a V1Pod.
    body: Any = manifest
    core.create_namespaced_pod(namespace, body)


def wait_for_pod(
    core: kube_client.CoreV1Api,
    namespace: str,
    name: str,
    done: Callable[[Any], bool],
    timeout: float = POD_TIMEOUT,
) -> Any:
    """Poll the pod until ``done(pod)`` holds, and return that pod."""
    deadline = time.monotonic() + timeout
    pod = None
    while time.monotonic() < deadline:
        pod = core.read_namespaced_pod(name, namespace)
        if done(pod):
            return pod
        time.sleep(0.1)
    status = None if pod is None else pod.status
    raise AssertionError(f"pod {namespace}/{name} not in the expected state: {status}")


def terminal(pod: Any) -> bool:
    return bool(pod.status.phase in ("Succeeded", "Failed"))


def running(pod: Any) -> bool:
    return bool(pod.status.phase == "Running")


def wait_gone(core: kube_client.CoreV1Api, namespace: str, name: str) -> None:
    deadline = time.monotonic() + POD_TIMEOUT
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_pod(name, namespace)
        except kube_client.ApiException as error:
            if error.status == 404:
                return
            raise
        time.sleep(0.1)
    raise AssertionError(f"pod {namespace}/{name} still exists")


def test_log_has_stdout_and_stderr_in_order(
    core: kube_client.CoreV1Api, kube_namespace: str
) -> None:
    code = (
        "import os, sys, time\n"
        "print('out one', os.environ['GREETING'], os.environ['POD_NAME'])\n"
        "time.sleep(0.05)\n"
        "print('err two', file=sys.stderr, flush=True)\n"
        "time.sleep(0.05)\n"
        "print('out three')\n"
    )
    create_pod(core, kube_namespace, python_pod("logs", code))
    pod = wait_for_pod(core, kube_namespace, "logs", terminal)
    assert pod.spec.node_name == expected_node()

    log = core.read_namespaced_pod_log("logs", kube_namespace, container="main")
    assert log == "out one hello logs\nerr two\nout three\n"
    tail = core.read_namespaced_pod_log("logs", kube_namespace, tail_lines=1)
    assert tail == "out three\n"
    limited = core.read_namespaced_pod_log("logs", kube_namespace, limit_bytes=7)
    assert limited == "out one"
    stamped = core.read_namespaced_pod_log("logs", kube_namespace, timestamps=True)
    lines = stamped.encode().splitlines()
    assert len(lines) == 3
    for line in lines:
        assert RFC3339_NANO.match(line), line
    assert lines[1].endswith(b" err two")


def test_follow_streams_until_container_ends(
    core: kube_client.CoreV1Api, kube_namespace: str
) -> None:
    code = (
        "import time\nfor i in range(5):\n    print('tick', i)\n    time.sleep(0.3)\n"
    )
    create_pod(core, kube_namespace, python_pod("follow", code))
    wait_for_pod(core, kube_namespace, "follow", running)

    response: Any = core.read_namespaced_pod_log(
        "follow", kube_namespace, follow=True, _preload_content=False
    )
    body = b"".join(response.stream(1024))
    assert body == b"".join(b"tick %d\n" % i for i in range(5))
    # The follow ends when the process ends, which may be just before the
    # status patch with the terminal phase reaches the API server.
    pod = wait_for_pod(core, kube_namespace, "follow", terminal, timeout=5)
    assert pod.status.phase == "Succeeded"


def test_exit_zero_succeeds(core: kube_client.CoreV1Api, kube_namespace: str) -> None:
    create_pod(core, kube_namespace, python_pod("ok", "print('done')"))
    pod = wait_for_pod(core, kube_namespace, "ok", terminal)

    assert pod.status.phase == "Succeeded"
    assert pod.status.pod_ip == "127.0.0.1"
    assert pod.status.start_time is not None
    state = pod.status.container_statuses[0].state.terminated
    assert state.exit_code == 0
    assert state.reason == "Completed"
    assert state.started_at is not None
    assert state.finished_at is not None
    assert pod.status.container_statuses[0].container_id.startswith("local://")
    conditions = {c.type: c for c in pod.status.conditions}
    assert conditions["PodScheduled"].status == "True"
    assert conditions["Initialized"].status == "True"
    assert conditions["Ready"].status == "False"
    assert conditions["Ready"].reason == "PodCompleted"


def test_exit_three_fails(core: kube_client.CoreV1Api, kube_namespace: str) -> None:
    code = "import sys, time\ntime.sleep(1)\nsys.exit(3)"
    create_pod(core, kube_namespace, python_pod("three", code))
    running_pod = wait_for_pod(core, kube_namespace, "three", running)
    main = running_pod.status.container_statuses[0]
    assert main.ready is True
    assert main.started is True
    assert main.state.running.started_at is not None
    assert {c.type: c.status for c in running_pod.status.conditions}["Ready"] == "True"

    pod = wait_for_pod(core, kube_namespace, "three", terminal)
    assert pod.status.phase == "Failed"
    state = pod.status.container_statuses[0].state.terminated
    assert state.exit_code == 3
    assert state.reason == "Error"


def test_deadline_exceeded(core: kube_client.CoreV1Api, kube_namespace: str) -> None:
    pod_spec = python_pod("deadline", "import time\ntime.sleep(120)", deadline=2)
    create_pod(core, kube_namespace, pod_spec)
    pod = wait_for_pod(core, kube_namespace, "deadline", terminal)

    assert pod.status.phase == "Failed"
    assert pod.status.reason == "DeadlineExceeded"
    assert "longer than the specified deadline" in pod.status.message
    state = pod.status.container_statuses[0].state.terminated
    assert state.exit_code == 137
    assert state.reason == "Error"


def test_memory_hog_is_oom_killed(
    core: kube_client.CoreV1Api, kube_namespace: str
) -> None:
    code = (
        "import time\n"
        "chunks = []\n"
        "for _ in range(400):\n"
        "    chunks.append(bytearray(1 << 20))\n"
        "    time.sleep(0.005)\n"
        "print('survived')\n"
    )
    create_pod(core, kube_namespace, python_pod("hog", code, memory_limit="64Mi"))
    pod = wait_for_pod(core, kube_namespace, "hog", terminal)

    assert pod.status.phase == "Failed"
    state = pod.status.container_statuses[0].state.terminated
    assert state.reason == "OOMKilled"
    assert state.exit_code == 137


def test_deleted_pod_is_gone(core: kube_client.CoreV1Api, kube_namespace: str) -> None:
    create_pod(
        core, kube_namespace, python_pod("doomed", "import time\ntime.sleep(120)")
    )
    wait_for_pod(core, kube_namespace, "doomed", running)

    started = time.monotonic()
    core.delete_namespaced_pod("doomed", kube_namespace)
    wait_gone(core, kube_namespace, "doomed")
    print(f"graceful deletion took {time.monotonic() - started:.2f} s")


def test_failing_init_container_fails_pod(
    core: kube_client.CoreV1Api, kube_namespace: str
) -> None:
    pod_spec = python_pod("init", "print('never')", init_code="import sys\nsys.exit(5)")
    create_pod(core, kube_namespace, pod_spec)
    pod = wait_for_pod(core, kube_namespace, "init", terminal)

    assert pod.status.phase == "Failed"
    init = pod.status.init_container_statuses[0].state.terminated
    assert init.exit_code == 5
    assert init.reason == "Error"
    main = pod.status.container_statuses[0].state
    assert main.waiting is not None
    assert main.waiting.reason == "PodInitializing"
    initialized = {c.type: c for c in pod.status.conditions}["Initialized"]
    assert initialized.status == "False"


def test_successful_init_container_runs_first(
    core: kube_client.CoreV1Api, kube_namespace: str
) -> None:
    pod_spec = python_pod("init-ok", "print('main')", init_code="print('setup')")
    create_pod(core, kube_namespace, pod_spec)
    pod = wait_for_pod(core, kube_namespace, "init-ok", terminal)

    assert pod.status.phase == "Succeeded"
    init = pod.status.init_container_statuses[0].state.terminated
    main = pod.status.container_statuses[0].state.terminated
    assert init.finished_at <= main.started_at
    setup_log = core.read_namespaced_pod_log(
        "init-ok", kube_namespace, container="setup"
    )
    assert setup_log == "setup\n"


def test_missing_executable_fails_pod(
    core: kube_client.CoreV1Api, kube_namespace: str
) -> None:
    pod_spec = python_pod("missing", "")
    pod_spec["spec"]["containers"][0]["command"] = ["no-such-command-anywhere"]
    create_pod(core, kube_namespace, pod_spec)
    pod = wait_for_pod(core, kube_namespace, "missing", terminal)

    assert pod.status.phase == "Failed"
    state = pod.status.container_statuses[0].state.terminated
    assert state.reason == "StartError"
    assert state.exit_code == 128
    assert "executable file not found" in state.message


def test_log_endpoint_unknown_pod_is_404(stack: StackConfig) -> None:
    # The API server checks pods itself, so this request goes to the stand-in.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    url = f"https://127.0.0.1:{kubelet_port(stack)}/containerLogs/nowhere/nothing/main"
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(url, timeout=5, context=context)
    assert raised.value.code == 404
    assert raised.value.read() == b'pod "nothing" does not exist'


@pytest.mark.skipif(
    TEST_NODE is not None, reason="a --no-scheduling stand-in binds nothing"
)
def test_unmatched_node_selector_unschedulable(
    core: kube_client.CoreV1Api, kube_namespace: str
) -> None:
    manifest = python_pod("picky", "print('never')")
    manifest["spec"]["nodeSelector"] = {"kubernetes.io/hostname": "elsewhere"}
    create_pod(core, kube_namespace, manifest)

    def unschedulable(pod: Any) -> bool:
        conditions = {c.type: c for c in pod.status.conditions or []}
        scheduled = conditions.get("PodScheduled")
        return scheduled is not None and scheduled.reason == "Unschedulable"

    pod = wait_for_pod(core, kube_namespace, "picky", unschedulable)
    assert pod.spec.node_name is None
    assert pod.status.phase == "Pending"


@pytest.mark.skipif(
    TEST_NODE is not None, reason="a --no-scheduling stand-in binds nothing"
)
def test_other_scheduler_name_left_unbound(
    core: kube_client.CoreV1Api, kube_namespace: str
) -> None:
    manifest = python_pod("foreign", "print('never')")
    manifest["spec"]["schedulerName"] = "some-other-scheduler"
    create_pod(core, kube_namespace, manifest)
    time.sleep(1.0)

    pod: Any = core.read_namespaced_pod("foreign", kube_namespace)
    assert pod.spec.node_name is None
    assert not pod.status.conditions


def test_deletion_kills_process_ignoring_sigterm(
    core: kube_client.CoreV1Api, kube_namespace: str
) -> None:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    create_pod(core, kube_namespace, python_pod("stubborn", code))
    wait_for_pod(core, kube_namespace, "stubborn", running)

    started = time.monotonic()
    core.delete_namespaced_pod("stubborn", kube_namespace, grace_period_seconds=2)
    wait_gone(core, kube_namespace, "stubborn")
    elapsed = time.monotonic() - started
    assert elapsed >= 2.0
    assert elapsed < 10.0
