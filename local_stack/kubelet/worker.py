"""The life of one pod on the node, from first sight to deletion.

A :class:`PodWorker` decides what happens to one pod: run its containers as
processes, play its script, enforce activeDeadlineSeconds, complete its
deletion, or leave it alone because it finished before. Every method runs as a
task of the pod's UID on the KeyedExecutor, so one worker is never entered by
two threads at once. Process threads and timers post their results back as
such tasks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from local_stack.kubelet.api import (
    STRATEGIC_MERGE_PATCH,
    ApiError,
    KubeClient,
    pod_path,
)
from local_stack.kubelet.logs import LogPaths
from local_stack.kubelet.memory import CgroupV1Memory
from local_stack.kubelet.processes import kill_leftover
from local_stack.kubelet.running import ProcessRunner
from local_stack.kubelet.scheduling import KeyedExecutor, Timer, Timers
from local_stack.kubelet.script import ANNOTATION, Script, ScriptError
from local_stack.kubelet.scripted import ScriptPlayer
from local_stack.kubelet.state import PodRecord, StateStore
from local_stack.kubelet.status import (
    DEADLINE_MESSAGE,
    DEADLINE_REASON,
    TERMINAL_PHASES,
    PodStatusModel,
)

logger = logging.getLogger(__name__)

#: Maximum grace period honoured when a pod is deleted, in seconds. Tests
#: delete pods often and should not wait the default 30 seconds.
MAX_GRACE_SECONDS = 5.0

#: Exit code and reason reported for a container whose process the stand-in
#: lost, the values a kubelet reports when a container vanished.
LOST_EXIT_CODE = 137
LOST_REASON = "ContainerStatusUnknown"
LOST_CONTAINER_MESSAGE = (
    "The container could not be located when the pod was terminated"
)
LOST_POD_MESSAGE = "The kubelet stand-in restarted and lost the processes of this pod"

#: Attempts for a status patch that fails for a reason other than the pod
#: being gone, with a pause of RETRY_SECONDS times the attempt number.
PATCH_ATTEMPTS = 5
RETRY_SECONDS = 0.2


@dataclass
class NodeContext:
    """Dependencies that every worker shares: the API, the node and the state folder."""

    client: KubeClient
    node_name: str
    store: StateStore
    executor: KeyedExecutor
    timers: Timers
    memory: CgroupV1Memory | None


class PodWorker:
    """The stand-in's handling of one pod bound to its node."""

    def __init__(self, context: NodeContext, pod: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        self.context = context
        self.uid: str = metadata["uid"]
        self.namespace: str = metadata["namespace"]
        self.name: str = metadata["name"]
        self.pod = pod
        self.model = PodStatusModel(pod)
        self.record = PodRecord(self.uid, self.namespace, self.name, mode="process")
        self.finished = False
        self.deleting = False
        #: The stand-in has sent the final DELETE of the pod.
        self.delete_sent = False
        self.node_lost = False
        #: The API server no longer has the pod (a DELETED event arrived).
        self.removed = False
        self.runner: ProcessRunner | None = None
        self.player: ScriptPlayer | None = None
        self._deadline: Timer | None = None
        self._deadline_seconds: int | None = None
        self._deadline_hit = False

    # Fields used in every log line about this pod.
    @property
    def ids(self) -> dict[str, str]:
        return {"namespace": self.namespace, "pod": self.name, "uid": self.uid}

    @property
    def ids_key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def post(self, task: Callable[[], None]) -> None:
        """Run ``task`` as a task of this pod, after the ones queued before."""
        self.context.executor.submit(self.uid, task)

    def fetch_object(
        self, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """Return a ConfigMap or Secret, or None if it does not exist."""
        plural = {"ConfigMap": "configmaps", "Secret": "secrets"}[kind]
        try:
            return self.context.client.request(
                "GET", f"/api/v1/namespaces/{quote(namespace)}/{plural}/{quote(name)}"
            )
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def log_paths(self, container: str) -> LogPaths:
        folder = self.context.store.log_folder(self.namespace, self.name, self.uid)
        return LogPaths.in_folder(folder / container)

    # Watch events ---------------------------------------------------------

    def start(self) -> None:
        """Take the pod on when the watch delivers it for the first time."""
        status = self.pod.get("status") or {}
        previous = self.context.store.load(self.uid)
        if previous is not None:
            self.record = previous
        annotations = self.pod["metadata"].get("annotations") or {}
        self.record.mode = "script" if ANNOTATION in annotations else "process"

        if status.get("phase") in TERMINAL_PHASES:
            # Finished before, maybe by an earlier run of the stand-in: a
            # kubelet never runs a terminal pod again.
            self.finished = True
            self.model.adopt(status)
            self._save(finished=True)
            self.update(self.pod)
            return

        if self.pod["metadata"].get("deletionTimestamp"):
            # Deleted while no stand-in ran: only the deletion is left to do.
            self.model.adopt(status)
            if previous is not None or _was_started(status):
                self._mark_lost(previous)
            self.update(self.pod)
            return

        if self.record.mode == "script":
            self._start_script(annotations[ANNOTATION], status, previous)
        elif previous is not None or _was_started(status):
            self._fail_lost(status, previous)
        else:
            self._start_processes()
        self._arm_deadline()

    def update(self, pod: dict[str, Any]) -> None:
        """Apply a later version of the pod: deletion, deadline and generation
        changes."""
        self.pod = pod
        generation = pod["metadata"].get("generation")
        if generation != self.model.generation:
            self.model.generation = generation
            if not self.finished:
                self.sync_status()
        if pod["metadata"].get("deletionTimestamp") and not self.deleting:
            self._begin_deletion()
        elif not self.finished:
            self._arm_deadline()

    def remove(self) -> None:
        """Forget the pod after the API server deleted it."""
        self.removed = True
        if self.runner is not None:
            # Deleted by someone else with grace 0, so no status can be written
            # any more and the processes are killed at once.
            self.runner.stop(grace_seconds=0)
        if self.player is not None:
            self.player.cancel()
        if self._deadline is not None:
            self._deadline.cancel()
        self.context.store.forget(self.uid)

    # Starting -------------------------------------------------------------

    def _start_processes(self) -> None:
        self._save()
        self.sync_status()
        self.runner = ProcessRunner(self)
        self.runner.start()

    def _start_script(
        self, annotation: str, status: dict[str, Any], previous: PodRecord | None
    ) -> None:
        try:
            script = Script.from_json(annotation)
        except ScriptError as error:
            logger.error(
                "invalid script annotation", extra={**self.ids, "error": str(error)}
            )
            for container in self.model.containers:
                container.set_waiting(
                    "CreateContainerConfigError",
                    f"invalid {ANNOTATION} annotation: {error}",
                )
            self.sync_status()
            return
        first = 0
        if previous is not None and previous.mode == "script":
            self.model.adopt(status)
            first = previous.script_step + 1
            logger.info("resuming script", extra={**self.ids, "step": first})
        self._save()
        # A first step without delay goes out in the same patch as the
        # initial status, which saves a third of the patches of short scripts.
        if first == 0 and (not script.steps or script.steps[0].delay > 0):
            self.sync_status()
        self.player = ScriptPlayer(self, script, first)
        self.player.start()

    def _fail_lost(self, status: dict[str, Any], previous: PodRecord | None) -> None:
        """Fail a pod that an earlier run started, because its processes died
        with that run or are killed now."""
        self.model.adopt(status)
        self._mark_lost(previous)
        self.model.phase = "Failed"
        self.model.message = LOST_POD_MESSAGE
        logger.warning("pod failed: processes lost in a restart", extra=self.ids)
        self.finish()

    def _mark_lost(self, previous: PodRecord | None) -> None:
        """Kill what an earlier run left of the pod's processes, and end the
        containers that were running as lost."""
        for process in previous.processes if previous else []:
            cgroup = None if process.cgroup is None else Path(process.cgroup)
            if kill_leftover(process.pid, process.start_ticks, cgroup):
                logger.info(
                    "killed process left by an earlier run",
                    extra={
                        **self.ids,
                        "container": process.container,
                        "pid": process.pid,
                    },
                )
        for container in self.model.init_containers + self.model.containers:
            if container.state == "running":
                container.set_terminated(
                    self.uid, LOST_EXIT_CODE, LOST_REASON, LOST_CONTAINER_MESSAGE
                )

    # Deadline -------------------------------------------------------------

    def _arm_deadline(self) -> None:
        """Schedule the activeDeadlineSeconds check, again only when the value
        changed, because every status patch comes back as a watch event."""
        deadline = (self.pod.get("spec") or {}).get("activeDeadlineSeconds")
        if deadline == self._deadline_seconds and self._deadline is not None:
            return
        self._deadline_seconds = deadline
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if deadline is None or self.finished or self.node_lost:
            return
        elapsed = time.time() - self.model.start_epoch
        self._deadline = self.context.timers.call_later(
            max(0.0, float(deadline) - elapsed), self.uid, self._deadline_exceeded
        )

    def _deadline_exceeded(self) -> None:
        if self.finished or self.deleting or self.node_lost or self._deadline_hit:
            return
        logger.info("pod deadline exceeded", extra=self.ids)
        self._deadline_hit = True
        self.model.phase = "Failed"
        self.model.reason = DEADLINE_REASON
        self.model.message = DEADLINE_MESSAGE
        if self.player is not None:
            self.player.cancel()
            self.player.end_containers(exit_code=137)
            self.finish()
        elif self.runner is not None:
            # The status is written once the processes are gone, so that it
            # never shows phase Failed with running containers.
            self.runner.stop(grace_seconds=0)
        else:
            self.finish()

    # Deletion -------------------------------------------------------------

    def _begin_deletion(self) -> None:
        self.deleting = True
        if self.node_lost:
            logger.info("deletion left unfinished: node lost", extra=self.ids)
            return
        if self.player is not None:
            self.player.cancel()
            self.player.end_containers(exit_code=143)
            self.player = None
        if self.runner is not None and not self.runner.done:
            grace = _grace_seconds(self.pod)
            logger.info(
                "stopping pod for deletion", extra={**self.ids, "grace_seconds": grace}
            )
            self.runner.stop(grace_seconds=grace)
            return
        self._complete_deletion()

    def on_runner_done(self) -> None:
        """Handle the end of the last process of the pod."""
        if self.removed:
            return
        if self.deleting:
            self._complete_deletion()
            return
        self.finish()

    def _complete_deletion(self) -> None:
        if not self.finished:
            if self.model.current_phase() not in TERMINAL_PHASES:
                self.model.phase = "Failed"
            self.finish()
        self.delete_now()

    def delete_now(self) -> None:
        """Delete the pod with grace period 0, for this UID only."""
        if self.delete_sent:
            return
        self.delete_sent = True
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        }
        try:
            self.context.client.request(
                "DELETE", pod_path(self.namespace, self.name), body=body
            )
            logger.debug("pod deleted", extra=self.ids)
        except ApiError as error:
            if error.status in (404, 409):
                return
            logger.error("pod deletion failed", extra={**self.ids, "error": str(error)})
            self.delete_sent = False

    # Status ---------------------------------------------------------------

    def finish(self) -> None:
        """Write the terminal status and record that the pod is done."""
        self.finished = True
        if self._deadline is not None:
            self._deadline.cancel()
        self.sync_status()
        self._save(finished=True)

    def sync_status(self) -> None:
        """Send what changed in the status since the last patch."""
        if self.removed:
            return
        patch = self.model.patch()
        if patch is None:
            return
        body = {"metadata": {"uid": self.uid}, "status": patch}
        path = pod_path(self.namespace, self.name, "status")
        for attempt in range(1, PATCH_ATTEMPTS + 1):
            try:
                self.context.client.request(
                    "PATCH", path, body=body, content_type=STRATEGIC_MERGE_PATCH
                )
                return
            except ApiError as error:
                # A pod of the same name but another UID rejects the UID in
                # the patch with 422 "metadata.uid ... field is immutable".
                replaced = error.status == 422 and "metadata.uid" in str(error)
                if error.status in (404, 409) or replaced:
                    logger.debug("status patch for a pod that is gone", extra=self.ids)
                    return
                if error.status == 422 or attempt == PATCH_ATTEMPTS:
                    logger.error(
                        "status patch failed",
                        extra={**self.ids, "attempt": attempt, "error": str(error)},
                    )
                    return
                logger.warning(
                    "status patch failed, will retry",
                    extra={**self.ids, "attempt": attempt, "error": str(error)},
                )
                time.sleep(RETRY_SECONDS * attempt)

    def _save(self, finished: bool | None = None) -> None:
        if finished is not None:
            self.record.finished = finished
        self.context.store.save(self.record)

    def save_record(self) -> None:
        self.context.store.save(self.record)


def _was_started(status: dict[str, Any]) -> bool:
    """Return whether the status shows containers that a stand-in started."""
    for container in (status.get("initContainerStatuses") or []) + (
        status.get("containerStatuses") or []
    ):
        if str(container.get("containerID", "")).startswith("local://"):
            return True
    return False


def _grace_seconds(pod: dict[str, Any]) -> float:
    grace = pod["metadata"].get("deletionGracePeriodSeconds")
    if grace is None:
        grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
    return min(float(grace), MAX_GRACE_SECONDS)
