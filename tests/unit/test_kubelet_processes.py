"""Container processes of the kubelet stand-in: real local processes, no API."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from local_stack.kubelet.logs import LogOptions, LogPaths, LogReader, LogWriter
from local_stack.kubelet.memory import CgroupV1Memory, RssPoller
from local_stack.kubelet.processes import (
    ContainerProcess,
    ExitStatus,
    LaunchSpec,
    StartError,
)

MEMORY_HOG = (
    "import time\n"
    "chunks = []\n"
    "for _ in range(400):\n"
    "    chunks.append(bytearray(1 << 20))\n"
    "    time.sleep(0.005)\n"
    "print('survived')\n"
)


def run(
    tmp_path: Path,
    code: str,
    memory_limit: int | None = None,
    memory: CgroupV1Memory | None = None,
) -> tuple[ExitStatus, bytes]:
    paths = LogPaths.in_folder(tmp_path / "log")
    spec = LaunchSpec(
        argv=[sys.executable, "-u", "-c", code],
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        memory_limit_bytes=memory_limit,
    )
    process = ContainerProcess("test", spec, LogWriter(paths), memory)
    process.start()
    status = process.wait()
    log = b"".join(LogReader(paths).stream(LogOptions(), lambda: False))
    return status, log


def test_exit_code_and_output(tmp_path: Path) -> None:
    status, log = run(tmp_path, "import sys\nprint('out')\nsys.exit(4)")
    assert status.exit_code == 4
    assert status.oom_killed is False
    assert log == b"out\n"
    assert status.finished_at >= status.started_at


def test_signal_exit_code_is_128_plus_signal(tmp_path: Path) -> None:
    status, _ = run(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert status.exit_code == 137


def test_child_left_behind_does_not_hang(tmp_path: Path) -> None:
    # The background child inherits stdout. The container must still end
    # when its main process exits, as the end of a PID namespace would end it.
    code = (
        "import subprocess, sys\nsubprocess.Popen(['sleep', '60'])\nprint('main done')"
    )
    status, log = run(tmp_path, code)
    assert status.exit_code == 0
    assert log == b"main done\n"


def test_missing_executable_is_start_error(tmp_path: Path) -> None:
    spec = LaunchSpec(
        argv=["no-such-binary-here"], env={"PATH": "/usr/bin"}, cwd=tmp_path
    )
    process = ContainerProcess("x", spec, LogWriter(LogPaths.in_folder(tmp_path)), None)
    with pytest.raises(StartError, match="executable file not found"):
        process.start()


def test_rss_polling_kills_memory_hog(tmp_path: Path) -> None:
    status, log = run(tmp_path, MEMORY_HOG, memory_limit=64 * 2**20, memory=None)
    assert status.oom_killed is True
    assert status.exit_code == 137
    assert b"survived" not in log


def test_cgroup_kills_memory_hog(tmp_path: Path) -> None:
    memory = CgroupV1Memory.detect("unit-test")
    if memory is None:
        pytest.skip("no writable cgroup v1 memory controller on this host")
    try:
        status, log = run(tmp_path, MEMORY_HOG, memory_limit=64 * 2**20, memory=memory)
    finally:
        memory.release()
    assert status.oom_killed is True
    assert status.exit_code == 137
    assert b"survived" not in log


def test_rss_poller_measures_own_session() -> None:
    assert RssPoller(os.getsid(0)).rss_bytes() > 0
