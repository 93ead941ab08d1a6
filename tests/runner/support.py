"""Helpers that run the real runner in a subprocess and parse its report."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.report import Report, ReportParseResult, parse_report

RUNNER = Path(__file__).parents[2] / "runner" / "execution_runner.py"
PYTHON = sys.executable

#: Seconds a single runner call may take before the test fails.
RUN_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class RunnerRun:
    """One finished runner process and its parsed report."""

    returncode: int
    stdout: bytes
    stderr: bytes
    parsed: ReportParseResult

    @property
    def report(self) -> Report:
        """Return the complete report, failing the test when there is none."""
        assert self.parsed.failure is None, self.parsed.failure
        assert self.parsed.report is not None
        return self.parsed.report


def run_runner(
    command: Sequence[str],
    *,
    options: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    interpreter: str = PYTHON,
) -> RunnerRun:
    """Run the runner on command and parse what it printed on stdout."""
    completed = subprocess.run(
        [interpreter, str(RUNNER), *options, "--", *command],
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    return finish(completed.returncode, completed.stdout, completed.stderr)


def finish(returncode: int, stdout: bytes, stderr: bytes) -> RunnerRun:
    """Parse a finished runner's stdout in 64 KiB pieces, as a worker would."""
    pieces = [stdout[i : i + 65536] for i in range(0, len(stdout), 65536)]
    parsed = parse_report(pieces, max_raw_bytes=1 << 20)
    return RunnerRun(returncode, stdout, stderr, parsed)


def python_command(source: str, *args: str) -> list[str]:
    """Return a command that runs source with this test's interpreter."""
    return [PYTHON, "-c", source, *args]
