"""Routes watch events to pod workers, binds unscheduled pods, finds logs.

The PodManager is the one consumer of the pod watch. It binds pods that have
no node and no other scheduler to this node, as a scheduler would, and hands
pods bound to this node to one PodWorker each. It also answers the log
endpoint's question of which file belongs to NAMESPACE/POD/CONTAINER.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_stack.kubelet.api import STRATEGIC_MERGE_PATCH, ApiError, pod_path
from local_stack.kubelet.clock import utc_now
from local_stack.kubelet.logs import LogPaths, remove_folder
from local_stack.kubelet.processes import kill_leftover
from local_stack.kubelet.worker import NodeContext, PodWorker

logger = logging.getLogger(__name__)

#: Seconds that a deleted pod's log files stay in the state folder.
LOG_RETENTION_SECONDS = 60.0

#: Scheduler name of pods that the stand-in binds. Pods that name another
#: scheduler stay unscheduled, which lets a test keep a pod Pending.
SCHEDULER_NAME = "default-scheduler"

#: Message of the PodScheduled condition for a pod whose nodeSelector does
#: not match the node, in the words of kube-scheduler.
UNSCHEDULABLE_MESSAGE = (
    "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
)

#: Waiting reasons for which the kubelet's log endpoint reports that the
#: image cannot be pulled, instead of naming the reason.
_PULL_FAILURES = {"ErrImagePull", "ImagePullBackOff"}


class LogLookupError(Exception):
    """No log to serve. ``status`` is the HTTP status the endpoint returns."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LogTarget:
    """The log of one container and whether it may still grow."""

    paths: LogPaths
    is_active: Callable[[], bool]


class PodManager:
    """All pods the stand-in handles, by UID."""

    def __init__(
        self,
        context: NodeContext,
        node_labels: Mapping[str, str],
        schedule: bool = True,
    ) -> None:
        self.context = context
        self.schedule = schedule
        self.node_labels = dict(node_labels)
        self._lock = threading.Lock()
        self._workers: dict[str, PodWorker] = {}
        self._by_name: dict[tuple[str, str], PodWorker] = {}
        self._scheduled: set[str] = set()
        self._first_resync = True

    # Watch events, called from the watch thread -----------------------------

    def on_event(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        if kind == "DELETED":
            self.context.executor.submit(uid, lambda: self._on_deleted(uid))
        else:
            self.context.executor.submit(uid, lambda: self._on_pod(pod))

    def resync(self, pods: list[dict[str, Any]]) -> None:
        """Apply a full list of pods: pods missing from it were deleted."""
        listed = {pod["metadata"]["uid"] for pod in pods}
        for pod in pods:
            self.on_event("ADDED", pod)
        with self._lock:
            vanished = [uid for uid in self._workers if uid not in listed]
        for uid in vanished:
            self.context.executor.submit(uid, functools.partial(self._on_deleted, uid))
        if self._first_resync:
            self._first_resync = False
            self._clean_records(listed)

    def shutdown(self) -> None:
        """Kill every container process, leaving the statuses as they are."""
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            if worker.runner is not None:
                worker.runner.stop(grace_seconds=0)

    # Tasks of one pod --------------------------------------------------------

    def _on_pod(self, pod: dict[str, Any]) -> None:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            if self.schedule:
                self._schedule(pod)
            return
        if node_name != self.context.node_name:
            return
        uid = pod["metadata"]["uid"]
        with self._lock:
            worker = self._workers.get(uid)
        if worker is not None:
            worker.update(pod)
            return
        worker = PodWorker(self.context, pod)
        with self._lock:
            self._workers[uid] = worker
            self._by_name[(worker.namespace, worker.name)] = worker
        worker.start()

    def _on_deleted(self, uid: str) -> None:
        self._scheduled.discard(uid)
        with self._lock:
            worker = self._workers.pop(uid, None)
            if worker is not None and self._by_name.get(worker.ids_key) is worker:
                del self._by_name[worker.ids_key]
        if worker is None:
            return
        worker.remove()
        folder = self.context.store.log_folder(worker.namespace, worker.name, uid)
        self.context.timers.call_later(
            LOG_RETENTION_SECONDS, uid, lambda: remove_folder(folder)
        )
        logger.debug("pod removed", extra=worker.ids)

    def _schedule(self, pod: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        spec = pod.get("spec") or {}
        uid = metadata["uid"]
        if uid in self._scheduled or metadata.get("deletionTimestamp"):
            return
        if (spec.get("schedulerName") or SCHEDULER_NAME) != SCHEDULER_NAME:
            return
        self._scheduled.add(uid)
        ids = {"namespace": metadata["namespace"], "pod": metadata["name"], "uid": uid}
        selector = spec.get("nodeSelector") or {}
        if any(self.node_labels.get(key) != value for key, value in selector.items()):
            self._mark_unschedulable(pod)
            logger.info("pod unschedulable: nodeSelector does not match", extra=ids)
            return
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": metadata["name"], "uid": uid},
            "target": {
                "apiVersion": "v1",
                "kind": "Node",
                "name": self.context.node_name,
            },
        }
        try:
            self.context.client.request(
                "POST",
                pod_path(metadata["namespace"], metadata["name"], "binding"),
                body=binding,
            )
            logger.debug("pod bound", extra=ids)
        except ApiError as error:
            if error.status in (404, 409):
                return
            self._scheduled.discard(uid)
            logger.error("pod binding failed", extra={**ids, "error": str(error)})

    def _mark_unschedulable(self, pod: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": UNSCHEDULABLE_MESSAGE,
            "lastProbeTime": None,
            "lastTransitionTime": utc_now(),
        }
        body = {
            "metadata": {"uid": metadata["uid"]},
            "status": {"conditions": [condition]},
        }
        try:
            self.context.client.request(
                "PATCH",
                pod_path(metadata["namespace"], metadata["name"], "status"),
                body=body,
                content_type=STRATEGIC_MERGE_PATCH,
            )
        except ApiError as error:
            logger.warning(
                "failed to mark pod unschedulable",
                extra={
                    "namespace": metadata["namespace"],
                    "pod": metadata["name"],
                    "error": str(error),
                },
            )

    def _clean_records(self, listed: set[str]) -> None:
        """Kill processes and drop records of pods deleted while the stand-in
        was not running."""
        store = self.context.store
        for uid in store.uids():
            if uid in listed:
                continue
            record = store.load(uid)
            if record is not None:
                for process in record.processes:
                    cgroup = None if process.cgroup is None else Path(process.cgroup)
                    kill_leftover(process.pid, process.start_ticks, cgroup)
                remove_folder(store.log_folder(record.namespace, record.name, uid))
            store.forget(uid)

    # Log endpoint, called from server threads -------------------------------

    def find_log(
        self, namespace: str, pod: str, container: str, previous: bool
    ) -> LogTarget:
        """Return the log of a container, or raise LogLookupError with the
        status and message that a kubelet's log endpoint returns."""
        with self._lock:
            worker = self._by_name.get((namespace, pod))
        if worker is None or worker.removed:
            raise LogLookupError(404, f'pod "{pod}" does not exist')
        status = worker.model.container(container)
        if status is None:
            raise LogLookupError(
                404, f'container "{container}" not found in pod "{pod}"'
            )
        if previous:
            raise LogLookupError(
                400,
                f'previous terminated container "{container}" in pod "{pod}" not found',
            )
        if status.state == "waiting":
            reason = status.reason or "ContainerCreating"
            if reason in _PULL_FAILURES:
                reason = "trying and failing to pull image"
            raise LogLookupError(
                400,
                f'container "{container}" in pod "{pod}" is waiting to start: {reason}',
            )

        def is_active() -> bool:
            return status.state == "running" and not worker.removed

        return LogTarget(worker.log_paths(container), is_active)
