"""Scripted pods of the kubelet stand-in, checked through the API server."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client as kube_client

from local_stack.kubelet.script import (
    ContainerState,
    Script,
    Step,
)
from tests.integration.test_kubelet_pods import (
    create_pod,
    pod_manifest,
    terminal,
    wait_for_pod,
    wait_gone,
)

#: Pods in the throughput test.
MANY_PODS = 200


@pytest.fixture
def core(kube_api_client: kube_client.ApiClient) -> kube_client.CoreV1Api:
    return kube_client.CoreV1Api(kube_api_client)


def scripted_pod(
    name: str, script: Script, containers: tuple[str, ...] = ("main",)
) -> Any:
    spec = {
        "restartPolicy": "Never",
        "containers": [
            {"name": c, "image": "registry.invalid/none:1"} for c in containers
        ],
    }
    return pod_manifest(name, spec, annotations=script.to_annotation())


def test_script_plays_log_and_exit_code(
    core: kube_client.CoreV1Api, kube_namespace: str
) -> None:
    script = Script(
        [
            Step.running(delay=0.1),
            Step.log("main", "first line\nsecond line\n"),
            Step.failed(exit_code=3, delay=0.2),
        ]
    )
    create_pod(core, kube_namespace, scripted_pod("played", script))
    pod = wait_for_pod(core, kube_namespace, "played", terminal)

    assert pod.status.phase == "Failed"
    state = pod.status.container_statuses[0].state.terminated
    assert state.exit_code == 3
    assert state.reason == "Error"
    log = core.read_namespaced_pod_log("played", kube_namespace)
    assert log == "first line\nsecond line\n"
    assert (
        core.read_namespaced_pod_log("played", kube_namespace, tail_lines=1)
        == "second line\n"
    )


def test_script_err_image_pull(
    core: kube_client.CoreV1Api, kube_namespace: str
) -> None:
    message = 'failed to pull image "registry.invalid/none:1": not found'
    script = Script([Step.waiting("ErrImagePull", message, delay=0.1)])
    create_pod(core, kube_namespace, scripted_pod("pull", script))

    def pulling(pod: Any) -> bool:
        statuses = pod.status.container_statuses or []
        return (
            bool(statuses)
            and statuses[0].state.waiting is not None
            and (statuses[0].state.waiting.reason == "ErrImagePull")
        )

    pod = wait_for_pod(core, kube_namespace, "pull", pulling)
    assert pod.status.phase == "Pending"
    assert pod.status.container_statuses[0].state.waiting.message == message
    with pytest.raises(kube_client.ApiException) as raised:
        core.read_namespaced_pod_log("pull", kube_namespace)
    assert raised.value.status == 400
    assert "trying and failing to pull image" in str(raised.value.body)


def test_script_eviction(core: kube_client.CoreV1Api, kube_namespace: str) -> None:
    script = Script([Step.running(), Step.evicted(delay=0.2)])
    create_pod(core, kube_namespace, scripted_pod("evicted", script))
    pod = wait_for_pod(core, kube_namespace, "evicted", terminal)

    assert pod.status.phase == "Failed"
    assert pod.status.reason == "Evicted"
    conditions = {c.type: c for c in pod.status.conditions}
    assert conditions["DisruptionTarget"].status == "True"
    assert conditions["DisruptionTarget"].reason == "TerminationByKubelet"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 137


def test_script_oom_killed(core: kube_client.CoreV1Api, kube_namespace: str) -> None:
    script = Script([Step.running(), Step.oom_killed(delay=0.1)])
    create_pod(core, kube_namespace, scripted_pod("oom", script))
    pod = wait_for_pod(core, kube_namespace, "oom", terminal)

    state = pod.status.container_statuses[0].state.terminated
    assert state.reason == "OOMKilled"
    assert state.exit_code == 137


def test_script_delete(core: kube_client.CoreV1Api, kube_namespace: str) -> None:
    script = Script([Step.running(), Step.delete(delay=0.3)])
    create_pod(core, kube_namespace, scripted_pod("vanish", script))
    wait_for_pod(
        core, kube_namespace, "vanish", lambda pod: pod.status.phase == "Running"
    )
    wait_gone(core, kube_namespace, "vanish")


def test_script_per_container_states(
    core: kube_client.CoreV1Api, kube_namespace: str
) -> None:
    script = Script(
        [
            Step(
                containers={
                    "app": ContainerState.running(),
                    "sidecar": ContainerState.waiting(
                        "CreateContainerConfigError", "no key"
                    ),
                }
            ),
            Step(delay=0.2, containers={"*": ContainerState.terminated(0)}),
        ]
    )
    create_pod(
        core,
        kube_namespace,
        scripted_pod("mixed", script, containers=("app", "sidecar")),
    )
    pod = wait_for_pod(core, kube_namespace, "mixed", terminal)

    assert pod.status.phase == "Succeeded"
    reasons = {c.name: c.state.terminated.reason for c in pod.status.container_statuses}
    assert reasons == {"app": "Completed", "sidecar": "Completed"}


def test_script_node_lost_keeps_deletion_pending(
    core: kube_client.CoreV1Api, kube_namespace: str
) -> None:
    script = Script([Step.running(), Step.node_lost(delay=0.1)])
    create_pod(core, kube_namespace, scripted_pod("lost", script))
    pod = wait_for_pod(
        core, kube_namespace, "lost", lambda pod: pod.status.reason == "NodeLost"
    )

    ready = {c.type: c.status for c in pod.status.conditions}["Ready"]
    assert ready == "False"
    assert pod.status.phase == "Running"
    core.delete_namespaced_pod("lost", kube_namespace)
    time.sleep(1.0)
    pending: Any = core.read_namespaced_pod("lost", kube_namespace)
    assert pending.metadata.deletion_timestamp is not None
    core.delete_namespaced_pod("lost", kube_namespace, grace_period_seconds=0)
    wait_gone(core, kube_namespace, "lost")


def test_script_node_lost_ready_unknown(
    core: kube_client.CoreV1Api, kube_namespace: str
) -> None:
    script = Script([Step.running(), Step.node_lost(delay=0.1, ready="Unknown")])
    create_pod(core, kube_namespace, scripted_pod("unknown", script))
    pod = wait_for_pod(
        core, kube_namespace, "unknown", lambda pod: pod.status.reason == "NodeLost"
    )

    ready = {c.type: c.status for c in pod.status.conditions}["Ready"]
    assert ready == "Unknown"


def test_script_invalid_annotation_reported(
    core: kube_client.CoreV1Api, kube_namespace: str
) -> None:
    manifest = scripted_pod("bad", Script([]))
    manifest["metadata"]["annotations"] = {"local-stack.pod-monitor.io/script": "{"}
    create_pod(core, kube_namespace, manifest)

    def reported(pod: Any) -> bool:
        statuses = pod.status.container_statuses or []
        return bool(statuses) and statuses[0].state.waiting.reason == (
            "CreateContainerConfigError"
        )

    pod = wait_for_pod(core, kube_namespace, "bad", reported)
    assert "not valid JSON" in pod.status.container_statuses[0].state.waiting.message


def test_many_scripted_pods_complete(
    core: kube_client.CoreV1Api, kube_namespace: str
) -> None:
    script = Script([Step.running(delay=0.1), Step.succeeded(delay=0.2)])
    started = time.monotonic()
    for index in range(MANY_PODS):
        create_pod(core, kube_namespace, scripted_pod(f"many-{index}", script))
    created = time.monotonic()

    deadline = time.monotonic() + 120
    succeeded = 0
    while time.monotonic() < deadline:
        pods: list[Any] = core.list_namespaced_pod(kube_namespace).items
        succeeded = sum(1 for pod in pods if pod.status.phase == "Succeeded")
        if succeeded == MANY_PODS:
            break
        time.sleep(0.2)
    finished = time.monotonic()
    print(
        f"{MANY_PODS} scripted pods: created in {created - started:.1f} s, "
        f"all Succeeded {finished - started:.1f} s after the first create"
    )
    assert succeeded == MANY_PODS


def test_script_follow_waits_for_lines(
    core: kube_client.CoreV1Api, kube_namespace: str
) -> None:
    script = Script(
        [
            Step.running(),
            Step.log("main", "one\n", delay=0.5),
            Step.log("main", "two\n", delay=0.5),
            Step.succeeded(delay=0.3),
        ]
    )
    create_pod(core, kube_namespace, scripted_pod("followed", script))
    wait_for_pod(
        core, kube_namespace, "followed", lambda pod: pod.status.phase == "Running"
    )

    response: Any = core.read_namespaced_pod_log(
        "followed", kube_namespace, follow=True, _preload_content=False
    )
    assert b"".join(response.stream(1024)) == b"one\ntwo\n"
