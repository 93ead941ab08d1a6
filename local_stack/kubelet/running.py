"""Runs the containers of one pod as local processes, in a thread of its own.

Init containers run one after the other. The first that fails ends the pod,
as it does for restartPolicy Never. Then every regular container runs at the
same time, each in one thread that also copies its output to its log. Every
change of a container's state goes back to the pod's worker as a task.

NOTE: restartPolicy OnFailure and Always are treated as Never: a container
that ends is never restarted.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import TYPE_CHECKING, Any

from local_stack.kubelet.api import ApiError
from local_stack.kubelet.clock import format_time
from local_stack.kubelet.containers import ContainerConfigError, build_launch
from local_stack.kubelet.logs import LogWriter, tail_text
from local_stack.kubelet.processes import (
    ContainerProcess,
    ExitStatus,
    LaunchSpec,
    StartError,
    process_start_ticks,
)
from local_stack.kubelet.state import ProcessRecord
from local_stack.kubelet.status import container_id_for

if TYPE_CHECKING:
    from local_stack.kubelet.worker import PodWorker

logger = logging.getLogger(__name__)

#: Seconds between two attempts to build a container's environment while a
#: ConfigMap or Secret it needs is missing.
CONFIG_RETRY_SECONDS = 2.0

#: Exit code a container runtime reports when it cannot start the process.
START_ERROR_EXIT_CODE = 128

#: Limits of the log tail used as the message of FallbackToLogsOnError, the
#: kubelet's values.
FALLBACK_LINES = 80
FALLBACK_BYTES = 2048


class ProcessRunner:
    """The processes of one pod. ``stop()`` may be called from any task."""

    def __init__(self, worker: PodWorker) -> None:
        self.worker = worker
        self.done = False
        self._lock = threading.Lock()
        self._processes: dict[str, ContainerProcess] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"pod-{worker.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, grace_seconds: float) -> None:
        """Stop starting containers, send SIGTERM to running ones, and SIGKILL
        after ``grace_seconds`` (at once when it is 0)."""
        self._stopping.set()
        with self._lock:
            processes = list(self._processes.values())
        for process in processes:
            if grace_seconds > 0:
                process.terminate()
            else:
                process.kill()
        if grace_seconds > 0 and processes:
            self.worker.context.timers.call_later(
                grace_seconds, self.worker.uid, self.kill
            )

    def kill(self) -> None:
        with self._lock:
            processes = list(self._processes.values())
        for process in processes:
            process.kill()

    def _run(self) -> None:
        worker = self.worker
        spec = worker.pod.get("spec") or {}
        try:
            for container in spec.get("initContainers") or []:
                if self._stopping.is_set() or not self._run_container(container):
                    return
            threads = [
                threading.Thread(
                    target=self._run_container,
                    args=(container,),
                    name=f"container-{worker.name}-{container['name']}",
                    daemon=True,
                )
                for container in spec.get("containers") or []
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        except Exception:
            logger.exception("pod runner failed", extra=worker.ids)
        finally:
            worker.post(self._mark_done)

    def _mark_done(self) -> None:
        self.done = True
        self.worker.on_runner_done()

    def _run_container(self, container: dict[str, Any]) -> bool:
        """Run one container to its end. Return whether it exited with 0."""
        worker = self.worker
        name = container["name"]
        launch = self._wait_for_launch(container)
        if launch is None:
            return False
        container_id = container_id_for(worker.uid, name).removeprefix("local://")
        log = LogWriter(worker.log_paths(name))
        process = ContainerProcess(container_id, launch, log, worker.context.memory)
        try:
            process.start()
        except StartError as error:
            log.close()
            message = str(error)
            logger.warning(
                "container failed to start",
                extra={**worker.ids, "container": name, "error": message},
            )
            worker.post(functools.partial(self._on_start_error, name, message))
            return False

        with self._lock:
            self._processes[name] = process
        pid = process.pid or 0
        cgroup = None if process.cgroup_path is None else str(process.cgroup_path)
        record = ProcessRecord(name, pid, process_start_ticks(pid), cgroup)
        started_at = process.started_at
        worker.post(lambda: self._on_started(name, started_at, record))
        if self._stopping.is_set():
            # stop() may have run between start() and the registration above.
            process.kill()

        exit_status = process.wait()
        with self._lock:
            del self._processes[name]
        policy = container.get("terminationMessagePolicy", "File")
        worker.post(lambda: self._on_exited(name, exit_status, policy))
        return exit_status.exit_code == 0 and not exit_status.oom_killed

    def _wait_for_launch(self, container: dict[str, Any]) -> LaunchSpec | None:
        """Build the container's launch, retrying while a ConfigMap or Secret
        it needs is missing. Return None when the pod stops first."""
        worker = self.worker
        name = container["name"]
        reported = ""
        while not self._stopping.is_set():
            try:
                return build_launch(
                    worker.pod,
                    container,
                    worker.context.node_name,
                    worker.context.store.scratch_folder(worker.uid, name),
                    worker.fetch_object,
                )
            except (ContainerConfigError, ApiError) as error:
                message = str(error)
                if message != reported:
                    reported = message
                    worker.post(functools.partial(self._on_config_error, name, message))
            self._stopping.wait(CONFIG_RETRY_SECONDS)
        return None

    # Tasks of the pod, run by its worker ----------------------------------

    def _on_config_error(self, name: str, message: str) -> None:
        container = self.worker.model.container(name)
        if container is not None and container.state == "waiting":
            container.set_waiting("CreateContainerConfigError", message)
            self.worker.sync_status()

    def _on_start_error(self, name: str, message: str) -> None:
        container = self.worker.model.container(name)
        if container is None:
            return
        container.set_terminated(
            self.worker.uid, START_ERROR_EXIT_CODE, reason="StartError", message=message
        )
        self.worker.sync_status()

    def _on_started(self, name: str, started_at: float, record: ProcessRecord) -> None:
        worker = self.worker
        worker.record.processes.append(record)
        worker.save_record()
        container = worker.model.container(name)
        if container is not None:
            container.set_running(worker.uid, format_time(started_at))
        logger.info(
            "container started",
            extra={**worker.ids, "container": name, "pid": record.pid},
        )
        worker.sync_status()

    def _on_exited(self, name: str, status: ExitStatus, policy: str) -> None:
        worker = self.worker
        container = worker.model.container(name)
        if container is None:
            return

        reason = "OOMKilled" if status.oom_killed else None
        exit_code = 137 if status.oom_killed else status.exit_code
        message = None
        if policy == "FallbackToLogsOnError" and exit_code != 0:
            message = (
                tail_text(worker.log_paths(name), FALLBACK_LINES, FALLBACK_BYTES)
                or None
            )
        container.set_terminated(
            worker.uid,
            exit_code,
            reason=reason,
            message=message,
            finished_at=format_time(status.finished_at),
        )
        logger.info(
            "container exited",
            extra={
                **worker.ids,
                "container": name,
                "exit_code": exit_code,
                "reason": container.reason,
            },
        )

        worker.record.processes = [
            p for p in worker.record.processes if p.container != name
        ]
        worker.save_record()
        worker.sync_status()
