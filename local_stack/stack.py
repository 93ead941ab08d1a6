"""Bring the whole stack up, take it down and report its state.

Components start in phases: etcd, Kafka and Redis together, then
kube-apiserver once etcd is healthy, then the kubelet stand-in once the
apiserver is healthy, then Flower. A component whose server already runs
(found by its pid file, or by the process listening on its port) is reused,
not restarted.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from local_stack import build, processes
from local_stack.components.apiserver import ApiServer
from local_stack.components.base import Component
from local_stack.components.etcd import Etcd
from local_stack.components.flower import Flower
from local_stack.components.kafka import Kafka
from local_stack.components.kubelet import Kubelet
from local_stack.components.redis import Redis
from local_stack.config import StackConfig
from local_stack.errors import MissingPrerequisiteError, StackError
from local_stack.health import wait_until_healthy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComponentStatus:
    """State of one component as `status` reports it."""

    name: str
    #: "up", "down", "unhealthy" or "skipped".
    state: str
    pid: int | None
    ports: Sequence[int]
    log_path: Path
    detail: str = ""


class Stack:
    """The components of one stack folder and the operations on all of them."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        apiserver = ApiServer(config)
        self.phases: list[list[Component]] = [
            [Etcd(config), Kafka(config), Redis(config)],
            [apiserver],
            [Kubelet(apiserver)],
            [Flower(config)],
        ]

    @property
    def components(self) -> list[Component]:
        """All components in start order."""
        return [component for phase in self.phases for component in phase]

    def component(self, name: str) -> Component:
        """Return the component called `name`."""
        for component in self.components:
            if component.name == name:
                return component
        raise KeyError(name)

    def running_pid(self, component: Component) -> int | None:
        """Return the pid from the pid file if that process is the component."""
        pid = processes.read_pid_file(component.pid_path)
        if pid is None:
            return None
        cmdline = processes.read_cmdline(pid)
        if cmdline is None or not component.owns_cmdline(cmdline):
            return None
        return pid

    def up(self) -> list[str]:
        """Build what is missing, start what is not running, wait until healthy.

        Returns the names of the components this call started, in order.
        On failure it stops those again and raises StackError naming the
        component, the reason and its log.
        """
        started: list[str] = []
        with self._lock():
            active = self._active_components()
            missing = []
            for component in active:
                try:
                    component.check_prerequisites()
                except MissingPrerequisiteError as error:
                    missing.append(str(error))
            if missing:
                raise MissingPrerequisiteError(
                    "\n  ".join(["missing tools:", *missing])
                )
            with build.cache_lock(self.config.cache_dir):
                for component in active:
                    component.ensure_built()
            # Find taken ports before starting anything, so that a conflict
            # does not start and then stop the components before it.
            for component in active:
                if self._find_running(component) is None:
                    component.check_ports_free()
            try:
                for phase in self.phases:
                    self._start_phase([c for c in phase if c in active], started)
            except BaseException:
                if started:
                    logger.error(
                        "stopping what this run started: %s", ", ".join(started)
                    )
                    self._stop([self.component(name) for name in reversed(started)])
                raise
        return started

    def down(self, *, wipe: bool = False) -> list[str]:
        """Stop every component and return the problems left behind.

        A problem is a port still bound after the stop, which means another
        process has it open. With `wipe`, also delete the state folders, the
        certificates and the kubeconfig, which makes the next `up` start
        from empty storage.
        """
        with self._lock():
            self._stop(list(reversed(self.components)))
            problems = []
            for component in self.components:
                for port in component.ports:
                    if not processes.port_is_free(port):
                        holder = (
                            processes.describe_port_holder(port) or "unknown process"
                        )
                        problems.append(
                            f"{component.name}: port {port} is still bound by {holder}"
                        )
            if wipe:
                self._wipe()
        return problems

    def start(self, names: Iterable[str]) -> list[str]:
        """Start the named components only, as `up` would; return those started.

        Tests use it to run a private copy of one component (a second Kafka
        node that a test may stop) from a stack folder of their own.
        """
        wanted = set(names)
        started: list[str] = []
        with self._lock():
            chosen = [c for c in self._active_components() if c.name in wanted]
            with build.cache_lock(self.config.cache_dir):
                for component in chosen:
                    component.ensure_built()
            for phase in self.phases:
                self._start_phase([c for c in phase if c in chosen], started)
        return started

    def stop(self, names: Iterable[str]) -> None:
        """Stop the named components, later ones in start order first."""
        wanted = set(names)
        with self._lock():
            self._stop([c for c in reversed(self.components) if c.name in wanted])

    def status(self) -> list[ComponentStatus]:
        """Probe every component once, without starting or stopping anything."""
        report = []
        for component in self.components:
            reason = component.skip_reason()
            pid = self.running_pid(component)
            note = ""
            if pid is None:
                pid = self._find_by_port(component)
                if pid is not None:
                    note = "pid file missing, `up` or `down` rewrites it"
            if reason is not None and pid is None:
                state, detail = "skipped", reason
            elif pid is None:
                state, detail = "down", ""
            else:
                problem = component.check_health()
                state = "up" if problem is None else "unhealthy"
                detail = "; ".join(text for text in (problem, note) if text)
            report.append(
                ComponentStatus(
                    component.name,
                    state,
                    pid,
                    component.ports,
                    component.log_path,
                    detail,
                )
            )
        return report

    def _active_components(self) -> list[Component]:
        active = []
        for component in self.components:
            reason = component.skip_reason()
            if reason is None:
                active.append(component)
            else:
                logger.warning("%s: skipped because %s", component.name, reason)
        return active

    def _start_phase(self, phase: list[Component], started: list[str]) -> None:
        waiting: list[tuple[Component, int]] = []
        for component in phase:
            pid = self._find_running(component)
            if pid is not None:
                logger.info("%s: already running (pid %d)", component.name, pid)
                waiting.append((component, pid))
                continue
            component.check_ports_free()
            component.directory.mkdir(parents=True, exist_ok=True)
            component.prepare()
            pid = processes.start(
                component.command(),
                log_path=component.log_path,
                pid_path=component.pid_path,
                cwd=component.working_directory(),
                env=component.environment(),
            )
            logger.info(
                "%s: started (pid %d, log %s)", component.name, pid, component.log_path
            )
            started.append(component.name)
            waiting.append((component, pid))

        for component, pid in waiting:
            seconds = wait_until_healthy(
                component.name,
                component.check_health,
                is_running=functools.partial(self._is_running, component, pid),
                timeout=self.config.start_timeout,
                log_path=component.log_path,
            )
            component.after_healthy()
            ports = ", ".join(str(port) for port in component.ports)
            logger.info(
                "%s: healthy after %.1fs (ports %s)", component.name, seconds, ports
            )

    def _is_running(self, component: Component, pid: int) -> bool:
        return self.running_pid(component) == pid

    def _find_running(self, component: Component) -> int | None:
        """Return the component's pid, recovering from a lost or stale pid file."""
        pid = self.running_pid(component)
        if pid is not None:
            return pid
        stale = processes.read_pid_file(component.pid_path)
        if stale is not None:
            logger.info(
                "%s: removing stale pid file %s "
                "(pid %d is not running or is another program)",
                component.name,
                component.pid_path,
                stale,
            )
            component.pid_path.unlink(missing_ok=True)
        holder = self._find_by_port(component)
        if holder is not None:
            logger.info(
                "%s: adopting pid %d, which listens on its port", component.name, holder
            )
            component.directory.mkdir(parents=True, exist_ok=True)
            component.pid_path.write_text(f"{holder}\n")
        return holder

    def _find_by_port(self, component: Component) -> int | None:
        """Return the pid of this component's server found by its ports."""
        for port in component.ports:
            for holder in processes.listening_pids(port):
                cmdline = processes.read_cmdline(holder)
                if cmdline and component.owns_cmdline(cmdline):
                    return holder
        return None

    def _stop(self, components: Sequence[Component]) -> None:
        for component in components:
            pid = self._find_running(component)
            if pid is None:
                continue

            def is_ours(candidate: int, component: Component = component) -> bool:
                cmdline = processes.read_cmdline(candidate)
                return cmdline is not None and component.owns_cmdline(cmdline)

            stop_started = time.monotonic()
            killed = processes.stop(
                pid, timeout=component.stop_timeout, is_ours=is_ours
            )
            seconds = time.monotonic() - stop_started
            component.pid_path.unlink(missing_ok=True)
            if killed:
                logger.warning(
                    "%s: killed pid %d after %.0fs without exiting on SIGTERM",
                    component.name,
                    pid,
                    component.stop_timeout,
                )
            else:
                logger.info(
                    "%s: stopped (pid %d) in %.1fs", component.name, pid, seconds
                )

    def _wipe(self) -> None:
        targets = [c.directory for c in self.components]
        targets += [self.config.stack_dir / "pki"]
        for target in targets:
            if target.exists():
                logger.info("deleting %s", target)
                shutil.rmtree(target)
        self.config.kubeconfig_path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise `up`, `down` and `stop` of one stack folder."""
        self.config.stack_dir.mkdir(parents=True, exist_ok=True)
        with (self.config.stack_dir / ".lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info(
                    "waiting for another local_stack command on %s",
                    self.config.stack_dir,
                )
                fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_no_error(problems: list[str]) -> None:
    """Raise StackError listing `problems`, if there are any."""
    if problems:
        raise StackError("; ".join(problems))
