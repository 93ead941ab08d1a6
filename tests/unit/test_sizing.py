"""Cutting output so that every terminal event fits one Kafka message."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.events import (
    CapturedOutput,
    EventType,
    ExecutionCompletedEvent,
    PodRef,
    TerminalEvent,
    TerminalReason,
    event_id,
)
from tasks.sizing import HEADROOM_BYTES, fit_event

NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
LIMIT = 64 * 1024


def stdout_of(event: TerminalEvent) -> CapturedOutput:
    assert event.stdout is not None
    return event.stdout


def stderr_of(event: TerminalEvent) -> CapturedOutput:
    assert event.stderr is not None
    return event.stderr


def completed(stdout: bytes, stderr: bytes = b"") -> ExecutionCompletedEvent:
    return ExecutionCompletedEvent(
        event_id=event_id("uid-1", EventType.COMPLETED),
        execution_id="exec-1",
        pod=PodRef(namespace="runs", name="p", uid="uid-1"),
        occurred_at=NOW,
        observed_at=NOW,
        reason=TerminalReason.COMPLETED,
        exit_code=0,
        stdout=CapturedOutput.from_bytes(stdout),
        stderr=CapturedOutput.from_bytes(stderr),
    )


def size(event: TerminalEvent) -> int:
    return len(event.model_dump_json().encode())


def test_small_event_unchanged() -> None:
    event = completed(b"hello\n")

    assert fit_event(event, LIMIT) is event


def test_large_text_cut_and_flagged() -> None:
    event = completed(b"x" * 200_000)

    fitted = fit_event(event, LIMIT)

    assert size(fitted) <= LIMIT - HEADROOM_BYTES
    assert stdout_of(fitted).truncated is True
    assert stdout_of(fitted).original_size_bytes == 200_000
    assert stdout_of(fitted).to_bytes() == b"x" * stdout_of(fitted).size_bytes
    assert stdout_of(fitted).size_bytes > LIMIT // 2


def test_cut_text_stays_valid_utf8() -> None:
    event = completed("é€😀".encode() * 40_000)

    fitted = fit_event(event, LIMIT)

    assert stdout_of(fitted).encoding == "utf-8"
    assert "é€😀".encode().startswith(stdout_of(fitted).to_bytes()[:3])
    stdout_of(fitted).to_bytes().decode("utf-8")


def test_escaped_text_fits() -> None:
    # Control characters take six bytes each in JSON.
    event = completed(b"\x01" * 100_000)

    fitted = fit_event(event, LIMIT)

    assert size(fitted) <= LIMIT - HEADROOM_BYTES
    assert stdout_of(fitted).truncated is True


def test_small_stream_leaves_room_to_other() -> None:
    event = completed(b"o" * 500_000, b"short error\n")

    fitted = fit_event(event, LIMIT)

    assert stderr_of(fitted).to_bytes() == b"short error\n"
    assert stderr_of(fitted).truncated is False
    assert stdout_of(fitted).truncated is True


def test_binary_output_cut_as_base64() -> None:
    event = completed(bytes(range(256)) * 1000)

    fitted = fit_event(event, LIMIT)

    assert size(fitted) <= LIMIT - HEADROOM_BYTES
    assert stdout_of(fitted).truncated is True
    assert (bytes(range(256)) * 1000).startswith(stdout_of(fitted).to_bytes())


@settings(max_examples=60, deadline=None)
@given(
    stdout=st.binary(max_size=150_000),
    stderr=st.binary(max_size=150_000),
    limit=st.integers(min_value=16_384, max_value=200_000),
)
def test_any_output_fits_any_limit(stdout: bytes, stderr: bytes, limit: int) -> None:
    fitted = fit_event(completed(stdout, stderr), limit)

    assert size(fitted) <= limit - HEADROOM_BYTES
    assert stdout.startswith(stdout_of(fitted).to_bytes())
    assert stderr.startswith(stderr_of(fitted).to_bytes())


@pytest.mark.parametrize("limit", [16_384, 100_000, 1_000_000])
def test_mixed_output_fits(limit: int) -> None:
    event = completed(b'a"\\\n' * 300_000, "ü".encode() * 300_000)

    assert size(fit_event(event, limit)) <= limit - HEADROOM_BYTES


@pytest.mark.parametrize("byte", [b"\\", b"\x01", b'"', b"\x1b[31m"])
def test_escaped_output_keeps_what_fits(byte: bytes) -> None:
    event = completed(byte * (1024 * 1024 // len(byte)))

    fitted = fit_event(event, 1_000_000)

    assert size(fitted) <= 1_000_000 - HEADROOM_BYTES
    # At most six bytes of JSON per byte of output, so at least a sixth of
    # the space carries output.
    assert stdout_of(fitted).size_bytes > (1_000_000 - HEADROOM_BYTES) // 7
