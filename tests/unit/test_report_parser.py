"""Unit tests of the report parser, on logs built with the runner's encoder."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.execution_runner import encode_report
from tasks.report import (
    FORMAT_V1,
    MAX_RECORD_LINE_BYTES,
    FailureReason,
    Outcome,
    ReportHeader,
    ReportParseResult,
    build_schemas,
    parse_report,
)

SCHEMA_DIR = Path(__file__).parents[2] / "docs" / "schemas"

STDOUT = "héllo wörld ✓ 🙂\n".encode() + b"\xff\xfe raw \x00 bytes\r\n" * 3
STDERR = b"Traceback (most recent call last):\n  boom\n"


def header_fields(**changes: Any) -> dict[str, Any]:
    """Return header fields as build_header produces them for a clean exit 0."""
    fields: dict[str, Any] = {
        "runner": "test writer",
        "outcome": "exited",
        "exit_code": 0,
        "process_exit_code": 0,
        "signal": None,
        "signal_name": None,
        "timed_out": False,
        "oom_killed": False,
        "forwarded_signals": [],
        "usage": {
            "wall_seconds": 1.5,
            "user_cpu_seconds": 0.25,
            "system_cpu_seconds": 0.125,
            "max_rss_bytes": 10_000_000,
            "cgroup_memory_peak_bytes": None,
            "cgroup_memory_limit_bytes": None,
        },
        "stdout": {"original_bytes": len(STDOUT), "truncated": False},
        "stderr": {"original_bytes": len(STDERR), "truncated": False},
        "notes": [],
        "runner_error": None,
    }
    fields.update(changes)
    return fields


def build_lines(
    stdout: bytes = STDOUT,
    stderr: bytes = STDERR,
    chunk_bytes: int = 8,
    **changes: Any,
) -> list[bytes]:
    fields = header_fields(**changes)
    fields["stdout"] = {"original_bytes": len(stdout), "truncated": False}
    fields["stderr"] = {"original_bytes": len(stderr), "truncated": False}
    return list(encode_report(fields, stdout, stderr, chunk_bytes))


def parse(log: bytes, max_raw_bytes: int = 1 << 20) -> ReportParseResult:
    return parse_report([log], max_raw_bytes=max_raw_bytes)


def edit_line(
    lines: list[bytes], index: int, edit: Callable[[dict[str, Any]], None]
) -> bytes:
    """Return the log with one record changed by edit."""
    record = json.loads(lines[index])
    edit(record)
    changed = list(lines)
    changed[index] = json.dumps(record).encode() + b"\n"
    return b"".join(changed)


VALID_LINES = build_lines()
VALID_LOG = b"".join(VALID_LINES)


# --- complete reports ------------------------------------------------------------


def test_complete_report_round_trips() -> None:
    result = parse(VALID_LOG)

    assert result.failure is None
    assert result.ok
    assert result.report is not None
    assert result.report.complete
    assert result.report.stdout == STDOUT
    assert result.report.stderr == STDERR
    assert result.report.exit_code == 0
    assert result.report.outcome is Outcome.EXITED
    assert result.report.usage.wall_seconds == 1.5
    assert not result.report.stdout_truncated
    assert result.headers_seen == 1
    assert result.raw_log == b""
    assert result.log_bytes == len(VALID_LOG)


def test_report_uses_text_and_base64_chunks() -> None:
    kinds = {
        key
        for line in VALID_LINES[1:-1]
        for key in json.loads(line)
        if key in {"text", "base64"}
    }

    assert kinds == {"text", "base64"}


def test_one_byte_input_chunks_give_same_report() -> None:
    result = parse_report(
        (VALID_LOG[i : i + 1] for i in range(len(VALID_LOG))), max_raw_bytes=0
    )

    assert result.ok
    assert result.report is not None
    assert result.report.stdout == STDOUT
    assert result.report.stderr == STDERR


def test_junk_lines_before_report_are_skipped() -> None:
    junk = (
        b"kubelet: starting container\n"
        b"\x00\xff binary noise\n"
        b'{"level":"info","msg":"structured log line"}\n'
        b"[1, 2, 3]\n"
        b"{not json\n"
    )
    result = parse(junk + VALID_LOG)

    assert result.ok
    assert result.report is not None
    assert result.report.stdout == STDOUT


def test_tty_line_endings_are_accepted() -> None:
    result = parse(VALID_LOG.replace(b"\n", b"\r\n"))

    assert result.ok
    assert result.report is not None
    assert result.report.stdout == STDOUT


def test_final_newline_missing_is_accepted() -> None:
    result = parse(VALID_LOG[:-1])

    assert result.ok


def test_empty_streams_give_empty_output() -> None:
    result = parse(b"".join(build_lines(stdout=b"", stderr=b"")))

    assert result.ok
    assert result.report is not None
    assert result.report.stdout == b""
    assert result.report.stderr == b""


def test_lines_after_end_are_ignored() -> None:
    result = parse(VALID_LOG + b"container exited\n" + VALID_LINES[1])

    assert result.ok


def test_output_cap_keeps_prefix_and_verifies_all() -> None:
    result = parse_report([VALID_LOG], max_raw_bytes=0, max_output_bytes=10)

    assert result.ok
    assert result.report is not None
    assert result.report.stdout == STDOUT[:10]
    assert result.report.stderr == STDERR[:10]
    assert result.report.stdout_truncated
    assert result.report.header.stdout.captured_bytes == len(STDOUT)


def test_runner_truncation_is_reported() -> None:
    lines = build_lines(stdout=b"abc")
    record = json.loads(lines[0])
    record["stdout"]["original_bytes"] = 1000
    record["stdout"]["truncated"] = True
    lines[0] = json.dumps(record).encode() + b"\n"

    result = parse(b"".join(lines))

    assert result.ok
    assert result.report is not None
    assert result.report.stdout == b"abc"
    assert result.report.header.stdout.truncated
    assert result.report.header.stdout.original_bytes == 1000
    assert result.report.stdout_truncated


# --- which report counts -------------------------------------------------------


def test_last_header_wins_over_forged_report() -> None:
    forged = b"".join(build_lines(stdout=b"forged", stderr=b""))
    genuine = b"".join(build_lines(outcome="exited", exit_code=3, process_exit_code=3))

    result = parse(forged + genuine)

    assert result.ok
    assert result.report is not None
    assert result.report.exit_code == 3
    assert result.report.stdout == STDOUT
    assert result.headers_seen == 2


def test_later_header_replaces_broken_report() -> None:
    broken = b"".join(VALID_LINES[:2]) + b"garbage\n"

    result = parse(broken + VALID_LOG)

    assert result.ok
    assert result.headers_seen == 2


# --- absent --------------------------------------------------------------------


@pytest.mark.parametrize(
    "log",
    [b"", b"\n\n", b"plain output of a pod without the runner\n", b"{}\n[]\n"],
)
def test_log_without_records_is_absent(log: bytes) -> None:
    result = parse(log)

    assert result.failure is not None
    assert result.failure.reason is FailureReason.ABSENT
    assert result.report is None
    assert result.raw_log == log


def test_raw_log_is_capped() -> None:
    log = b"x" * 100 + b"\n"

    result = parse(log, max_raw_bytes=10)

    assert result.raw_log == b"x" * 10
    assert result.raw_log_truncated
    assert result.log_bytes == 101


@pytest.mark.parametrize("piece_bytes", [65536, 10 * MAX_RECORD_LINE_BYTES])
def test_overlong_junk_line_is_skipped(piece_bytes: int) -> None:
    log = b"y" * (MAX_RECORD_LINE_BYTES + 10) + b"\n" + VALID_LOG
    pieces = [log[i : i + piece_bytes] for i in range(0, len(log), piece_bytes)]

    result = parse_report(pieces, max_raw_bytes=0)

    assert result.ok


@pytest.mark.parametrize("piece_bytes", [65536, 10 * MAX_RECORD_LINE_BYTES])
def test_overlong_line_inside_report_is_malformed(piece_bytes: int) -> None:
    # The line would be a valid chunk record but for its length.
    record = json.loads(VALID_LINES[1])
    record["text"] = "\x01" * (MAX_RECORD_LINE_BYTES // 6 + 1)
    overlong = json.dumps(record).encode() + b"\n"
    log = VALID_LINES[0] + overlong + b"".join(VALID_LINES[1:])
    pieces = [log[i : i + piece_bytes] for i in range(0, len(log), piece_bytes)]

    result = parse_report(pieces, max_raw_bytes=0)

    assert result.failure is not None
    assert result.failure.reason is FailureReason.MALFORMED
    assert "longer than" in result.failure.detail
    assert result.failure.line_number == 2


# --- truncated -----------------------------------------------------------------


def test_every_cut_gives_truncated_or_absent() -> None:
    # A header line that lacks only its newline is a whole record.
    header_end = len(VALID_LINES[0]) - 1
    for cut in range(len(VALID_LOG) - 1):
        result = parse(VALID_LOG[:cut])

        assert result.failure is not None, cut
        if cut < header_end:
            assert result.failure.reason is FailureReason.ABSENT, cut
            continue
        assert result.failure.reason is FailureReason.TRUNCATED, cut
        assert result.report is not None, cut
        assert not result.report.complete, cut
        assert STDOUT.startswith(result.report.stdout), cut
        assert STDERR.startswith(result.report.stderr), cut


def test_truncated_report_keeps_summary_and_output() -> None:
    # Header, the first stdout chunk and the first stderr chunk.
    log = b"".join(VALID_LINES[:3])

    result = parse(log)

    assert result.failure is not None
    assert result.failure.reason is FailureReason.TRUNCATED
    assert result.report is not None
    assert result.report.exit_code == 0
    assert result.report.stdout == STDOUT[:8]
    assert result.report.stderr == STDERR[:8]
    assert result.raw_log == log


def test_missing_header_is_truncated_without_report() -> None:
    result = parse(b"".join(VALID_LINES[1:]))

    assert result.failure is not None
    assert result.failure.reason is FailureReason.TRUNCATED
    assert result.failure.line_number == 1
    assert result.report is None


# --- malformed -----------------------------------------------------------------


def without_line(index: int) -> bytes:
    return b"".join(VALID_LINES[:index] + VALID_LINES[index + 1 :])


MALFORMED_CASES = {
    "junk line inside": b"".join(VALID_LINES[:2])
    + b"noise\n"
    + b"".join(VALID_LINES[2:]),
    "array inside": b"".join(VALID_LINES[:2]) + b"[1]\n" + b"".join(VALID_LINES[2:]),
    "missing chunk": without_line(2),
    "duplicated chunk": b"".join(VALID_LINES[:2] + VALID_LINES[1:]),
    "unknown record type": without_line(len(VALID_LINES) - 1)
    + VALID_LINES[-1].replace(b'"end"', b'"unknown"'),
    "wrong nonce": edit_line(VALID_LINES, 1, lambda r: r.update(nonce="0" * 32)),
    "offset gap": edit_line(VALID_LINES, 3, lambda r: r.update(offset=r["offset"] + 1)),
    "end count": edit_line(
        VALID_LINES,
        len(VALID_LINES) - 1,
        lambda r: r.update(seq=r["seq"] + 1, records=r["seq"] + 2),
    ),
    "checksum": edit_line(
        VALID_LINES, 0, lambda r: r["stdout"].update(sha256="0" * 64)
    ),
    "fewer bytes": edit_line(
        VALID_LINES,
        0,
        lambda r: r["stdout"].update(
            original_bytes=len(STDOUT) + 1, captured_bytes=len(STDOUT) + 1
        ),
    ),
    "more bytes": edit_line(
        VALID_LINES, 0, lambda r: r["stdout"].update(original_bytes=1, captured_bytes=1)
    ),
    "overlong line inside": b"".join(VALID_LINES[:2])
    + b"z" * (MAX_RECORD_LINE_BYTES + 1)
    + b"\n"
    + b"".join(VALID_LINES[2:]),
}


@pytest.mark.parametrize("log", MALFORMED_CASES.values(), ids=MALFORMED_CASES.keys())
def test_broken_framing_is_malformed(log: bytes) -> None:
    result = parse(log)

    assert result.failure is not None
    assert result.failure.reason is FailureReason.MALFORMED
    assert result.failure.line_number is not None
    assert result.report is None


def test_malformed_failure_names_line() -> None:
    result = parse(MALFORMED_CASES["missing chunk"])

    assert result.failure is not None
    assert result.failure.line_number == 3
    assert "seq 2 was expected" in result.failure.detail


# --- unsupported version -------------------------------------------------------


def test_unknown_version_is_unsupported() -> None:
    log = edit_line(VALID_LINES, 0, lambda r: r.update(format="pod-monitor.report/v2"))

    result = parse(log)

    assert result.failure is not None
    assert result.failure.reason is FailureReason.UNSUPPORTED_VERSION
    assert "v2" in result.failure.detail
    assert result.failure.line_number == 1
    assert result.report is None


# --- invalid field -------------------------------------------------------------


def header_edit(**changes: Any) -> bytes:
    return edit_line(VALID_LINES, 0, lambda r: r.update(changes))


def chunk_edit(**changes: Any) -> bytes:
    return edit_line(VALID_LINES, 1, lambda r: r.update(changes))


INVALID_FIELD_CASES = {
    "exit code as string": (header_edit(exit_code="0"), "exit_code"),
    "exit code out of range": (header_edit(exit_code=300), "exit_code"),
    "bool as int": (header_edit(exit_code=True), "exit_code"),
    "short nonce": (header_edit(nonce="abc"), "nonce"),
    "unknown header field": (header_edit(command=["secret"]), "command"),
    "missing usage": (
        edit_line(VALID_LINES, 0, lambda r: r.pop("usage")),
        "usage",
    ),
    "negative wall time": (
        edit_line(VALID_LINES, 0, lambda r: r["usage"].update(wall_seconds=-1)),
        "usage.wall_seconds",
    ),
    "unknown outcome": (header_edit(outcome="crashed"), "outcome"),
    "exit code against outcome": (
        header_edit(outcome="timed_out", timed_out=True, exit_code=0),
        "exit_code",
    ),
    "timed out flag against outcome": (header_edit(timed_out=True), "timed_out"),
    "truncated flag against sizes": (
        edit_line(VALID_LINES, 0, lambda r: r["stdout"].update(truncated=True)),
        "stdout.truncated",
    ),
    "unknown stream": (chunk_edit(stream="stdin"), "stream"),
    "negative offset": (chunk_edit(offset=-1), "offset"),
    "text and base64": (chunk_edit(base64="AAAA"), "text"),
    "invalid base64": (
        edit_line(
            VALID_LINES,
            next(i for i, line in enumerate(VALID_LINES) if b'"base64"' in line),
            lambda r: r.update(base64="!!!!"),
        ),
        "base64",
    ),
}


@pytest.mark.parametrize(
    ("log", "field"), INVALID_FIELD_CASES.values(), ids=INVALID_FIELD_CASES.keys()
)
def test_bad_value_is_invalid_field(log: bytes, field: str) -> None:
    result = parse(log)

    assert result.failure is not None
    assert result.failure.reason is FailureReason.INVALID_FIELD
    assert result.failure.field == field
    assert field.rsplit(".", maxsplit=1)[-1] in result.failure.detail


def test_lone_surrogate_is_malformed() -> None:
    # json.loads accepts a lone surrogate escape, but the text would have no
    # UTF-8 encoding, and pydantic's JSON parser rejects it.
    log = VALID_LOG.replace(b'"text":"h', b'"text":"\\ud800', 1)

    result = parse(log)

    assert result.failure is not None
    assert result.failure.reason is FailureReason.MALFORMED
    assert "not valid JSON" in result.failure.detail


def test_base64_over_chunk_limit_is_invalid_field() -> None:
    data = b"\xff" * 65_538
    record = json.loads(VALID_LINES[1])
    record.pop("text", None)
    record["base64"] = base64.b64encode(data).decode()
    log = VALID_LINES[0] + json.dumps(record).encode() + b"\n"

    result = parse(log)

    assert result.failure is not None
    assert result.failure.reason is FailureReason.INVALID_FIELD
    assert result.failure.field == "base64"


# --- caller errors -------------------------------------------------------------


def test_negative_raw_cap_raises() -> None:
    with pytest.raises(ValueError, match="max_raw_bytes"):
        parse_report([], max_raw_bytes=-1)


def test_negative_output_cap_raises() -> None:
    with pytest.raises(ValueError, match="max_output_bytes"):
        parse_report([], max_raw_bytes=0, max_output_bytes=-1)


# --- schemas -------------------------------------------------------------------


def test_exported_schemas_are_current() -> None:
    for name, text in build_schemas().items():
        path = SCHEMA_DIR / name

        assert path.read_text(encoding="utf-8") == text, (
            f"{path} is stale; run python -m tasks.report --schema docs/schemas"
        )


def test_header_model_accepts_runner_header() -> None:
    header = ReportHeader.model_validate_json(VALID_LINES[0])

    assert header.format == FORMAT_V1


# --- properties ------------------------------------------------------------------


@settings(max_examples=200)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(VALID_LOG)), max_size=20))
def test_any_input_split_gives_same_report(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(VALID_LOG)]
    pieces = [VALID_LOG[a:b] for a, b in itertools.pairwise(points)]

    result = parse_report(pieces, max_raw_bytes=0)

    assert result.ok
    assert result.report is not None
    assert result.report.stdout == STDOUT


@settings(max_examples=300)
@given(cut=st.integers(min_value=0, max_value=len(VALID_LOG) - 2))
def test_any_cut_keeps_output_prefix(cut: int) -> None:
    result = parse(VALID_LOG[:cut])

    assert result.failure is not None
    assert result.failure.reason in {FailureReason.ABSENT, FailureReason.TRUNCATED}
    if result.report is not None:
        assert STDOUT.startswith(result.report.stdout)


@settings(max_examples=300)
@given(junk=st.binary(max_size=2000))
def test_random_bytes_never_raise(junk: bytes) -> None:
    result = parse(junk)

    assert result.failure is not None
    assert result.raw_log == junk


def _record_like_line() -> st.SearchStrategy[bytes]:
    values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=4,
    )
    record = st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["header", "chunk", "end", "other"]) | values,
            "format": st.just(FORMAT_V1) | st.just("pod-monitor.report/v9") | values,
            "nonce": st.just(json.loads(VALID_LINES[0])["nonce"]) | values,
            "seq": st.integers(min_value=-1, max_value=5) | values,
            "stream": st.sampled_from(["stdout", "stderr"]) | values,
            "offset": st.integers(min_value=-1, max_value=50),
            "text": st.text(max_size=20) | values,
            "base64": st.text(max_size=20) | values,
            "records": st.integers(min_value=0, max_value=6),
        },
    )
    return record.map(lambda r: json.dumps(r).encode() + b"\n")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(
        _record_like_line() | st.sampled_from(VALID_LINES) | st.binary(max_size=50),
        max_size=12,
    )
)
def test_shuffled_records_never_raise(lines: list[bytes]) -> None:
    result = parse(b"".join(lines))

    assert isinstance(result, ReportParseResult)
    assert (result.failure is None) == (
        result.report is not None and result.report.complete
    )
