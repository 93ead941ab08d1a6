"""The Node object of the stand-in: registration, heartbeat and Lease.

The Node gives the API server the address of the log endpoint: InternalIP
127.0.0.1 and ``daemonEndpoints.kubeletEndpoint.Port``. Its Ready condition
gets a fresh ``lastHeartbeatTime`` and its Lease in ``kube-node-lease`` a
fresh ``renewTime`` every :data:`HEARTBEAT_SECONDS`, as a kubelet does. No
node lifecycle controller runs in the local stack, so nothing marks the node
NotReady when the heartbeat stops.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import uuid
from typing import Any

from local_stack.kubelet.api import (
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    ApiError,
    KubeClient,
)
from local_stack.kubelet.clock import utc_now, utc_now_micro

logger = logging.getLogger(__name__)

#: Seconds between heartbeats, the kubelet's default nodeStatusUpdateFrequency
#: and lease renew interval.
HEARTBEAT_SECONDS = 10.0

#: Lease duration that a kubelet sets (nodeLeaseDurationSeconds default).
LEASE_DURATION_SECONDS = 40

#: Pods the node claims room for. Only informative: nothing schedules by it.
POD_CAPACITY = "1000"

KUBELET_VERSION = "v1.36.3"
LEASE_NAMESPACE = "kube-node-lease"


class NodeAgent:
    """Registers the Node and keeps its heartbeat and Lease fresh."""

    def __init__(self, client: KubeClient, node_name: str, port: int) -> None:
        self.client = client
        self.node_name = node_name
        self.port = port
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = utc_now()
        self._boot_id = str(uuid.uuid4())

    def register(self) -> None:
        """Create the Node, or update an existing one to this port and Ready.

        Raise ApiError if the API server rejects both.
        """
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node_name, "labels": self.labels()},
            "status": self._status(),
        }
        try:
            self.client.request("POST", "/api/v1/nodes", body=node)
            logger.info("node registered", extra={"node": self.node_name})
        except ApiError as error:
            if error.status != 409:
                raise
            self.client.request(
                "PATCH",
                f"/api/v1/nodes/{self.node_name}",
                body={"metadata": {"labels": self.labels()}},
                content_type=STRATEGIC_MERGE_PATCH,
            )
            self._patch_status(self._status())
            logger.info("existing node updated", extra={"node": self.node_name})
        self._renew_lease()

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="node-heartbeat", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        failures = 0
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self._heartbeat()
                if failures:
                    logger.info(
                        "node heartbeat recovered",
                        extra={"node": self.node_name, "failures": failures},
                    )
                failures = 0
            except ApiError as error:
                failures += 1
                logger.warning(
                    "node heartbeat failed, will retry",
                    extra={
                        "node": self.node_name,
                        "attempt": failures,
                        "error": str(error),
                    },
                )

    def _heartbeat(self) -> None:
        try:
            self._patch_status({"conditions": self._conditions()})
        except ApiError as error:
            if error.status != 404:
                raise
            logger.warning(
                "node was deleted, registering again", extra={"node": self.node_name}
            )
            self.register()
            return
        self._renew_lease()

    def _patch_status(self, status: dict[str, Any]) -> None:
        self.client.request(
            "PATCH",
            f"/api/v1/nodes/{self.node_name}/status",
            body={"status": status},
            content_type=STRATEGIC_MERGE_PATCH,
        )

    def _renew_lease(self) -> None:
        leases = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"
        path = f"{leases}/{self.node_name}"
        spec = {
            "holderIdentity": self.node_name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": utc_now_micro(),
        }
        try:
            self.client.request(
                "PATCH", path, body={"spec": spec}, content_type=MERGE_PATCH
            )
        except ApiError as error:
            if error.status != 404:
                raise
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.node_name, "namespace": LEASE_NAMESPACE},
                "spec": spec,
            }
            self.client.request(
                "POST",
                leases,
                body=lease,
            )

    def labels(self) -> dict[str, str]:
        return {
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": _architecture(),
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": _architecture(),
        }

    def _conditions(self) -> list[dict[str, str]]:
        now = utc_now()

        def condition(
            kind: str, status: str, reason: str, message: str
        ) -> dict[str, str]:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": self._started,
            }

        return [
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            condition(
                "Ready", "True", "KubeletReady", "kubelet is posting ready status"
            ),
        ]

    def _status(self) -> dict[str, Any]:
        resources = {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{_memory_kib()}Ki",
            "pods": POD_CAPACITY,
            "ephemeral-storage": "100Gi",
        }
        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": self._conditions(),
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "machineID": _machine_id(),
                "systemUUID": _machine_id(),
                "bootID": self._boot_id,
                "kernelVersion": platform.release(),
                "osImage": "local kubelet stand-in",
                "containerRuntimeVersion": "local://0.1.0",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": _architecture(),
            },
        }


def _architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _memory_kib() -> int:
    try:
        with open("/proc/meminfo") as meminfo:  # noqa: PTH123
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 1024 * 1024


def _machine_id() -> str:
    try:
        with open("/etc/machine-id") as machine_id:  # noqa: PTH123
            return machine_id.read().strip()
    except OSError:
        return "local"
