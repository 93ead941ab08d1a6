"""Plays the script of a scripted pod, one step per timer.

Each step runs as a task of the pod after its delay, so hundreds of scripted
pods share the worker pool and no thread sleeps through a delay. The index of
the last step applied goes to the pod's record, so a restarted stand-in
resumes after it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from local_stack.kubelet.logs import LogWriter
from local_stack.kubelet.scheduling import Timer
from local_stack.kubelet.script import ALL_CONTAINERS, ContainerState, Script, Step
from local_stack.kubelet.status import TERMINAL_PHASES, ContainerStatus

if TYPE_CHECKING:
    from local_stack.kubelet.worker import PodWorker

logger = logging.getLogger(__name__)

#: Pod reason and message for the node-lost step, the values of the node
#: lifecycle controller for pods on an unreachable node (Kubernetes 1.36).
NODE_LOST_REASON = "NodeLost"
NODE_LOST_MESSAGE = "Node {node} which was running pod {pod} is unresponsive"


class ScriptPlayer:
    """Applies the steps of one pod's script from ``first`` on."""

    def __init__(self, worker: PodWorker, script: Script, first: int = 0) -> None:
        self.worker = worker
        self.script = script
        self.next_step = first
        self._timer: Timer | None = None
        self._cancelled = False

    def start(self) -> None:
        """Apply the first step now if it has no delay, else schedule it."""
        steps = self.script.steps
        if self.next_step < len(steps) and steps[self.next_step].delay == 0:
            self._apply()
            return
        self._schedule()

    def cancel(self) -> None:
        self._cancelled = True
        if self._timer is not None:
            self._timer.cancel()

    def end_containers(self, exit_code: int) -> None:
        """End every running container with ``exit_code`` and reason Error,
        as killing it would. Waiting containers stay waiting."""
        worker = self.worker
        model = worker.model
        for container in model.init_containers + model.containers:
            if container.state == "running":
                container.set_terminated(worker.uid, exit_code, reason="Error")
        if model.phase not in TERMINAL_PHASES:
            model.phase = None

    def _schedule(self) -> None:
        if self._cancelled or self.next_step >= len(self.script.steps):
            return
        delay = self.script.steps[self.next_step].delay
        self._timer = self.worker.context.timers.call_later(
            delay, self.worker.uid, self._apply
        )

    def _apply(self) -> None:
        worker = self.worker
        if self._cancelled or worker.removed:
            return
        index = self.next_step
        step = self.script.steps[index]
        self._write_logs(step)
        if step.action == "delete":
            worker.delete_now()
        elif step.action == "node-lost":
            self._lose_node()
            # What the step sets itself, a Ready condition of status Unknown
            # for example, overrides the defaults of node loss.
            self._apply_status(step)
        else:
            self._apply_status(step)
        worker.record.script_step = index
        worker.save_record()
        self.next_step = index + 1
        self._schedule()

    def _apply_status(self, step: Step) -> None:
        worker = self.worker
        model = worker.model
        named = {name for name in step.containers if name != ALL_CONTAINERS}
        for name, state in step.containers.items():
            if name == ALL_CONTAINERS:
                for container in model.containers:
                    if container.name not in named:
                        self._set_state(container, state)
                continue
            target = model.container(name)
            if target is None:
                logger.warning(
                    "script names an unknown container",
                    extra={**worker.ids, "container": name},
                )
                continue
            self._set_state(target, state)
        if step.phase is not None:
            model.phase = step.phase
        if step.reason is not None:
            model.reason = step.reason or None
        if step.message is not None:
            model.message = step.message or None
        for condition in step.conditions:
            model.extra_conditions[condition.type] = condition.to_json()
        if model.current_phase() in TERMINAL_PHASES:
            worker.finish()
        else:
            worker.sync_status()

    def _set_state(self, container: ContainerStatus, state: ContainerState) -> None:
        uid = self.worker.uid
        if state.restart_count is not None:
            container.restart_count = state.restart_count
        if state.state == "waiting":
            container.set_waiting(state.reason or "ContainerCreating", state.message)
        elif state.state == "running":
            container.set_running(uid)
            # An empty log exists from the start, as for a real container, so
            # that a follower waits for lines instead of ending at once.
            LogWriter(self.worker.log_paths(container.name)).close()
        else:
            container.set_terminated(
                uid, state.exit_code or 0, reason=state.reason, message=state.message
            )
        if state.ready is not None:
            container.ready = state.ready

    def _lose_node(self) -> None:
        worker = self.worker
        model = worker.model
        worker.node_lost = True
        model.extra_conditions["Ready"] = {"type": "Ready", "status": "False"}
        model.reason = NODE_LOST_REASON
        model.message = NODE_LOST_MESSAGE.format(
            node=worker.context.node_name, pod=worker.name
        )
        logger.info("script marks the pod's node as lost", extra=worker.ids)

    def _write_logs(self, step: Step) -> None:
        for name, log in step.logs.items():
            writer = LogWriter(self.worker.log_paths(name))
            try:
                content = log.content()
                for _ in range(log.repeat):
                    writer.write("stdout", content)
            finally:
                writer.close()
