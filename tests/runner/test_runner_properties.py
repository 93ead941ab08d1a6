"""Property tests: any output survives the real runner and the parser."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.report import FailureReason, parse_report
from tests.runner.support import python_command, run_runner

WRITE_FILES = (
    "import sys\n"
    "sys.stdout.buffer.write(open(sys.argv[1], 'rb').read())\n"
    "sys.stderr.buffer.write(open(sys.argv[2], 'rb').read())\n"
)

# Text and bytes in one strategy, so that runs of valid UTF-8 meet invalid
# bytes inside one chunk and at chunk boundaries.
OUTPUT = st.lists(
    st.binary(max_size=300) | st.text(max_size=100).map(str.encode),
    max_size=6,
).map(b"".join)


def run_writing(stdout: bytes, stderr: bytes, chunk_bytes: int) -> tuple[bytes, bytes]:
    """Run the runner on a program that writes stdout and stderr exactly.

    Asserts that the parsed report contains those bytes, and returns what the
    runner itself wrote on its stdout (the report) and its stderr.
    """
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        (directory / "out").write_bytes(stdout)
        (directory / "err").write_bytes(stderr)
        command = python_command(
            WRITE_FILES, str(directory / "out"), str(directory / "err")
        )
        run = run_runner(command, options=["--chunk-bytes", str(chunk_bytes)])
    assert run.returncode == 0
    assert run.report.stdout == stdout
    assert run.report.stderr == stderr
    return run.stdout, run.stderr


@settings(max_examples=50, deadline=None)
@given(
    stdout=OUTPUT,
    stderr=OUTPUT,
    chunk_bytes=st.integers(min_value=1, max_value=64) | st.just(32768),
)
def test_any_output_round_trips(stdout: bytes, stderr: bytes, chunk_bytes: int) -> None:
    log, runner_stderr = run_writing(stdout, stderr, chunk_bytes)

    assert runner_stderr == b""
    assert log.endswith(b"\n")


LOG_STDOUT = "ünïcödé ✓ text\n".encode() * 40 + bytes(range(256))
LOG_STDERR = b"warning: \xff\xfe\n" * 20


def runner_log() -> bytes:
    log, _ = run_writing(LOG_STDOUT, LOG_STDERR, 50)
    return log


# Built at import, because the strategies below need the log's length.
RUNNER_LOG = runner_log()


@settings(max_examples=500, deadline=None)
@given(cut=st.integers(min_value=0, max_value=len(RUNNER_LOG)))
def test_any_cut_of_runner_log_is_clear(cut: int) -> None:
    result = parse_report([RUNNER_LOG[:cut]], max_raw_bytes=1024)

    if cut >= len(RUNNER_LOG) - 1:
        assert result.ok
        return
    assert result.failure is not None
    assert result.failure.reason in {FailureReason.ABSENT, FailureReason.TRUNCATED}
    if result.report is not None:
        assert LOG_STDOUT.startswith(result.report.stdout)
        assert LOG_STDERR.startswith(result.report.stderr)
        assert result.report.exit_code == 0


@settings(max_examples=300, deadline=None)
@given(
    position=st.integers(min_value=0, max_value=len(RUNNER_LOG) - 1),
    junk=st.binary(min_size=1, max_size=40),
)
def test_junk_spliced_into_runner_log_never_raises(position: int, junk: bytes) -> None:
    log = RUNNER_LOG[:position] + junk + RUNNER_LOG[position:]

    result = parse_report([log], max_raw_bytes=1024)

    assert (result.failure is None) == (
        result.report is not None and result.report.complete
    )
    if result.ok:
        assert result.report is not None
        assert result.report.stdout == LOG_STDOUT
