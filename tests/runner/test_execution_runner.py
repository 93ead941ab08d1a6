"""Run the real runner on programs that behave in known ways, then parse it."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.execution_runner import encode_report
from tasks.report import FailureReason, Outcome, parse_report
from tests.runner.support import (
    PYTHON,
    RUN_TIMEOUT_SECONDS,
    RUNNER,
    RunnerRun,
    finish,
    python_command,
    run_runner,
)

PYTHON38 = "/root/.pyenv/versions/3.8.18/bin/python"

WRITE_FILES = (
    "import sys\n"
    "sys.stdout.buffer.write(open(sys.argv[1], 'rb').read())\n"
    "sys.stderr.buffer.write(open(sys.argv[2], 'rb').read())\n"
)


def write_outputs(tmp_path: Path, stdout: bytes, stderr: bytes) -> list[str]:
    """Return a command that writes exactly stdout and stderr."""
    (tmp_path / "out").write_bytes(stdout)
    (tmp_path / "err").write_bytes(stderr)
    return python_command(WRITE_FILES, str(tmp_path / "out"), str(tmp_path / "err"))


def process_gone(pid: int) -> bool:
    """Return whether pid has exited, waiting up to two seconds."""
    for _ in range(40):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


# --- outcomes


# The runner must work on the oldest Python that execution images bring.
INTERPRETERS = [
    PYTHON,
    pytest.param(
        PYTHON38,
        marks=pytest.mark.skipif(not Path(PYTHON38).exists(), reason="no Python 3.8"),
        id="python3.8",
    ),
]


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_successful_command_reports_exit_zero(interpreter: str) -> None:
    run = run_runner(python_command("print('hello')"), interpreter=interpreter)

    assert run.returncode == 0
    assert run.report.exit_code == 0
    assert run.report.outcome is Outcome.EXITED
    assert run.report.header.process_exit_code == 0
    assert run.report.stdout == b"hello\n"
    assert run.report.stderr == b""
    assert not run.report.timed_out
    assert run.stderr == b""


def test_nonzero_exit_is_passed_through() -> None:
    run = run_runner(python_command("import sys; sys.exit(3)"))

    assert run.returncode == 3
    assert run.report.exit_code == 3
    assert run.report.header.process_exit_code == 3
    assert run.report.outcome is Outcome.EXITED
    assert run.report.signal is None


def test_stderr_is_captured_separately() -> None:
    source = "import sys; print('out'); print('err', file=sys.stderr)"

    run = run_runner(python_command(source))

    assert run.report.stdout == b"out\n"
    assert run.report.stderr == b"err\n"


def test_stdin_is_empty() -> None:
    run = run_runner(python_command("import sys; print(len(sys.stdin.read()))"))

    assert run.report.stdout == b"0\n"


def test_usage_is_measured() -> None:
    # The loop counts CPU time, not wall time, so a busy machine that
    # schedules the program less often cannot make it use less CPU.
    source = "import time\nwhile time.process_time() < 0.3: pass"

    run = run_runner(python_command(source))
    usage = run.report.usage

    assert usage.user_cpu_seconds + usage.system_cpu_seconds >= 0.3
    assert usage.wall_seconds >= 0.3
    assert usage.max_rss_bytes is not None
    assert usage.max_rss_bytes > 1_000_000


# --- exact bytes


def test_text_and_raw_bytes_round_trip(tmp_path: Path) -> None:
    text = "ascii, é, ✓, 🙂, Ω, \u2028 line separator, \x00 nul\r\n".encode()
    raw = bytes(range(256)) * 3 + b"\xed\xa0\x80 surrogate \xc3 cut"
    command = write_outputs(tmp_path, text * 5 + raw, raw + text)

    # Seven-byte chunks cut most multi-byte characters.
    run = run_runner(command, options=["--chunk-bytes", "7"])

    assert run.report.stdout == text * 5 + raw
    assert run.report.stderr == raw + text


def test_output_over_cap_is_truncated_with_size(tmp_path: Path) -> None:
    stdout = os.urandom(3 * 1024 * 1024)
    stderr = b"e" * (2 * 1024 * 1024 + 1)
    command = write_outputs(tmp_path, stdout, stderr)

    run = run_runner(command)
    header = run.report.header

    assert run.returncode == 0
    assert run.report.stdout == stdout[: 1024 * 1024]
    assert run.report.stderr == stderr[: 1024 * 1024]
    assert header.stdout.original_bytes == len(stdout)
    assert header.stderr.original_bytes == len(stderr)
    assert header.stdout.truncated
    assert header.stderr.truncated
    assert run.report.stdout_truncated


def test_output_at_cap_is_not_truncated(tmp_path: Path) -> None:
    command = write_outputs(tmp_path, b"x" * 100, b"")

    run = run_runner(command, options=["--max-output-bytes", "100"])

    assert run.report.stdout == b"x" * 100
    assert not run.report.header.stdout.truncated


def test_env_var_sets_cap_and_option_overrides(tmp_path: Path) -> None:
    command = write_outputs(tmp_path, b"0123456789abcdef", b"")
    env = {"POD_MONITOR_RUNNER_MAX_OUTPUT_BYTES": "10"}

    by_env = run_runner(command, env=env)
    by_option = run_runner(command, env=env, options=["--max-output-bytes", "4"])

    assert by_env.report.stdout == b"0123456789"
    assert by_option.report.stdout == b"0123"


# --- output that imitates a report


def forged_report(exit_code: int) -> bytes:
    header = {
        "runner": "forger",
        "outcome": "exited",
        "exit_code": exit_code,
        "process_exit_code": exit_code,
        "signal": None,
        "signal_name": None,
        "timed_out": False,
        "oom_killed": False,
        "forwarded_signals": [],
        "usage": {
            "wall_seconds": 0.0,
            "user_cpu_seconds": 0.0,
            "system_cpu_seconds": 0.0,
            "max_rss_bytes": 0,
            "cgroup_memory_peak_bytes": None,
            "cgroup_memory_limit_bytes": None,
        },
        "stdout": {"original_bytes": 6, "truncated": False},
        "stderr": {"original_bytes": 0, "truncated": False},
        "notes": [],
        "runner_error": None,
    }
    return b"".join(encode_report(header, b"forged", b""))


def test_report_shaped_output_stays_output(tmp_path: Path) -> None:
    forged = forged_report(0)
    guessed = b'{"type":"end","nonce":"' + b"0" * 32 + b'","seq":1,"records":2}\n'
    command = write_outputs(tmp_path, forged + guessed, guessed + forged)

    run = run_runner(command)

    assert run.returncode == 0
    assert run.report.stdout == forged + guessed
    assert run.report.stderr == guessed + forged
    assert run.parsed.headers_seen == 1


WRITE_TO_RUNNER_STDOUT = (
    "import os, sys\n"
    "try:\n"
    "    fd = os.open(f'/proc/{os.getppid()}/fd/1', os.O_WRONLY)\n"
    "except OSError as error:\n"
    "    print(type(error).__name__, file=sys.stderr)\n"
    "else:\n"
    "    os.write(fd, open(sys.argv[1], 'rb').read())\n"
    "    print('wrote', file=sys.stderr)\n"
    "print('genuine')\n"
    "sys.exit(7)\n"
)


def test_forged_report_through_proc_loses(tmp_path: Path) -> None:
    (tmp_path / "forged").write_bytes(forged_report(0))

    run = run_runner(python_command(WRITE_TO_RUNNER_STDOUT, str(tmp_path / "forged")))

    assert run.returncode == 7
    assert run.report.exit_code == 7
    assert run.report.stdout == b"genuine\n"
    if run.report.stderr == b"wrote\n":
        # Root with CAP_SYS_PTRACE can open the non-dumpable runner's fds,
        # so the forgery lands in the log before the genuine report.
        assert run.parsed.headers_seen == 2
    else:
        assert run.parsed.headers_seen == 1


# Runs the runner with prctl(PR_SET_DUMPABLE) turned into a no-op, to show
# that the defense and not something else stops the write.
DUMPABLE_RUNNER = (
    "import sys\n"
    f"sys.path.insert(0, {str(RUNNER.parent)!r})\n"
    "import execution_runner as runner\n"
    "prctl = runner._prctl\n"
    "def skip_dumpable(option, value):\n"
    "    return None if option == runner.PR_SET_DUMPABLE else prctl(option, value)\n"
    "runner._prctl = skip_dumpable\n"
    "sys.exit(runner.main(sys.argv[1:]))\n"
)


def run_as_nobody(runner_command: list[str], directory: Path) -> RunnerRun:
    """Run the runner and its program as uid 65534 and parse the report.

    A shell of that user creates the pipe to the runner's stdout, because
    reopening a pipe through /proc also checks the pipe's owner and mode.
    """
    python = "/usr/bin/python3.11"
    forged = directory / "forged"
    forged.write_bytes(forged_report(0))
    forged.chmod(0o644)
    script = " ".join(shlex.quote(part) for part in runner_command)
    program = shlex.join([python, "-c", WRITE_TO_RUNNER_STDOUT, str(forged)])
    completed = subprocess.run(
        ["/bin/sh", "-c", f"{script} -- {program} | cat"],
        capture_output=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
        user=65534,
        group=65534,
        extra_groups=[],
    )
    # sh returns the exit code of cat, so the runner's own is not checked.
    return finish(0, completed.stdout, completed.stderr)


needs_root_and_system_python = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/bin/python3.11").exists(),
    reason="needs root to switch users and /usr/bin/python3.11 for uid 65534",
)


@pytest.fixture
def shared_directory() -> Iterator[Path]:
    """Yield a temporary directory that uid 65534 can read."""
    with tempfile.TemporaryDirectory(prefix="pod-monitor-") as name:
        path = Path(name)
        path.chmod(0o755)
        yield path


@needs_root_and_system_python
def test_same_user_cannot_open_runner_stdout(shared_directory: Path) -> None:
    runner = ["/usr/bin/python3.11", str(RUNNER)]

    run = run_as_nobody(runner, shared_directory)

    assert run.report.stderr == b"PermissionError\n"
    assert run.report.stdout == b"genuine\n"
    assert run.parsed.headers_seen == 1


@needs_root_and_system_python
def test_dumpable_runner_lets_forgery_in(shared_directory: Path) -> None:
    wrapper = shared_directory / "dumpable_runner.py"
    wrapper.write_text(DUMPABLE_RUNNER)
    wrapper.chmod(0o644)

    run = run_as_nobody(["/usr/bin/python3.11", str(wrapper)], shared_directory)

    assert run.report.stderr == b"wrote\n"
    assert run.parsed.headers_seen == 2
    assert run.report.exit_code == 7
    assert run.report.stdout == b"genuine\n"


# --- memory

MEMORY_LIMIT_BYTES = 512 * 1024 * 1024

# The wrapper lowers RLIMIT_AS and then runs the rest of its arguments, so
# the limit applies to the program and not to the runner.
LIMIT_WRAPPER = (
    "import os, resource, sys\n"
    "limit = int(sys.argv[1])\n"
    "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)
ALLOCATE_FOREVER = (
    "blocks = []\nwhile True:\n    blocks.append(b'x' * (16 * 1024 * 1024))\n"
)


def test_allocation_past_memory_limit_fails_program() -> None:
    command = [
        *python_command(LIMIT_WRAPPER, str(MEMORY_LIMIT_BYTES)),
        PYTHON,
        "-c",
        ALLOCATE_FOREVER,
    ]

    run = run_runner(command)
    usage = run.report.usage

    assert run.returncode == 1
    assert run.report.outcome is Outcome.EXITED
    assert b"MemoryError" in run.report.stderr
    assert usage.max_rss_bytes is not None
    assert usage.max_rss_bytes > MEMORY_LIMIT_BYTES // 2
    assert usage.max_rss_bytes <= MEMORY_LIMIT_BYTES
    assert run.report.header.oom_killed is not True


def fake_cgroup_v2(root: Path, oom_kills: int) -> None:
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (root / "memory.peak").write_text("123456789\n")
    (root / "memory.max").write_text("1073741824\n")
    (root / "memory.events").write_text(
        f"low 0\nhigh 0\nmax 3\noom 1\noom_kill {oom_kills}\n"
    )


def test_oom_kill_is_reported_from_cgroup_counter(tmp_path: Path) -> None:
    fake_cgroup_v2(tmp_path, oom_kills=0)
    # The program plays the kernel: it counts an OOM kill in the cgroup and
    # dies from SIGKILL, as a process chosen by the OOM killer does.
    source = (
        "import os, signal, sys\n"
        "open(sys.argv[1], 'w').write('oom 2\\noom_kill 1\\n')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    command = python_command(source, str(tmp_path / "memory.events"))

    run = run_runner(command, options=["--cgroup-root", str(tmp_path)])
    header = run.report.header

    assert run.returncode == 137
    assert header.outcome is Outcome.SIGNALED
    assert header.signal_name == "SIGKILL"
    assert header.oom_killed is True
    assert header.usage.cgroup_memory_peak_bytes == 123456789
    assert header.usage.cgroup_memory_limit_bytes == 1073741824


def test_unchanged_oom_counter_means_no_oom_kill(tmp_path: Path) -> None:
    fake_cgroup_v2(tmp_path, oom_kills=4)
    (tmp_path / "memory.max").write_text("max\n")

    run = run_runner(["true"], options=["--cgroup-root", str(tmp_path)])

    assert run.report.header.oom_killed is False
    assert run.report.usage.cgroup_memory_limit_bytes is None


def test_unreadable_cgroup_file_becomes_note(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("")

    run = run_runner(["true"], options=["--cgroup-root", str(tmp_path)])
    notes = " ".join(run.report.header.notes)

    assert run.returncode == 0
    assert run.report.usage.cgroup_memory_peak_bytes is None
    assert run.report.header.oom_killed is None
    assert "memory.peak" in notes
    assert "memory.events" in notes


def test_missing_cgroup_becomes_note(tmp_path: Path) -> None:
    run = run_runner(["true"], options=["--cgroup-root", str(tmp_path / "none")])

    assert run.returncode == 0
    assert any("no cgroup memory controller" in n for n in run.report.header.notes)


# --- deadline and signals


def test_deadline_stops_program_and_keeps_output() -> None:
    source = "import time; print('before', flush=True); time.sleep(30)"

    started = time.monotonic()
    run = run_runner(python_command(source), options=["--timeout", "1"])
    elapsed = time.monotonic() - started

    assert run.returncode == 124
    assert run.report.exit_code == 124
    assert run.report.timed_out
    assert run.report.outcome is Outcome.TIMED_OUT
    assert run.report.signal == signal.SIGTERM
    assert run.report.stdout == b"before\n"
    assert elapsed < 10


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_deadline_kills_program_that_ignores_sigterm(interpreter: str) -> None:
    source = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring', flush=True)\n"
        "time.sleep(30)\n"
    )

    run = run_runner(
        python_command(source),
        options=["--timeout", "0.5", "--kill-grace", "0.5"],
        interpreter=interpreter,
    )

    assert run.returncode == 124
    assert run.report.timed_out
    assert run.report.signal == signal.SIGKILL
    assert run.report.stdout == b"ignoring\n"
    assert run.report.usage.wall_seconds >= 1.0
    assert any("SIGKILL" in note for note in run.report.header.notes)


def test_deadline_lets_program_clean_up() -> None:
    source = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (print('cleanup'), sys.exit(0)))\n"
        "time.sleep(30)\n"
    )

    run = run_runner(python_command(source), options=["--timeout", "0.5"])

    assert run.returncode == 124
    assert run.report.timed_out
    assert run.report.header.process_exit_code == 0
    assert run.report.stdout == b"cleanup\n"


def test_timeout_from_env_var() -> None:
    run = run_runner(["sleep", "30"], env={"POD_MONITOR_RUNNER_TIMEOUT": "0.5"})

    assert run.returncode == 124
    assert run.report.timed_out


def test_program_killed_by_signal_is_reported() -> None:
    source = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"

    run = run_runner(python_command(source))

    assert run.returncode == 128 + signal.SIGTERM
    assert run.report.outcome is Outcome.SIGNALED
    assert run.report.signal == signal.SIGTERM
    assert run.report.header.signal_name == "SIGTERM"
    assert run.report.header.process_exit_code is None


def test_sigterm_to_runner_is_forwarded(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    source = (
        "import pathlib, sys, time\n"
        "print('started', flush=True)\n"
        "pathlib.Path(sys.argv[1]).touch()\n"
        "time.sleep(30)\n"
    )
    process = subprocess.Popen(
        [PYTHON, str(RUNNER), "--", *python_command(source, str(marker))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    for _ in range(200):
        if marker.exists():
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_SECONDS)
    run = finish(process.returncode, stdout, stderr)

    assert marker.exists()
    assert run.returncode == 128 + signal.SIGTERM
    assert run.report.header.forwarded_signals == ["SIGTERM"]
    assert run.report.signal == signal.SIGTERM
    assert run.report.stdout == b"started\n"


def test_background_process_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    command = ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; echo done"]

    started = time.monotonic()
    run = run_runner(command)
    elapsed = time.monotonic() - started

    assert run.report.stdout == b"done\n"
    assert process_gone(int(pid_file.read_text()))
    assert elapsed < 10
    assert not any("held its pipes" in note for note in run.report.header.notes)


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_process_in_new_session_is_killed(tmp_path: Path, interpreter: str) -> None:
    pid_file = tmp_path / "pid"
    source = (
        "import subprocess, sys\n"
        "child = subprocess.Popen(['setsid', 'sleep', '60'])\n"
        "open(sys.argv[1], 'w').write(str(child.pid))\n"
    )

    run = run_runner(python_command(source, str(pid_file)), interpreter=interpreter)

    assert run.returncode == 0
    assert process_gone(int(pid_file.read_text()))


# --- commands that cannot run


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_missing_command_exits_127(interpreter: str) -> None:
    run = run_runner(["/nonexistent/command", "arg"], interpreter=interpreter)

    assert run.returncode == 127
    assert run.report.outcome is Outcome.COMMAND_NOT_FOUND
    assert run.report.exit_code == 127
    assert any("/nonexistent/command" in note for note in run.report.header.notes)


def test_command_not_on_path_exits_127() -> None:
    run = run_runner(["no-such-command-for-pod-monitor"])

    assert run.returncode == 127
    assert run.report.outcome is Outcome.COMMAND_NOT_FOUND


def test_non_executable_file_exits_126(tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)

    run = run_runner([str(script)])

    assert run.returncode == 126
    assert run.report.outcome is Outcome.COMMAND_NOT_EXECUTABLE
    assert any("Permission denied" in note for note in run.report.header.notes)


def test_directory_as_command_exits_126(tmp_path: Path) -> None:
    run = run_runner([str(tmp_path)])

    assert run.returncode == 126
    assert run.report.outcome is Outcome.COMMAND_NOT_EXECUTABLE


# --- runner failures


@pytest.mark.parametrize(
    "options",
    [
        ["--timeout", "soon"],
        ["--kill-grace", "-1"],
        ["--chunk-bytes", "0"],
        ["--bogus"],
    ],
)
def test_invalid_option_gives_failure_report(options: list[str]) -> None:
    run = run_runner(["true"], options=options)

    assert run.returncode == 125
    assert run.report.outcome is Outcome.RUNNER_FAILED
    assert run.report.header.runner_error is not None
    assert run.report.header.runner_error.startswith("invalid usage")


def test_invalid_env_var_is_named_in_error() -> None:
    run = run_runner(["true"], env={"POD_MONITOR_RUNNER_TIMEOUT": "soon"})

    assert run.returncode == 125
    assert run.report.header.runner_error is not None
    assert "POD_MONITOR_RUNNER_TIMEOUT" in run.report.header.runner_error


def test_missing_command_argument_gives_failure_report() -> None:
    completed = subprocess.run(
        [PYTHON, str(RUNNER)],
        capture_output=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    run = finish(completed.returncode, completed.stdout, completed.stderr)

    assert run.returncode == 125
    assert run.report.header.runner_error is not None
    assert "no command" in run.report.header.runner_error


def test_runner_crash_gives_failure_report() -> None:
    # The runner's own code fails after the program started. The program
    # would sleep for 30 s, so a quick end also shows that it was killed.
    crash = (
        "import sys\n"
        f"sys.path.insert(0, {str(RUNNER.parent)!r})\n"
        "import execution_runner as runner\n"
        "def fail(self, selector, wait):\n"
        "    raise RuntimeError('injected failure')\n"
        "runner.Supervisor.read_ready = fail\n"
        "sys.exit(runner.main(sys.argv[1:]))\n"
    )

    started = time.monotonic()
    completed = subprocess.run(
        [PYTHON, "-c", crash, "--", "sleep", "30"],
        capture_output=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    run = finish(completed.returncode, completed.stdout, completed.stderr)

    assert run.returncode == 125
    assert run.report.outcome is Outcome.RUNNER_FAILED
    assert run.report.header.runner_error is not None
    assert "injected failure" in run.report.header.runner_error
    assert time.monotonic() - started < 10


# --- the log as a worker reads it


def test_cut_runner_log_keeps_summary(tmp_path: Path) -> None:
    command = write_outputs(tmp_path, b"a" * 200_000, b"b" * 1000)
    run = run_runner(command, options=["--chunk-bytes", "1000"])
    header_line_end = run.stdout.index(b"\n") + 1

    result = parse_report([run.stdout[: header_line_end + 50_000]], max_raw_bytes=0)

    assert result.failure is not None
    assert result.failure.reason is FailureReason.TRUNCATED
    assert result.report is not None
    assert result.report.exit_code == 0
    assert result.report.header.stdout.original_bytes == 200_000
    assert result.report.stderr == b"b" * 1000
    assert len(result.report.stdout) < 200_000
    assert (b"a" * 200_000).startswith(result.report.stdout)


def test_report_lines_are_json_objects() -> None:
    run = run_runner(python_command("print('x')"))

    for line in run.stdout.splitlines():
        assert isinstance(json.loads(line), dict)
