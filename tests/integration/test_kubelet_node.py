"""The kubelet stand-in's Node, Lease and pod watch against the API server."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client as kube_client

from local_stack.config import StackConfig
from local_stack.kubelet.api import KubeClient, WatchExpiredError
from local_stack.kubelet.node import HEARTBEAT_SECONDS
from local_stack.kubelet.watch import list_pods, watch_once
from tests.etcd_compaction import compact_etcd
from tests.integration.test_kubelet_pods import expected_node, kubelet_port


def test_node_ready_with_kubelet_endpoint(
    kube_api_client: kube_client.ApiClient, stack: StackConfig
) -> None:
    node: Any = kube_client.CoreV1Api(kube_api_client).read_node(expected_node())

    ready = {c.type: c for c in node.status.conditions}["Ready"]
    assert ready.status == "True"
    assert ready.reason == "KubeletReady"
    addresses = {a.type: a.address for a in node.status.addresses}
    assert addresses["InternalIP"] == "127.0.0.1"
    assert node.status.daemon_endpoints.kubelet_endpoint.port == kubelet_port(stack)


def test_heartbeat_renews_lease(kube_api_client: kube_client.ApiClient) -> None:
    leases = kube_client.CoordinationV1Api(kube_api_client)
    first: Any = leases.read_namespaced_lease(expected_node(), "kube-node-lease")
    assert first.spec.holder_identity == expected_node()

    deadline = time.monotonic() + HEARTBEAT_SECONDS + 5
    renewed: Any = first
    while time.monotonic() < deadline:
        renewed = leases.read_namespaced_lease(expected_node(), "kube-node-lease")
        if renewed.spec.renew_time > first.spec.renew_time:
            break
        time.sleep(0.5)
    assert renewed.spec.renew_time > first.spec.renew_time


def test_watch_from_expired_version_raises(stack: StackConfig) -> None:
    # A fresh etcd still holds revision 1 until its first compaction.
    compact_etcd(stack)
    client = KubeClient(str(stack.kubeconfig_path))
    _, resource_version = list_pods(client)
    assert resource_version

    with pytest.raises(WatchExpiredError):
        watch_once(client, "1", lambda kind, pod: None)
