"""Container processes: start, collect stdout and stderr, enforce memory, wait.

Each container is one local process started in a new session, so the process
and everything it starts can be signalled as one process group. When the
main process exits, the rest of its session is killed, as the end of a
container's PID namespace would kill it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from local_stack.kubelet.logs import LogWriter, Stream
from local_stack.kubelet.memory import CgroupV1Memory, ContainerCgroup, RssPoller

logger = logging.getLogger(__name__)

#: Seconds between two RSS measurements when no cgroup enforces the limit.
RSS_POLL_SECONDS = 0.1

#: Seconds to keep reading output after the main process exited. Processes
#: that left the session can keep the pipes open forever.
DRAIN_SECONDS = 2.0

_READ_BYTES = 64 * 1024

# Joins the cgroup named by $0 and then runs the command unchanged, so the
# process is charged to the cgroup from its first allocation.
_JOIN_CGROUP = 'echo $$ > "$0" && exec "$@"'


class StartError(Exception):
    """The container process could not be started. The message gives the cause."""


@dataclass(frozen=True)
class LaunchSpec:
    """How to start one container process."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    memory_limit_bytes: int | None = None


@dataclass(frozen=True)
class ExitStatus:
    """End of a container process: exit code, OOM kill and times in seconds
    since the epoch."""

    exit_code: int
    oom_killed: bool
    started_at: float
    finished_at: float


def exit_code_of(returncode: int) -> int:
    """Map a Popen return code to a container exit code: 128 + signal number
    for a process killed by a signal, as container runtimes report it."""
    return 128 - returncode if returncode < 0 else returncode


def process_start_ticks(pid: int) -> int | None:
    """Return the start time of a process in clock ticks since boot, which
    distinguishes a process from a later one with the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    # fields[0] is field 3 of proc(5), so starttime (field 22) is fields[19].
    return int(fields[19])


def kill_leftover(pid: int, start_ticks: int | None, cgroup: Path | None) -> bool:
    """Kill the process group of a container started by an earlier run of the
    stand-in, if that process still exists. Return whether it did."""
    killed = False
    if start_ticks is not None and process_start_ticks(pid) == start_ticks:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
            killed = True
    if cgroup is not None and cgroup.exists():
        leftover = ContainerCgroup(cgroup)
        leftover.kill_all()
        time.sleep(0.05)
        leftover.remove()
    return killed


class ContainerProcess:
    """One container process and the pump that moves its output to its log."""

    def __init__(
        self,
        container_id: str,
        spec: LaunchSpec,
        log: LogWriter,
        memory: CgroupV1Memory | None,
    ) -> None:
        self.container_id = container_id
        self.spec = spec
        self.log = log
        self._memory = memory
        self._cgroup: ContainerCgroup | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.oom_killed = False

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def cgroup_path(self) -> Path | None:
        return None if self._cgroup is None else self._cgroup.path

    def start(self) -> None:
        """Start the process. Raise StartError if the executable or the working
        directory is missing, or the system rejects the start."""
        spec = self.spec
        if not spec.argv:
            raise StartError(
                "no command specified: the container has no command or args"
            )
        if not spec.cwd.is_dir():
            raise StartError(f'working directory "{spec.cwd}" does not exist')
        executable = _resolve_executable(spec.argv[0], spec.env, spec.cwd)
        argv = [executable, *spec.argv[1:]]

        if spec.memory_limit_bytes is not None and self._memory is not None:
            try:
                self._cgroup = self._memory.create(
                    self.container_id, spec.memory_limit_bytes
                )
            except OSError as error:
                raise StartError(f"failed to create memory cgroup: {error}") from error
            argv = ["/bin/sh", "-c", _JOIN_CGROUP, str(self._cgroup.procs_file), *argv]

        try:
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=spec.env,
                cwd=spec.cwd,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as error:
            self._remove_cgroup()
            raise StartError(f"failed to start {executable}: {error}") from error
        self.started_at = time.time()

    def terminate(self) -> None:
        """Send SIGTERM to the container's process group."""
        self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL to the container's process group and cgroup."""
        self._signal_group(signal.SIGKILL)
        if self._cgroup is not None:
            self._cgroup.kill_all()

    def wait(self) -> ExitStatus:
        """Move output to the log until the process ends, then return how it
        ended. Runs in the caller's thread. The log is closed afterwards."""
        popen = self._popen
        if popen is None or popen.stdout is None or popen.stderr is None:
            raise RuntimeError("wait() called before start()")
        try:
            finished_at = self._pump(popen)
            returncode = popen.wait()
        finally:
            self.log.close()
        oom_killed = self.oom_killed
        if self._cgroup is not None:
            oom_killed = oom_killed or self._cgroup.oom_kill_count() > 0
            self._cgroup.kill_all()
            self._remove_cgroup()
        return ExitStatus(
            exit_code=exit_code_of(returncode),
            oom_killed=oom_killed,
            started_at=self.started_at,
            finished_at=finished_at,
        )

    def _pump(self, popen: subprocess.Popen[bytes]) -> float:
        """Copy output to the log until both pipes close, and return the time
        at which the main process exited."""
        assert popen.stdout is not None and popen.stderr is not None
        selector = selectors.DefaultSelector()
        streams: dict[int, Stream] = {
            popen.stdout.fileno(): "stdout",
            popen.stderr.fileno(): "stderr",
        }
        for fd, stream in streams.items():
            selector.register(fd, selectors.EVENT_READ, stream)
        pidfd = os.pidfd_open(popen.pid)
        selector.register(pidfd, selectors.EVENT_READ, None)

        rss = None
        if self.spec.memory_limit_bytes is not None and self._cgroup is None:
            rss = RssPoller(popen.pid)
        next_poll = time.monotonic()
        finished_at: float | None = None
        drain_deadline = float("inf")
        try:
            while streams or finished_at is None:
                now = time.monotonic()
                if now >= drain_deadline:
                    break
                timeout = min(drain_deadline - now, RSS_POLL_SECONDS if rss else 3600.0)
                for key, _ in selector.select(timeout):
                    if key.data is None:
                        finished_at = time.time()
                        selector.unregister(pidfd)
                        # The container ends with its main process. Whatever
                        # the process left behind would keep the pipes open.
                        self._signal_group(signal.SIGKILL)
                        drain_deadline = time.monotonic() + DRAIN_SECONDS
                        rss = None
                        continue
                    data = os.read(key.fd, _READ_BYTES)
                    if data:
                        self.log.write(key.data, data)
                    else:
                        selector.unregister(key.fd)
                        del streams[key.fd]
                if rss is not None and time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + RSS_POLL_SECONDS
                    self._check_rss(rss)
        finally:
            selector.close()
            os.close(pidfd)
            popen.stdout.close()
            popen.stderr.close()
        return time.time() if finished_at is None else finished_at

    def _check_rss(self, rss: RssPoller) -> None:
        limit = self.spec.memory_limit_bytes
        if limit is None or self.oom_killed:
            return
        used = rss.rss_bytes()
        if used > limit:
            logger.info(
                "container over its memory limit, killing it",
                extra={
                    "container_id": self.container_id,
                    "rss_bytes": used,
                    "limit_bytes": limit,
                },
            )
            self.oom_killed = True
            self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: signal.Signals) -> None:
        if self._popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signum)

    def _remove_cgroup(self) -> None:
        if self._cgroup is None:
            return
        # rmdir fails while the kernel still counts exiting processes.
        for _ in range(20):
            if (
                not self._cgroup.procs_file.exists()
                or not self._cgroup.procs_file.read_text()
            ):
                break
            time.sleep(0.01)
        self._cgroup.remove()


def _resolve_executable(command: str, env: dict[str, str], cwd: Path) -> str:
    if "/" in command:
        path = Path(command) if Path(command).is_absolute() else cwd / command
        if not path.is_file() or not os.access(path, os.X_OK):
            raise StartError(
                f'exec: "{command}": stat {command}: no such file or directory'
            )
        return str(path)
    found = shutil.which(command, path=env.get("PATH", os.defpath))
    if found is None:
        raise StartError(f'exec: "{command}": executable file not found in $PATH')
    return found
