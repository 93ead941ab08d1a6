"""Run one command in an execution pod and print its report on stdout.

Usage::

    python3 execution_runner.py [options] -- CMD ARGS...

The runner starts CMD in its own session with stdin from /dev/null and its
stdout and stderr connected to pipes, so the command never writes to the
runner's stdout. It captures each stream as bytes up to a cap. It keeps
reading and counting past the cap, so the command never blocks on a full
pipe. It stops the command at an optional deadline (SIGTERM, then SIGKILL
after a grace period), and it forwards SIGTERM, SIGINT, SIGHUP and SIGQUIT. When the
command and every process it left behind have ended, the runner prints the
report in the ``pod-monitor.report/v1`` format (JSON Lines: one header record
with the outcome and usage, chunk records with the output, one end record)
and exits with the command's exit code, 128+N when signal N killed it, 124 on
timeout, 125 when the runner itself failed, 126 when the command cannot be
executed and 127 when it was not found.

The format is described in docs/report-format.md. This file uses only the
standard library and Python 3.8 syntax, because execution images bring their
own interpreter.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import errno
import hashlib
import json
import os
import resource
import secrets
import selectors
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterator, NoReturn, Sequence

FORMAT = "pod-monitor.report/v1"
RUNNER_NAME = "pod-monitor execution_runner.py 1"

EXIT_TIMED_OUT = 124
EXIT_RUNNER_FAILED = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127

DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024
DEFAULT_KILL_GRACE_SECONDS = 5.0
DEFAULT_CHUNK_BYTES = 32 * 1024
# The format caps the decoded data of one chunk, so that a parser can bound
# the length of a record line before it has read the header.
MAX_CHUNK_BYTES = 64 * 1024

# After the command exits, the runner kills what the command left behind and
# then reads the pipes until EOF for at most this long. A process it could not
# kill (another user's, for example) would otherwise hold the pipes open and
# keep the pod running forever.
DRAIN_SECONDS = 2.0

# Notes are diagnostics for people. These bounds keep the header record far
# below the line length a parser accepts.
MAX_NOTES = 32
MAX_NOTE_CHARS = 2000
MAX_RUNNER_ERROR_CHARS = 8000

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)

ENV_MAX_OUTPUT_BYTES = "POD_MONITOR_RUNNER_MAX_OUTPUT_BYTES"
ENV_TIMEOUT = "POD_MONITOR_RUNNER_TIMEOUT"
ENV_KILL_GRACE = "POD_MONITOR_RUNNER_KILL_GRACE"
ENV_CHUNK_BYTES = "POD_MONITOR_RUNNER_CHUNK_BYTES"
ENV_CGROUP_ROOT = "POD_MONITOR_RUNNER_CGROUP_ROOT"

# prctl(2) options, from <linux/prctl.h>.
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36


class UsageError(Exception):
    """Invalid command line or environment variable."""


class Options:
    """Settings of one run, after command line and environment are merged."""

    def __init__(
        self,
        *,
        command: list[str],
        max_output_bytes: int,
        timeout_seconds: float | None,
        kill_grace_seconds: float,
        chunk_bytes: int,
        cgroup_root: str,
    ) -> None:
        self.command = command
        self.max_output_bytes = max_output_bytes
        self.timeout_seconds = timeout_seconds
        self.kill_grace_seconds = kill_grace_seconds
        self.chunk_bytes = chunk_bytes
        self.cgroup_root = cgroup_root


class _ArgumentParser(argparse.ArgumentParser):
    # argparse prints to stderr and exits on errors. The runner must print a
    # report instead, so errors become exceptions.
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _build_argument_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="execution_runner.py",
        description=(
            "Run CMD, capture its stdout and stderr, and print a "
            "pod-monitor.report/v1 report on stdout."
        ),
        usage="%(prog)s [options] -- CMD [ARGS...]",
    )
    parser.add_argument(
        "--max-output-bytes",
        metavar="BYTES",
        help=(
            "bytes of each stream kept in the report; more is counted, not "
            f"kept (env {ENV_MAX_OUTPUT_BYTES}, default {DEFAULT_MAX_OUTPUT_BYTES})"
        ),
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        help=(
            "seconds after which CMD is stopped and the run counts as timed "
            f"out; 0 means no timeout (env {ENV_TIMEOUT}, default 0)"
        ),
    )
    parser.add_argument(
        "--kill-grace",
        metavar="SECONDS",
        help=(
            "seconds between SIGTERM (at the deadline, or forwarded from the "
            "kubelet) and SIGKILL "
            f"(env {ENV_KILL_GRACE}, default {DEFAULT_KILL_GRACE_SECONDS:g})"
        ),
    )
    parser.add_argument(
        "--chunk-bytes",
        metavar="BYTES",
        help=(
            f"maximum bytes of output in one chunk record, 1 to {MAX_CHUNK_BYTES} "
            f"(env {ENV_CHUNK_BYTES}, default {DEFAULT_CHUNK_BYTES})"
        ),
    )
    parser.add_argument(
        "--cgroup-root",
        metavar="DIR",
        help=(
            "directory where the container's cgroup is mounted "
            f"(env {ENV_CGROUP_ROOT}, default /sys/fs/cgroup)"
        ),
    )
    parser.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        help="the command to run and its arguments, after --",
    )
    return parser


def _parse_int(name: str, text: str, minimum: int, maximum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{name} must be an integer, got {text!r}") from None
    if not minimum <= value <= maximum:
        raise UsageError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def _parse_seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{name} must be a number of seconds, got {text!r}") from None
    # NaN fails both comparisons, so it is rejected here as well.
    if not 0 <= value < float("inf"):
        raise UsageError(f"{name} must be a finite number >= 0, got {text!r}")
    return value


def parse_options(argv: Sequence[str], environ: dict[str, str]) -> Options:
    """Merge command-line options over environment variables.

    Raises UsageError on an invalid value or when no command is given.
    """
    arguments = _build_argument_parser().parse_args(list(argv))
    command = list(arguments.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("no command given; pass it after --, e.g. -- python3 job.py")

    def setting(option: str | None, flag: str, env_name: str) -> tuple[str, str] | None:
        # Returns the text and where it came from, for error messages.
        if option is not None:
            return option, flag
        text = environ.get(env_name)
        return (text, env_name) if text else None

    max_output_bytes = DEFAULT_MAX_OUTPUT_BYTES
    found = setting(
        arguments.max_output_bytes, "--max-output-bytes", ENV_MAX_OUTPUT_BYTES
    )
    if found is not None:
        max_output_bytes = _parse_int(found[1], found[0], 0, 2**62)
    timeout_seconds: float | None = None
    found = setting(arguments.timeout, "--timeout", ENV_TIMEOUT)
    if found is not None:
        timeout_seconds = _parse_seconds(found[1], found[0]) or None
    kill_grace_seconds = DEFAULT_KILL_GRACE_SECONDS
    found = setting(arguments.kill_grace, "--kill-grace", ENV_KILL_GRACE)
    if found is not None:
        kill_grace_seconds = _parse_seconds(found[1], found[0])
    chunk_bytes = DEFAULT_CHUNK_BYTES
    found = setting(arguments.chunk_bytes, "--chunk-bytes", ENV_CHUNK_BYTES)
    if found is not None:
        chunk_bytes = _parse_int(found[1], found[0], 1, MAX_CHUNK_BYTES)
    found = setting(arguments.cgroup_root, "--cgroup-root", ENV_CGROUP_ROOT)
    cgroup_root = found[0] if found is not None else "/sys/fs/cgroup"

    return Options(
        command=command,
        max_output_bytes=max_output_bytes,
        timeout_seconds=timeout_seconds,
        kill_grace_seconds=kill_grace_seconds,
        chunk_bytes=chunk_bytes,
        cgroup_root=cgroup_root,
    )


class Notes:
    """Diagnostics collected during a run, bounded in count and length."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.dropped = 0

    def add(self, text: str) -> None:
        if len(self.items) >= MAX_NOTES - 1:
            self.dropped += 1
            return
        if len(text) > MAX_NOTE_CHARS:
            text = text[: MAX_NOTE_CHARS - 3] + "..."
        self.items.append(text)

    def as_list(self) -> list[str]:
        if self.dropped:
            return [*self.items, f"{self.dropped} more notes were dropped"]
        return list(self.items)


class StreamCapture:
    """Bytes read from one pipe: the first `limit` kept, all of them counted."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.data = bytearray()
        self.total_bytes = 0

    def add(self, block: bytes) -> None:
        self.total_bytes += len(block)
        room = self.limit - len(self.data)
        if room > 0:
            self.data += block[:room]


# --- cgroup memory accounting -------------------------------------------------


def _read_text(path: Path) -> str:
    return path.read_text(encoding="ascii", errors="replace")


def _read_counter(text: str, key: str) -> int | None:
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == key:
            return int(fields[1])
    return None


class CgroupMemory:
    """Memory figures of the container's cgroup, v2 or v1.

    Every read failure becomes a note, because a missing or unreadable cgroup
    file must not fail the run.
    """

    # cgroup v1 reports "no limit" as a page-aligned value near 2**63.
    V1_UNLIMITED = 2**62

    def __init__(self, root: str, notes: Notes) -> None:
        self.notes = notes
        self.version: int | None = None
        self.directory = Path(root)
        if (self.directory / "cgroup.controllers").exists():
            self.version = 2
        elif (self.directory / "memory").is_dir():
            self.version = 1
            self.directory = self.directory / "memory"
        else:
            notes.add(f"no cgroup memory controller found under {root}")

    def _read(self, name: str) -> str | None:
        path = self.directory / name
        try:
            return _read_text(path)
        except OSError as error:
            self.notes.add(f"cannot read {path}: {error.strerror or error}")
            return None

    def _read_int(self, name: str) -> int | None:
        text = self._read(name)
        if text is None:
            return None
        text = text.strip()
        if text == "max":
            return None
        try:
            return int(text)
        except ValueError:
            self.notes.add(f"unexpected content in {name}: {text[:100]!r}")
            return None

    def peak_bytes(self) -> int | None:
        if self.version == 2:
            return self._read_int("memory.peak")
        if self.version == 1:
            return self._read_int("memory.max_usage_in_bytes")
        return None

    def limit_bytes(self) -> int | None:
        if self.version == 2:
            return self._read_int("memory.max")
        if self.version == 1:
            value = self._read_int("memory.limit_in_bytes")
            if value is not None and value >= self.V1_UNLIMITED:
                return None
            return value
        return None

    def oom_kill_count(self) -> int | None:
        """Return the cgroup's OOM kill counter, or None when unknown."""
        name = {2: "memory.events", 1: "memory.oom_control"}.get(self.version or 0)
        if name is None:
            return None
        text = self._read(name)
        if text is None:
            return None
        try:
            count = _read_counter(text, "oom_kill")
        except ValueError:
            count = None
        if count is None:
            # cgroup v1 has the counter only since Linux 4.13.
            self.notes.add(f"no oom_kill counter in {name}")
        return count


# --- process control ----------------------------------------------------------


def _prctl(option: int, value: int) -> str | None:
    """Call prctl(2); return an error text, or None on success."""
    if not sys.platform.startswith("linux"):
        return f"prctl is not available on {sys.platform}"
    try:
        # CDLL(None) opens the interpreter's own symbols, which include libc.
        # ctypes.util.find_library would start ldconfig as a child process
        # and so add to the children's resource usage.
        libc = ctypes.CDLL(None, use_errno=True)
        result = libc.prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError) as error:
        return f"prctl failed: {error}"
    if result != 0:
        return f"prctl failed: {os.strerror(ctypes.get_errno())}"
    return None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def _signal_group(pgid: int, number: int, notes: Notes) -> None:
    try:
        os.killpg(pgid, number)
    except ProcessLookupError:
        pass
    except PermissionError:
        notes.add(
            f"cannot send {_signal_name(number)} to process group {pgid}: "
            "permission denied"
        )


def _descendant_pids(root_pid: int) -> list[int]:
    """Return the pids of all live descendants of root_pid, read from /proc."""
    children: dict[int, list[int]] = {}
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            stat = _read_text(entry / "stat")
        except OSError:
            continue
        # The command name in field 2 may contain spaces and parentheses, so
        # the fields are split after its last closing parenthesis.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) < 2 or fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    pending = [root_pid]
    while pending:
        pid = pending.pop()
        for child in children.get(pid, []):
            found.append(child)
            pending.append(child)
    return found


def _kill_descendants(notes: Notes) -> None:
    """SIGKILL every process the command left running below the runner."""
    for _attempt in range(3):
        pids = _descendant_pids(os.getpid())
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError:
                notes.add(f"cannot kill leftover process {pid}: permission denied")
                return
        time.sleep(0.05)


def _reap(pid_of_interest: int) -> int | None:
    """Reap every exited child; return the wait status of pid_of_interest."""
    status_of_interest = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status_of_interest
        if pid == 0:
            return status_of_interest
        if pid == pid_of_interest:
            status_of_interest = status


class RunResult:
    """Outcome of the command, in the form the header record reports it."""

    def __init__(self) -> None:
        self.outcome = "runner_failed"
        self.exit_code = EXIT_RUNNER_FAILED
        self.process_exit_code: int | None = None
        self.signal: int | None = None
        self.timed_out = False
        self.forwarded_signals: list[str] = []
        self.wall_seconds = 0.0
        # Children's CPU seconds before the command started, subtracted so
        # that the report counts the command alone.
        self.cpu_before = (0.0, 0.0)
        self.runner_error: str | None = None

    def record_status(self, status: int) -> None:
        """Set the outcome from a wait status of the command."""
        if os.WIFSIGNALED(status):
            self.signal = os.WTERMSIG(status)
            self.outcome = "signaled"
            self.exit_code = 128 + self.signal
        else:
            self.process_exit_code = os.WEXITSTATUS(status)
            self.outcome = "exited"
            self.exit_code = self.process_exit_code
        if self.timed_out:
            self.outcome = "timed_out"
            self.exit_code = EXIT_TIMED_OUT


class Supervisor:
    """Runs the command and watches it: output, deadline, signals, exit.

    The capture objects receive the output read so far even when run()
    raises, so a failure report can still carry it.
    """

    def __init__(
        self,
        options: Options,
        captures: tuple[StreamCapture, StreamCapture],
        result: RunResult,
        notes: Notes,
    ) -> None:
        self.options = options
        self.stdout, self.stderr = captures
        self.result = result
        self.notes = notes
        self.received: list[int] = []
        self.wakeup_read = -1
        self.started = 0.0
        self.deadline: float | None = None
        self.kill_at: float | None = None

    def on_signal(self, number: int, _frame: object) -> None:
        self.received.append(number)

    def run(self) -> None:
        """Run the command to its end and record what happened in result."""
        wakeup_read, wakeup_write = os.pipe()
        os.set_blocking(wakeup_read, False)
        os.set_blocking(wakeup_write, False)
        self.wakeup_read = wakeup_read
        signal.set_wakeup_fd(wakeup_write)
        # SIGCHLD needs a Python handler so that its arrival writes to the
        # wakeup pipe and ends the select() call that waits for output.
        signal.signal(signal.SIGCHLD, lambda _number, _frame: None)
        for number in FORWARDED_SIGNALS:
            signal.signal(number, self.on_signal)
        try:
            process = self.spawn()
            if process is None:
                return
            try:
                self.supervise(process)
            except BaseException:
                # Whatever failed in the runner, the command must not
                # outlive it.
                _signal_group(process.pid, signal.SIGKILL, self.notes)
                raise
        finally:
            signal.set_wakeup_fd(-1)
            os.close(wakeup_read)
            os.close(wakeup_write)

    def spawn(self) -> subprocess.Popen[bytes] | None:
        """Start the command, or record why it cannot start and return None."""
        command = self.options.command
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.result.cpu_before = (usage.ru_utime, usage.ru_stime)
        self.started = time.monotonic()
        try:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                close_fds=True,
                # A new session gives the command its own process group,
                # which the runner signals as a whole, and no controlling
                # terminal, so it cannot write to a pod's tty via /dev/tty.
                start_new_session=True,
            )
        except FileNotFoundError as error:
            self.result.outcome = "command_not_found"
            self.result.exit_code = EXIT_NOT_FOUND
            self.notes.add(f"command not found: {error.filename or command[0]}")
        except OSError as error:
            # EACCES, ENOEXEC and the like: the file exists but cannot run.
            self.result.outcome = "command_not_executable"
            self.result.exit_code = EXIT_NOT_EXECUTABLE
            reason = error.strerror or errno.errorcode.get(error.errno or 0)
            self.notes.add(f"cannot execute {command[0]}: {reason}")
        return None

    def supervise(self, process: subprocess.Popen[bytes]) -> None:
        """Read output, enforce the deadline and forward signals to the end."""
        assert process.stdout is not None
        assert process.stderr is not None
        selector = selectors.DefaultSelector()
        selector.register(process.stdout.fileno(), selectors.EVENT_READ, self.stdout)
        selector.register(process.stderr.fileno(), selectors.EVENT_READ, self.stderr)
        selector.register(self.wakeup_read, selectors.EVENT_READ, None)
        if self.options.timeout_seconds is not None:
            self.deadline = self.started + self.options.timeout_seconds

        status = None
        while status is None:
            self.read_ready(selector, self.next_wait())
            self.forward_signals(process.pid)
            self.enforce_deadline(process.pid)
            status = _reap(process.pid)
        self.result.wall_seconds = time.monotonic() - self.started
        # The runner reaped the process itself, so Popen must not wait for it.
        process.returncode = status

        # Processes the command started may still run and hold the pipes
        # open. In a pod they would die with the container anyway, so the
        # runner ends them now, before it prints the report.
        _signal_group(process.pid, signal.SIGKILL, self.notes)
        _kill_descendants(self.notes)
        self.drain(selector, process.pid)
        selector.close()
        process.stdout.close()
        process.stderr.close()

        # Signals that came after the command ended were not forwarded.
        self.result.forwarded_signals.extend(_signal_name(n) for n in self.received)
        self.result.record_status(status)

    def next_wait(self) -> float:
        now = time.monotonic()
        wait = 1.0
        if self.deadline is not None and not self.result.timed_out:
            wait = min(wait, max(0.0, self.deadline - now))
        if self.kill_at is not None:
            wait = min(wait, max(0.0, self.kill_at - now))
        return wait

    def forward_signals(self, pgid: int) -> None:
        while self.received:
            number = self.received.pop(0)
            self.result.forwarded_signals.append(_signal_name(number))
            _signal_group(pgid, number, self.notes)
            if self.kill_at is None:
                self.kill_at = time.monotonic() + self.options.kill_grace_seconds

    def enforce_deadline(self, pgid: int) -> None:
        now = time.monotonic()
        grace = self.options.kill_grace_seconds
        due = self.deadline is not None and now >= self.deadline
        if due and not self.result.timed_out:
            self.result.timed_out = True
            self.notes.add(
                f"timed out after {now - self.started:.3f}s; "
                "sent SIGTERM to the process group"
            )
            _signal_group(pgid, signal.SIGTERM, self.notes)
            if self.kill_at is None:
                self.kill_at = now + grace
        if self.kill_at is not None and now >= self.kill_at:
            self.notes.add(f"sent SIGKILL after a grace period of {grace:g}s")
            _signal_group(pgid, signal.SIGKILL, self.notes)
            self.kill_at = float("inf")

    def drain(self, selector: selectors.BaseSelector, pid: int) -> None:
        """Read the pipes to EOF, for at most DRAIN_SECONDS."""
        drain_until = time.monotonic() + DRAIN_SECONDS
        # The wakeup pipe stays registered, so a single key left means that
        # both output pipes reached EOF.
        while len(selector.get_map()) > 1:
            remaining = drain_until - time.monotonic()
            if remaining <= 0:
                self.notes.add(
                    f"stopped reading output {DRAIN_SECONDS:g}s after the command "
                    "exited because another process still held its pipes open"
                )
                break
            self.read_ready(selector, min(remaining, 0.1))
            _reap(pid)
        _reap(pid)

    def read_ready(self, selector: selectors.BaseSelector, wait: float) -> None:
        for key, _events in selector.select(wait):
            if key.fd == self.wakeup_read:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wakeup_read, 4096)
                continue
            block = os.read(key.fd, 65536)
            if block:
                key.data.add(block)
            else:
                selector.unregister(key.fd)


# --- report encoding ----------------------------------------------------------


def _dump_line(record: dict[str, object]) -> bytes:
    # ensure_ascii=False keeps text readable in `kubectl logs`. Every string
    # written is valid UTF-8, and json escapes all control characters, so a
    # record never contains a raw newline.
    text = json.dumps(
        record, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    )
    return text.encode("utf-8") + b"\n"


def _next_chunk(data: bytes, start: int, chunk_bytes: int) -> tuple[int, str, str]:
    """Return (end, field, value) for the chunk of data that begins at start.

    The chunk is "text" when its bytes are valid UTF-8, and it then ends on
    a character boundary; otherwise it is "base64".
    """
    piece = data[start : start + chunk_bytes]
    try:
        return start + len(piece), "text", piece.decode("utf-8")
    except UnicodeDecodeError as error:
        # A character cut by the chunk boundary shows as an incomplete
        # sequence in the last three bytes. Ending the chunk before it keeps
        # the chunk text, and the character starts the next chunk.
        cut = error.start
        at_end = start + chunk_bytes < len(data) and cut > 0 and len(piece) - cut <= 3
        if at_end and error.reason == "unexpected end of data":
            return start + cut, "text", piece[:cut].decode("utf-8")
    return start + len(piece), "base64", base64.b64encode(piece).decode("ascii")


def encode_report(
    header: dict[str, Any],
    stdout: bytes,
    stderr: bytes,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[bytes]:
    """Yield the report's lines: header, chunk records, end record.

    header contains the header fields except type, format, nonce, seq and
    each stream's captured_bytes and sha256, which this function sets.
    Chunks of stdout and stderr alternate, so a log cut short still holds the
    start of both streams.
    """
    if not 1 <= chunk_bytes <= MAX_CHUNK_BYTES:
        raise ValueError(f"chunk_bytes must be between 1 and {MAX_CHUNK_BYTES}")
    nonce = secrets.token_hex(16)
    record: dict[str, Any] = {
        "type": "header",
        "format": FORMAT,
        "nonce": nonce,
        "seq": 0,
    }
    record.update(header)
    for name, data in (("stdout", stdout), ("stderr", stderr)):
        summary = dict(record[name])
        summary["captured_bytes"] = len(data)
        summary["sha256"] = hashlib.sha256(data).hexdigest()
        record[name] = summary
    yield _dump_line(record)

    seq = 1
    positions = {"stdout": 0, "stderr": 0}
    streams = (("stdout", stdout), ("stderr", stderr))
    while any(positions[name] < len(data) for name, data in streams):
        for name, data in streams:
            start = positions[name]
            if start >= len(data):
                continue
            end, field, value = _next_chunk(data, start, chunk_bytes)
            yield _dump_line(
                {
                    "type": "chunk",
                    "nonce": nonce,
                    "seq": seq,
                    "stream": name,
                    "offset": start,
                    field: value,
                }
            )
            positions[name] = end
            seq += 1
    yield _dump_line({"type": "end", "nonce": nonce, "seq": seq, "records": seq + 1})


def _stream_summary(capture: StreamCapture) -> dict[str, object]:
    return {
        "original_bytes": capture.total_bytes,
        "truncated": capture.total_bytes > len(capture.data),
    }


def _max_rss_bytes() -> int:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    if sys.platform == "darwin":
        return int(usage.ru_maxrss)
    return int(usage.ru_maxrss) * 1024


def build_header(
    result: RunResult,
    *,
    stdout: StreamCapture,
    stderr: StreamCapture,
    cgroup: CgroupMemory | None,
    oom_kills_before: int | None,
    notes: Notes,
) -> dict[str, Any]:
    """Collect the header fields that encode_report does not set itself."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = limit = oom_kills_after = None
    if cgroup is not None:
        peak = cgroup.peak_bytes()
        limit = cgroup.limit_bytes()
        oom_kills_after = cgroup.oom_kill_count()
    oom_killed: bool | None = None
    if oom_kills_before is not None and oom_kills_after is not None:
        oom_killed = oom_kills_after > oom_kills_before
    runner_error = result.runner_error
    if runner_error is not None and len(runner_error) > MAX_RUNNER_ERROR_CHARS:
        runner_error = runner_error[-MAX_RUNNER_ERROR_CHARS:]
    return {
        "runner": RUNNER_NAME,
        "outcome": result.outcome,
        "exit_code": result.exit_code,
        "process_exit_code": result.process_exit_code,
        "signal": result.signal,
        "signal_name": _signal_name(result.signal) if result.signal else None,
        "timed_out": result.timed_out,
        "oom_killed": oom_killed,
        "forwarded_signals": result.forwarded_signals[:MAX_NOTES],
        "usage": {
            "wall_seconds": round(result.wall_seconds, 6),
            "user_cpu_seconds": round(
                max(0.0, usage.ru_utime - result.cpu_before[0]), 6
            ),
            "system_cpu_seconds": round(
                max(0.0, usage.ru_stime - result.cpu_before[1]), 6
            ),
            "max_rss_bytes": _max_rss_bytes(),
            "cgroup_memory_peak_bytes": peak,
            "cgroup_memory_limit_bytes": limit,
        },
        "stdout": _stream_summary(stdout),
        "stderr": _stream_summary(stderr),
        "notes": notes.as_list(),
        "runner_error": runner_error,
    }


def _write_lines(lines: Iterator[bytes]) -> None:
    out = sys.stdout.buffer
    for line in lines:
        out.write(line)
    out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command given in argv, print the report and return the exit code."""
    if argv is None:
        argv = sys.argv[1:]
    notes = Notes()
    result = RunResult()
    stdout = StreamCapture("stdout", 0)
    stderr = StreamCapture("stderr", 0)
    chunk_bytes = DEFAULT_CHUNK_BYTES
    cgroup: CgroupMemory | None = None
    oom_kills_before: int | None = None
    try:
        options = parse_options(argv, dict(os.environ))
        chunk_bytes = options.chunk_bytes
        stdout.limit = stderr.limit = options.max_output_bytes
        # A non-dumpable process has its /proc/<pid> entries owned by root and
        # refuses ptrace, so the command cannot open the runner's stdout
        # through /proc/<pid>/fd/1 unless it has CAP_SYS_PTRACE.
        error = _prctl(PR_SET_DUMPABLE, 0)
        if error:
            notes.add(f"cannot make the runner non-dumpable: {error}")
        # As a subreaper the runner inherits orphaned descendants, so it can
        # kill them before printing the report even when it is not PID 1.
        if os.getpid() != 1:
            error = _prctl(PR_SET_CHILD_SUBREAPER, 1)
            if error:
                notes.add(f"cannot become a child subreaper: {error}")
        cgroup = CgroupMemory(options.cgroup_root, notes)
        oom_kills_before = cgroup.oom_kill_count()
        Supervisor(options, (stdout, stderr), result, notes).run()
    except UsageError as error:
        result.runner_error = f"invalid usage: {error}"
        notes.add("run `execution_runner.py --help` for the options")
    except Exception as error:  # noqa: BLE001 - the report must say what failed
        result.outcome = "runner_failed"
        result.exit_code = EXIT_RUNNER_FAILED
        result.runner_error = "".join(
            traceback.format_exception(type(error), error, error.__traceback__)
        )

    try:
        header = build_header(
            result,
            stdout=stdout,
            stderr=stderr,
            cgroup=cgroup,
            oom_kills_before=oom_kills_before,
            notes=notes,
        )
        _write_lines(
            encode_report(header, bytes(stdout.data), bytes(stderr.data), chunk_bytes)
        )
    except BrokenPipeError:
        # The log's reader is gone, so the exit code alone reports the outcome.
        pass
    except Exception:  # noqa: BLE001 - last resort, the report itself failed
        traceback.print_exc()
        return EXIT_RUNNER_FAILED
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
