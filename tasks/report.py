"""The execution report format and its streaming parser.

An execution pod runs its command under ``runner/execution_runner.py``, which
prints a report in the ``pod-monitor.report/v1`` format on its stdout, so the
report is the end of the container log. The format is JSON Lines: one
:class:`ReportHeader` with the outcome, resource usage and stream sizes, then
:class:`ChunkRecord` lines that carry the captured stdout and stderr bytes,
then one :class:`EndRecord`. docs/report-format.md describes it for authors of
other runners, and the JSON Schemas in docs/schemas/ are exported from the
models here with ``python -m tasks.report --schema docs/schemas``.

:func:`parse_report` reads a container log as an iterable of byte chunks and
returns a :class:`ReportParseResult`. It never raises on any log content. The
log may be cut anywhere, hold lines before the report, or hold no report, and
the result then states why no complete report was read.

The last header in the log wins. The runner prints its report after every
process of the command has ended, so a header-shaped line that the command
wrote into the log through some other channel comes before the real report.
"""

from __future__ import annotations

import argparse
import binascii
import hashlib
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "FORMAT_FAMILY",
    "FORMAT_V1",
    "MAX_CHUNK_BYTES",
    "MAX_RECORD_LINE_BYTES",
    "OUTCOME_EXIT_CODES",
    "ChunkRecord",
    "EndRecord",
    "FailureReason",
    "Outcome",
    "ParseFailure",
    "Report",
    "ReportHeader",
    "ReportParseResult",
    "ReportRecord",
    "ResourceUsage",
    "StreamSummary",
    "build_schemas",
    "parse_report",
]

FORMAT_FAMILY: Final = "pod-monitor.report/"
FORMAT_V1: Final = "pod-monitor.report/v1"

#: Maximum decoded bytes of output in one chunk record.
MAX_CHUNK_BYTES: Final = 64 * 1024

#: Maximum length of one record line. A text chunk of MAX_CHUNK_BYTES control
#: characters, each escaped as ``\\u00XX``, is about 384 KiB, and the header's
#: notes are bounded below that. Longer lines are never records.
MAX_RECORD_LINE_BYTES: Final = 1024 * 1024

_NONCE_PATTERN: Final = r"^[0-9a-f]{32}$"
_SHA256_PATTERN: Final = r"^[0-9a-f]{64}$"
# Base64 of MAX_CHUNK_BYTES bytes, padded.
_MAX_BASE64_CHARS: Final = 4 * ((MAX_CHUNK_BYTES + 2) // 3)
_MAX_EXIT_CODE: Final = 255


class _Record(BaseModel):
    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, allow_inf_nan=False
    )


def _inconsistent(field: str, message: str) -> PydanticCustomError:
    # The ctx field lets the parser name the field in INVALID_FIELD failures,
    # because errors raised by model validators carry no location.
    return PydanticCustomError(
        "inconsistent_field", "{field}: {message}", {"field": field, "message": message}
    )


class Outcome(StrEnum):
    """Way the command ended, as the runner observed it."""

    EXITED = "exited"
    SIGNALED = "signaled"
    TIMED_OUT = "timed_out"
    COMMAND_NOT_FOUND = "command_not_found"
    COMMAND_NOT_EXECUTABLE = "command_not_executable"
    RUNNER_FAILED = "runner_failed"


#: The runner's exit code for each outcome that fixes one.
OUTCOME_EXIT_CODES: Final = {
    Outcome.TIMED_OUT: 124,
    Outcome.RUNNER_FAILED: 125,
    Outcome.COMMAND_NOT_EXECUTABLE: 126,
    Outcome.COMMAND_NOT_FOUND: 127,
}


class StreamSummary(_Record):
    """Sizes and checksum of one output stream."""

    original_bytes: int = Field(
        ge=0, description="Bytes the command wrote to the stream."
    )
    captured_bytes: int = Field(
        ge=0, description="Bytes kept by the runner and sent in chunk records."
    )
    truncated: bool = Field(
        description="True when the runner kept fewer bytes than the command wrote."
    )
    sha256: str = Field(
        pattern=_SHA256_PATTERN,
        description="Lowercase hex SHA-256 of the captured bytes.",
    )

    @model_validator(mode="after")
    def _check_sizes(self) -> Self:
        if self.captured_bytes > self.original_bytes:
            raise _inconsistent("captured_bytes", "exceeds original_bytes")
        if self.truncated != (self.captured_bytes < self.original_bytes):
            raise _inconsistent(
                "truncated", "must be true exactly when captured_bytes < original_bytes"
            )
        return self


class ResourceUsage(_Record):
    """Resources the command used."""

    wall_seconds: float = Field(ge=0, description="Wall time from start to exit.")
    user_cpu_seconds: float = Field(
        ge=0, description="User CPU time of the command and its waited-for children."
    )
    system_cpu_seconds: float = Field(
        ge=0, description="System CPU time of the command and its waited-for children."
    )
    max_rss_bytes: int | None = Field(
        ge=0,
        description=(
            "Peak resident set size of the largest waited-for child process, "
            "from getrusage(RUSAGE_CHILDREN); null when unknown."
        ),
    )
    cgroup_memory_peak_bytes: int | None = Field(
        ge=0,
        description=(
            "Peak memory of the container's cgroup (v2 memory.peak, v1 "
            "memory.max_usage_in_bytes), including the runner and page cache; "
            "null when unavailable."
        ),
    )
    cgroup_memory_limit_bytes: int | None = Field(
        ge=0, description="Memory limit of the container's cgroup; null when none."
    )


class ReportHeader(_Record):
    """First record of a report: the outcome, usage and stream summaries."""

    type: Literal["header"]
    format: Literal["pod-monitor.report/v1"] = Field(
        description="Format version; parsers reject versions they do not know."
    )
    nonce: str = Field(
        pattern=_NONCE_PATTERN,
        description="Random 128-bit id of this report, as 32 lowercase hex digits.",
    )
    seq: Literal[0] = Field(description="Record number; the header is record 0.")
    runner: str = Field(max_length=200, description="Name and version of the runner.")
    outcome: Outcome
    exit_code: int = Field(
        ge=0, le=_MAX_EXIT_CODE, description="Exit code of the runner process."
    )
    process_exit_code: int | None = Field(
        ge=0,
        le=_MAX_EXIT_CODE,
        description="Exit code of the command when it exited on its own.",
    )
    signal: int | None = Field(
        ge=1, le=127, description="Number of the signal that ended the command."
    )
    signal_name: str | None = Field(
        max_length=32, description="Name of that signal, such as SIGKILL."
    )
    timed_out: bool = Field(
        description="True when the runner stopped the command at its deadline."
    )
    oom_killed: bool | None = Field(
        description=(
            "True when the cgroup's oom_kill counter grew during the run, "
            "false when it did not, null when the counter is unreadable."
        )
    )
    forwarded_signals: list[str] = Field(
        max_length=32,
        description="Signals the runner received and forwarded to the command.",
    )
    usage: ResourceUsage
    stdout: StreamSummary
    stderr: StreamSummary
    notes: list[Annotated[str, Field(max_length=2000)]] = Field(
        max_length=32, description="Diagnostics for people, such as unreadable files."
    )
    runner_error: str | None = Field(
        max_length=8000, description="What failed when the outcome is runner_failed."
    )

    @model_validator(mode="after")
    def _check_outcome(self) -> Self:
        fixed_code = OUTCOME_EXIT_CODES.get(self.outcome)
        if self.timed_out != (self.outcome is Outcome.TIMED_OUT):
            raise _inconsistent(
                "timed_out", "must be true exactly when outcome is timed_out"
            )
        if (self.signal is None) != (self.signal_name is None):
            raise _inconsistent("signal_name", "must be set exactly when signal is set")
        if fixed_code is not None and self.exit_code != fixed_code:
            raise _inconsistent(
                "exit_code", f"must be {fixed_code} when outcome is {self.outcome}"
            )
        if self.outcome is Outcome.EXITED and self.exit_code != self.process_exit_code:
            raise _inconsistent(
                "exit_code", "must equal process_exit_code when outcome is exited"
            )
        if self.outcome is Outcome.SIGNALED and (
            self.signal is None or self.exit_code != 128 + self.signal
        ):
            raise _inconsistent(
                "exit_code", "must be 128 + signal when outcome is signaled"
            )
        if self.outcome is Outcome.RUNNER_FAILED and self.runner_error is None:
            raise _inconsistent(
                "runner_error", "must be set when outcome is runner_failed"
            )
        return self


class ChunkRecord(_Record):
    """A piece of one stream's captured output, as text or base64."""

    type: Literal["chunk"]
    nonce: str = Field(pattern=_NONCE_PATTERN, description="The header's nonce.")
    seq: int = Field(ge=1, description="Record number, one more than the previous.")
    stream: Literal["stdout", "stderr"]
    offset: int = Field(
        ge=0, description="Byte offset of this chunk's first byte in the stream."
    )
    text: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CHUNK_BYTES,
        description="The chunk's bytes when they are valid UTF-8.",
    )
    base64: str | None = Field(
        default=None,
        min_length=4,
        max_length=_MAX_BASE64_CHARS,
        description="The chunk's bytes in padded standard base64 otherwise.",
    )

    @model_validator(mode="after")
    def _check_one_payload(self) -> Self:
        if (self.text is None) == (self.base64 is None):
            raise _inconsistent("text", "exactly one of text and base64 must be set")
        return self


class EndRecord(_Record):
    """Last record of a report."""

    type: Literal["end"]
    nonce: str = Field(pattern=_NONCE_PATTERN, description="The header's nonce.")
    seq: int = Field(ge=1, description="Record number, one more than the previous.")
    records: int = Field(
        ge=2, description="Number of records in the report, header and end included."
    )

    @model_validator(mode="after")
    def _check_count(self) -> Self:
        if self.records != self.seq + 1:
            raise _inconsistent("records", "must be seq + 1")
        return self


ReportRecord = Annotated[
    ReportHeader | ChunkRecord | EndRecord, Field(discriminator="type")
]
_RECORD_ADAPTER: Final[TypeAdapter[ReportHeader | ChunkRecord | EndRecord]] = (
    TypeAdapter(ReportRecord)
)


# --- parse results ------------------------------------------------------------


class FailureReason(StrEnum):
    """Reason that a log yielded no complete report."""

    #: The log contains no report records at all.
    ABSENT = "absent"
    #: The log ends before the report's end record, or it lacks the header.
    TRUNCATED = "truncated"
    #: A line inside the report is not a record of that report, or the
    #: records disagree with the header (sequence, offsets, sizes, checksums).
    MALFORMED = "malformed"
    #: The last header names a format version this parser does not know.
    UNSUPPORTED_VERSION = "unsupported_version"
    #: A record has a field with an invalid value; ParseFailure.field names it.
    INVALID_FIELD = "invalid_field"


@dataclass(frozen=True, slots=True)
class ParseFailure:
    """The reason why a log yielded no complete report, with its place."""

    reason: FailureReason
    detail: str
    #: 1-based line number in the log, or None when no line is to blame.
    line_number: int | None = None
    #: Dotted path of the invalid field, for INVALID_FIELD.
    field: str | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """A report's header and the output that the parser kept.

    When ``complete`` is true, every chunk arrived and each stream matched the
    header's size and SHA-256. The parser keeps at most its
    ``max_output_bytes`` of each stream, so stdout may still be shorter than
    ``header.stdout.captured_bytes``.
    """

    header: ReportHeader
    stdout: bytes
    stderr: bytes
    complete: bool

    @property
    def exit_code(self) -> int:
        return self.header.exit_code

    @property
    def outcome(self) -> Outcome:
        return self.header.outcome

    @property
    def signal(self) -> int | None:
        return self.header.signal

    @property
    def timed_out(self) -> bool:
        return self.header.timed_out

    @property
    def usage(self) -> ResourceUsage:
        return self.header.usage

    @property
    def stdout_truncated(self) -> bool:
        """Whether stdout contains fewer bytes than the command wrote."""
        return len(self.stdout) < self.header.stdout.original_bytes

    @property
    def stderr_truncated(self) -> bool:
        """Whether stderr contains fewer bytes than the command wrote."""
        return len(self.stderr) < self.header.stderr.original_bytes


@dataclass(frozen=True, slots=True)
class ReportParseResult:
    """The outcome of parsing one container log.

    ``failure`` is None exactly when ``report`` is complete. For TRUNCATED
    with a header, ``report`` is the partial report with the output that
    arrived. For every other failure ``report`` is None, and ``raw_log``
    holds the start of the log to show in place of the output.
    """

    report: Report | None
    failure: ParseFailure | None
    #: The first max_raw_bytes of the log, empty when the report is complete.
    raw_log: bytes
    #: Whether the log was longer than raw_log.
    raw_log_truncated: bool
    #: Length of the whole log in bytes.
    log_bytes: int
    #: Header records seen. More than one means that something else in the
    #: container wrote a report-shaped line, or the runner ran twice.
    headers_seen: int

    @property
    def ok(self) -> bool:
        return self.failure is None


# --- the parser ---------------------------------------------------------------


class _Candidate:
    """State of the report that the last header started."""

    def __init__(
        self, header: ReportHeader, line_number: int, max_output_bytes: int | None
    ) -> None:
        self.header = header
        self.line_number = line_number
        self.max_output_bytes = max_output_bytes
        self.next_seq = 1
        self.received = {"stdout": 0, "stderr": 0}
        # Lists of pieces, joined once at the end: appending to a bytearray
        # would copy the output again each time the bytearray grows.
        self.kept: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        self.kept_bytes = {"stdout": 0, "stderr": 0}
        self.hashes = {"stdout": hashlib.sha256(), "stderr": hashlib.sha256()}
        self.failure: ParseFailure | None = None
        self.ended = False

    def summary(self, stream: str) -> StreamSummary:
        return self.header.stdout if stream == "stdout" else self.header.stderr

    def keep(self, stream: str, data: bytes) -> None:
        if self.max_output_bytes is not None:
            room = self.max_output_bytes - self.kept_bytes[stream]
            if room <= 0:
                return
            if room < len(data):
                data = data[:room]
        self.kept[stream].append(data)
        self.kept_bytes[stream] += len(data)

    def to_report(self) -> Report:
        return Report(
            header=self.header,
            stdout=b"".join(self.kept["stdout"]),
            stderr=b"".join(self.kept["stderr"]),
            complete=self.ended and self.failure is None,
        )


def _malformed(detail: str, line_number: int) -> ParseFailure:
    return ParseFailure(FailureReason.MALFORMED, detail, line_number)


def _failure_from_validation(
    error: ValidationError, record_name: str, line_number: int
) -> ParseFailure:
    first = error.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        # json.loads accepted the line, but pydantic's stricter JSON parser
        # did not, for example because of a lone surrogate escape.
        return _malformed(
            f"{record_name} line is not valid JSON: {first['msg']}", line_number
        )
    if first["type"] in {"model_type", "model_attributes_type"}:
        return _malformed(f"{record_name} line is not a JSON object", line_number)
    path = [str(part) for part in first["loc"]]
    context = first.get("ctx") or {}
    if first["type"] == "inconsistent_field":
        path.append(str(context["field"]))
    field = ".".join(path) or record_name
    return ParseFailure(
        FailureReason.INVALID_FIELD,
        f"{record_name} field {field} is invalid: {first['msg']}",
        line_number,
        field,
    )


def _load_object(line: bytes) -> dict[str, Any] | None:
    """Decode line as a JSON object, or return None when it is not one."""
    if not line.lstrip().startswith(b"{"):
        return None
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _is_header_shaped(value: dict[str, Any]) -> bool:
    fmt = value.get("format")
    return isinstance(fmt, str) and fmt.startswith(FORMAT_FAMILY)


def _is_record_shaped(value: dict[str, Any]) -> bool:
    return value.get("type") in ("chunk", "end") and "nonce" in value


class _Parser:
    """Line splitter and state machine behind parse_report."""

    def __init__(self, max_raw_bytes: int, max_output_bytes: int | None) -> None:
        self.max_raw_bytes = max_raw_bytes
        self.max_output_bytes = max_output_bytes
        self.raw = bytearray()
        self.log_bytes = 0
        self.buffer = bytearray()
        self.skipping_overlong_line = False
        self.line_number = 0
        self.headers_seen = 0
        self.candidate: _Candidate | None = None
        # Failure of the last header when it started no candidate.
        self.header_failure: ParseFailure | None = None
        self.headless_record_line: int | None = None

    # Splitting the byte stream into lines.

    def feed(self, data: bytes) -> None:
        self.log_bytes += len(data)
        room = self.max_raw_bytes - len(self.raw)
        if room > 0:
            self.raw += data[:room]
        self.buffer += data
        start = 0
        while True:
            end = self.buffer.find(b"\n", start)
            if end < 0:
                break
            if self.skipping_overlong_line:
                self.skipping_overlong_line = False
            elif end - start > MAX_RECORD_LINE_BYTES:
                # The same limit applies when the whole line came in one
                # piece, so the result does not depend on how input is split.
                self.on_overlong_line()
            else:
                self.on_line(bytes(self.buffer[start:end]))
            start = end + 1
        del self.buffer[:start]
        if len(self.buffer) > MAX_RECORD_LINE_BYTES:
            if not self.skipping_overlong_line:
                self.on_overlong_line()
            self.skipping_overlong_line = True
            self.buffer.clear()

    def finish(self) -> ReportParseResult:
        if self.buffer and not self.skipping_overlong_line:
            self.on_last_partial_line(bytes(self.buffer))
        self.buffer.clear()
        return self.result()

    # Handling lines.

    def on_overlong_line(self) -> None:
        self.line_number += 1
        candidate = self.active_candidate()
        if candidate is not None:
            candidate.failure = _malformed(
                f"line is longer than {MAX_RECORD_LINE_BYTES} bytes",
                self.line_number,
            )

    def on_last_partial_line(self, line: bytes) -> None:
        # Inside a report, a last line without its newline is a record that
        # the log's end cut, unless it is a whole JSON object. A cut JSON
        # object never is one, so the report counts as TRUNCATED.
        if self.active_candidate() is not None and _load_object(line) is None:
            self.line_number += 1
            return
        self.on_line(line)

    def active_candidate(self) -> _Candidate | None:
        candidate = self.candidate
        if candidate is None or candidate.ended or candidate.failure is not None:
            return None
        return candidate

    def on_line(self, line: bytes) -> None:
        self.line_number += 1
        # A pod with a tty turns "\n" into "\r\n".
        if line.endswith(b"\r"):
            line = line[:-1]
        candidate = self.active_candidate()
        if candidate is not None:
            # Fast path: nearly every line of a report is a chunk.
            try:
                chunk = ChunkRecord.model_validate_json(line)
            except ValidationError:
                pass
            else:
                self.on_chunk(candidate, chunk)
                return

        value = _load_object(line)
        if value is None:
            if candidate is not None:
                candidate.failure = _malformed(
                    "line inside the report is not a JSON object", self.line_number
                )
            return
        if _is_header_shaped(value):
            self.on_header(line, value)
            return
        if candidate is None:
            if self.candidate is None and _is_record_shaped(value):
                self.headless_record_line = (
                    self.headless_record_line or self.line_number
                )
            return

        record_type = value.get("type")
        if record_type == "end":
            try:
                end = EndRecord.model_validate_json(line)
            except ValidationError as error:
                candidate.failure = _failure_from_validation(
                    error, "end", self.line_number
                )
                return
            self.on_end(candidate, end)
        elif record_type == "chunk":
            try:
                ChunkRecord.model_validate_json(line)
            except ValidationError as error:
                candidate.failure = _failure_from_validation(
                    error, "chunk", self.line_number
                )
        else:
            candidate.failure = _malformed(
                f"record type {record_type!r} is not chunk or end", self.line_number
            )

    def on_header(self, line: bytes, value: dict[str, Any]) -> None:
        self.headers_seen += 1
        self.candidate = None
        self.header_failure = None
        fmt = value["format"]
        if fmt != FORMAT_V1:
            self.header_failure = ParseFailure(
                FailureReason.UNSUPPORTED_VERSION,
                f"report format {fmt[:100]!r} is not supported; "
                f"this parser reads {FORMAT_V1!r}",
                self.line_number,
                "format",
            )
            return
        try:
            header = ReportHeader.model_validate_json(line)
        except ValidationError as error:
            self.header_failure = _failure_from_validation(
                error, "header", self.line_number
            )
            return
        self.candidate = _Candidate(header, self.line_number, self.max_output_bytes)

    def check_sequence(self, candidate: _Candidate, nonce: str, seq: int) -> bool:
        if nonce != candidate.header.nonce:
            candidate.failure = _malformed(
                f"record nonce {nonce} differs from the header's "
                f"{candidate.header.nonce}",
                self.line_number,
            )
            return False
        if seq != candidate.next_seq:
            candidate.failure = _malformed(
                f"record seq {seq} found where seq {candidate.next_seq} was expected; "
                "a record is missing or out of order",
                self.line_number,
            )
            return False
        candidate.next_seq += 1
        return True

    def on_chunk(self, candidate: _Candidate, chunk: ChunkRecord) -> None:
        if not self.check_sequence(candidate, chunk.nonce, chunk.seq):
            return
        data = self.decode_chunk(candidate, chunk)
        if data is None:
            return
        stream = chunk.stream
        received = candidate.received[stream]
        if chunk.offset != received:
            candidate.failure = _malformed(
                f"{stream} chunk at offset {chunk.offset} found where offset "
                f"{received} was expected",
                self.line_number,
            )
            return
        captured = candidate.summary(stream).captured_bytes
        if received + len(data) > captured:
            candidate.failure = _malformed(
                f"{stream} chunks hold more than the header's captured_bytes "
                f"{captured}",
                self.line_number,
            )
            return
        candidate.received[stream] = received + len(data)
        candidate.hashes[stream].update(data)
        candidate.keep(stream, data)

    def decode_chunk(self, candidate: _Candidate, chunk: ChunkRecord) -> bytes | None:
        field = "text"
        try:
            if chunk.text is not None:
                data = chunk.text.encode("utf-8")
            else:
                field = "base64"
                data = binascii.a2b_base64(chunk.base64 or "", strict_mode=True)
        except (UnicodeEncodeError, binascii.Error) as error:
            candidate.failure = ParseFailure(
                FailureReason.INVALID_FIELD,
                f"chunk field {field} is invalid: {error}",
                self.line_number,
                field,
            )
            return None
        if len(data) > MAX_CHUNK_BYTES:
            candidate.failure = ParseFailure(
                FailureReason.INVALID_FIELD,
                f"chunk field {field} holds {len(data)} bytes, more than "
                f"{MAX_CHUNK_BYTES}",
                self.line_number,
                field,
            )
            return None
        return data

    def on_end(self, candidate: _Candidate, end: EndRecord) -> None:
        if not self.check_sequence(candidate, end.nonce, end.seq):
            return
        for stream in ("stdout", "stderr"):
            summary = candidate.summary(stream)
            received = candidate.received[stream]
            if received != summary.captured_bytes:
                candidate.failure = _malformed(
                    f"end record after {received} of the {summary.captured_bytes} "
                    f"{stream} bytes in the header",
                    self.line_number,
                )
                return
            if candidate.hashes[stream].hexdigest() != summary.sha256:
                candidate.failure = _malformed(
                    f"{stream} bytes do not match the header's SHA-256",
                    self.line_number,
                )
                return
        candidate.ended = True

    # Building the result.

    def result(self) -> ReportParseResult:
        report: Report | None = None
        failure: ParseFailure | None
        candidate = self.candidate
        if candidate is not None:
            failure = candidate.failure
            if failure is None and not candidate.ended:
                failure = ParseFailure(
                    FailureReason.TRUNCATED,
                    "the log ends before the end record of the report that starts "
                    f"at line {candidate.line_number}; records read: "
                    f"{candidate.next_seq}",
                    None,
                )
            if failure is None or failure.reason is FailureReason.TRUNCATED:
                report = candidate.to_report()
        elif self.header_failure is not None:
            failure = self.header_failure
        elif self.headless_record_line is not None:
            failure = ParseFailure(
                FailureReason.TRUNCATED,
                "the log holds report records but not their header; the start of "
                "the log was cut, by log rotation or a tail limit",
                self.headless_record_line,
            )
        else:
            failure = ParseFailure(
                FailureReason.ABSENT, "the log contains no pod-monitor report"
            )
        keep_raw = failure is not None
        return ReportParseResult(
            report=report,
            failure=failure,
            raw_log=bytes(self.raw) if keep_raw else b"",
            raw_log_truncated=self.log_bytes > len(self.raw),
            log_bytes=self.log_bytes,
            headers_seen=self.headers_seen,
        )


def parse_report(
    chunks: Iterable[bytes],
    *,
    max_raw_bytes: int,
    max_output_bytes: int | None = None,
) -> ReportParseResult:
    """Parse a container log that may end with a pod-monitor report.

    chunks may split the log anywhere, also inside a line or a UTF-8
    character. max_raw_bytes caps the start of the log kept in
    ``raw_log``; max_output_bytes caps the bytes kept of each stream, None
    keeps all. Peak memory is about twice the kept output (the pieces and
    their join at the end) plus max_raw_bytes plus one line of at most
    MAX_RECORD_LINE_BYTES. Log content never makes this function raise. A
    negative cap raises ValueError, and exceptions from iterating chunks
    propagate.
    """
    if max_raw_bytes < 0:
        raise ValueError(f"max_raw_bytes must be >= 0, got {max_raw_bytes}")
    if max_output_bytes is not None and max_output_bytes < 0:
        raise ValueError(
            f"max_output_bytes must be >= 0 or None, got {max_output_bytes}"
        )
    parser = _Parser(max_raw_bytes, max_output_bytes)
    for chunk in chunks:
        parser.feed(chunk)
    return parser.finish()


# --- JSON Schema export ---------------------------------------------------------

SCHEMA_FILES: Final[dict[str, type[BaseModel] | TypeAdapter[Any]]] = {
    "report-header.schema.json": ReportHeader,
    "report-chunk.schema.json": ChunkRecord,
    "report-end.schema.json": EndRecord,
    "report-record.schema.json": _RECORD_ADAPTER,
}


def build_schemas() -> dict[str, str]:
    """Return the JSON Schema text of each record, keyed by file name."""
    schemas: dict[str, str] = {}
    for name, model in SCHEMA_FILES.items():
        if isinstance(model, TypeAdapter):
            schema = model.json_schema(mode="validation")
        else:
            schema = model.model_json_schema(mode="validation")
        title = name.removesuffix(".schema.json")
        document = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{FORMAT_V1}/{title}",
            **schema,
        }
        schemas[name] = json.dumps(document, indent=2, sort_keys=True) + "\n"
    return schemas


def main(argv: list[str] | None = None) -> int:
    """Write the JSON Schemas of the report records (``--schema DIR``)."""
    parser = argparse.ArgumentParser(
        prog="python -m tasks.report",
        description="Export the JSON Schemas of the pod-monitor.report/v1 records.",
    )
    parser.add_argument(
        "--schema",
        type=Path,
        required=True,
        metavar="DIR",
        help="directory to write the report*.schema.json files to",
    )
    arguments = parser.parse_args(argv)
    directory: Path = arguments.schema
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in build_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
