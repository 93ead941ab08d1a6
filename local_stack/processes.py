"""Start, find and stop the stack's background processes.

Each component runs as the leader of its own session, so stopping it signals
its whole process group, and it is recorded in a pid file holding only the
pid. A pid from a file is trusted only while /proc/PID/cmdline still matches
the component, because pids are reused after a crash or a reboot.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from local_stack.config import HOST

#: Seconds between checks while waiting for a process to exit.
_POLL_INTERVAL = 0.1

#: Text that starts the line written to a log before each start.
START_MARKER = "==== local_stack started"

#: TCP state code of a listening socket in /proc/net/tcp.
_TCP_LISTEN = "0A"


def read_cmdline(pid: int) -> str | None:
    """Return the command line of a live process joined by spaces.

    Returns None when the process does not exist or is a zombie, because a
    zombie has no open ports and only waits to be reaped.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # The state letter follows the command name, which is in brackets
        # and may itself contain spaces or brackets.
        state = stat.rsplit(")", 1)[1].split()[0]
        if state in {"Z", "X"}:
            reap(pid)
            return None
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def reap(pid: int) -> None:
    """Collect the exit status of `pid` if it is a child of this process."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def read_pid_file(path: Path) -> int | None:
    """Return the pid stored in `path`, or None if it is missing or invalid."""
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def start(
    argv: Sequence[str],
    *,
    log_path: Path,
    pid_path: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start `argv` detached from this process and return its pid.

    Standard output and error are appended to `log_path`, after a line that
    marks the start, so one log file keeps the history of restarts.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        log.write(f"\n{START_MARKER} {stamp}: {' '.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=None if env is None else dict(env),
            start_new_session=True,
        )
    pid_path.write_text(f"{process.pid}\n")
    return process.pid


def exit_code(pid: int) -> int | None:
    """Return the exit code of a child that has exited, without blocking."""
    try:
        waited, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if waited == 0:
        return None
    return os.waitstatus_to_exitcode(status)


def stop(pid: int, *, timeout: float, is_ours: Callable[[int], bool]) -> bool:
    """Stop the process group led by `pid`: SIGTERM, then SIGKILL on timeout.

    `is_ours` is checked before every signal so that a reused pid is never
    signalled. Returns True if the process had to be killed.
    """
    if not is_ours(pid):
        return False
    _signal_group(pid, signal.SIGTERM)
    if _wait_for_exit(pid, timeout, is_ours):
        _signal_group(pid, signal.SIGKILL)  # children left behind, if any
        return False
    if is_ours(pid):
        _signal_group(pid, signal.SIGKILL)
        _wait_for_exit(pid, 10.0, is_ours)
    return True


def _signal_group(pid: int, signum: signal.Signals) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        return
    except PermissionError:
        # The process is no longer a group leader, so signal it alone.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _wait_for_exit(pid: int, timeout: float, is_ours: Callable[[int], bool]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap(pid)
        if not is_ours(pid):
            return True
        time.sleep(_POLL_INTERVAL)
    return False


def port_is_free(port: int) -> bool:
    """Return True if a listening socket could be bound on HOST:port now.

    SO_REUSEADDR is set, as the servers set it, so that connections left in
    TIME_WAIT by a stopped server do not count as "in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def port_accepts(port: int, timeout: float = 1.0) -> bool:
    """Return True if a TCP connection to HOST:port succeeds."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def listening_pids(port: int) -> list[int]:
    """Return the pids of processes with a TCP socket listening on `port`.

    Reads /proc/net/tcp and /proc/net/tcp6 and matches socket inodes in
    /proc/*/fd, so it finds processes of other users only when run as root.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == _TCP_LISTEN:
                inodes.add(fields[9])
    if not inodes:
        return []
    targets = {f"socket:[{inode}]" for inode in inodes}
    pids: list[int] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = {str(fd.readlink()) for fd in (proc / "fd").iterdir()}
        except OSError:
            continue
        if links & targets:
            pids.append(int(proc.name))
    return pids


def describe_port_holder(port: int) -> str | None:
    """Return "pid N (command)" for the process listening on `port`, if found."""
    for pid in listening_pids(port):
        cmdline = read_cmdline(pid)
        if cmdline:
            return f"pid {pid} ({' '.join(cmdline.split())[:120]})"
    return None
