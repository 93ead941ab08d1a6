"""Unit tests of the kubelet stand-in's pure parts: scripts, logs, quantities."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from local_stack.kubelet.containers import expand
from local_stack.kubelet.log_server import InvalidQueryError, parse_log_options
from local_stack.kubelet.logs import (
    MAX_LINE_BYTES,
    LogOptions,
    LogPaths,
    LogReader,
    LogWriter,
    format_timestamp,
)
from local_stack.kubelet.memory import parse_quantity
from local_stack.kubelet.script import (
    ANNOTATION,
    ContainerState,
    Log,
    Script,
    ScriptError,
    Step,
)
from local_stack.kubelet.status import PodStatusModel


def _read(paths: LogPaths, **options: object) -> bytes:
    reader = LogReader(paths)
    return b"".join(reader.stream(LogOptions(**options), lambda: False))  # type: ignore[arg-type]


@pytest.fixture
def log_paths(tmp_path: Path) -> LogPaths:
    return LogPaths.in_folder(tmp_path / "main")


def test_log_interleaves_streams_by_line(log_paths: LogPaths) -> None:
    writer = LogWriter(log_paths)
    writer.write("stdout", b"out 1\nout")
    writer.write("stderr", b"err 1\n")
    writer.write("stdout", b" 2\n")
    writer.close()

    assert _read(log_paths) == b"out 1\nerr 1\nout 2\n"


def test_log_keeps_last_line_without_newline(log_paths: LogPaths) -> None:
    writer = LogWriter(log_paths)
    writer.write("stdout", b"a\nno newline")
    writer.close()

    assert _read(log_paths) == b"a\nno newline"


def test_log_tail_lines(log_paths: LogPaths) -> None:
    writer = LogWriter(log_paths)
    writer.write("stdout", b"".join(b"line %d\n" % i for i in range(10)))
    writer.close()

    assert _read(log_paths, tail_lines=2) == b"line 8\nline 9\n"
    assert _read(log_paths, tail_lines=0) == b""
    assert _read(log_paths, tail_lines=100).count(b"\n") == 10


def test_log_limit_bytes_counts_timestamps(log_paths: LogPaths) -> None:
    writer = LogWriter(log_paths)
    writer.write("stdout", b"hello\nworld\n")
    writer.close()

    assert _read(log_paths, limit_bytes=3) == b"hel"
    stamped = _read(log_paths, timestamps=True)
    lines = stamped.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(b"Z hello")
    assert _read(log_paths, timestamps=True, limit_bytes=10) == stamped[:10]


def test_log_splits_long_lines(log_paths: LogPaths) -> None:
    writer = LogWriter(log_paths)
    writer.write("stdout", b"x" * (MAX_LINE_BYTES + 10) + b"\n")
    writer.close()

    assert LogReader(log_paths).record_count() == 2
    assert _read(log_paths) == b"x" * (MAX_LINE_BYTES + 10) + b"\n"


def test_log_since_skips_older_lines(log_paths: LogPaths) -> None:
    writer = LogWriter(log_paths)
    writer.write("stdout", b"old\n")
    time.sleep(0.01)
    boundary = time.time_ns()
    writer.write("stdout", b"new\n")
    writer.close()

    assert _read(log_paths, since_ns=boundary) == b"new\n"


def test_log_large_file_streams_in_chunks(log_paths: LogPaths) -> None:
    writer = LogWriter(log_paths)
    line = b"y" * 99 + b"\n"
    for _ in range(100):
        writer.write("stdout", line * 1000)
    writer.close()

    reader = LogReader(log_paths)
    chunks = list(reader.stream(LogOptions(), lambda: False))
    assert len(chunks) > 1
    assert sum(len(chunk) for chunk in chunks) == 100 * 1000 * 100
    limited = b"".join(reader.stream(LogOptions(limit_bytes=12345), lambda: False))
    assert len(limited) == 12345


@pytest.mark.parametrize(
    ("time_ns", "expected"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1_500_000_000, "1970-01-01T00:00:01.5Z"),
        (1_000_000_123, "1970-01-01T00:00:01.000000123Z"),
    ],
)
def test_format_timestamp_like_rfc3339nano(time_ns: int, expected: str) -> None:
    assert format_timestamp(time_ns) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("64Mi", 64 * 2**20),
        ("1G", 10**9),
        ("1.5Gi", 3 * 2**29),
        ("128974848", 128974848),
        ("129e6", 129 * 10**6),
        ("500m", 1),
        ("1k", 1000),
    ],
)
def test_parse_quantity(text: str, expected: int) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "Mi", "12Q", "1..2"])
def test_parse_quantity_rejects_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(text)


def test_expand_references() -> None:
    variables = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", variables) == "1-two"
    assert expand("$(MISSING)", variables) == "$(MISSING)"
    assert expand("$$(A)", variables) == "$(A)"


def test_script_round_trip() -> None:
    script = Script(
        [
            Step.running(delay=0.5),
            Step.log("main", b"\x00binary\n"),
            Step.waiting("ErrImagePull", "pull failed"),
            Step.evicted(),
            Step(containers={"side": ContainerState.terminated(3, reason="Error")}),
            Step.delete(delay=1),
            Step.node_lost(),
            Step.node_lost(ready="Unknown"),
        ]
    )
    annotation = script.to_annotation()
    assert list(annotation) == [ANNOTATION]
    assert Script.from_json(annotation[ANNOTATION]) == script


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not json", "not valid JSON"),
        ('{"steps": {}}', "must be a list"),
        ('{"steps": [{"delay": -1}]}', "delay"),
        ('{"steps": [{"action": "explode"}]}', "action"),
        ('{"steps": [{"phaze": "Running"}]}', "unknown fields"),
        ('{"steps": [{"containers": {"a": {"state": "sleeping"}}}]}', "state"),
        (
            '{"steps": [{"containers": {"a": {"state": "running", "exitCode": 1}}}]}',
            "exitCode",
        ),
        ('{"steps": [{"logs": {"a": {}}}]}', "exactly one"),
        ('{"steps": [{"logs": {"a": {"text": "x", "repeat": 0}}}]}', "repeat"),
    ],
)
def test_script_rejects_invalid(text: str, fragment: str) -> None:
    with pytest.raises(ScriptError, match=fragment):
        Script.from_json(text)


def test_log_content_of_bytes_and_text() -> None:
    assert Log.of(b"\xff\x00").content() == b"\xff\x00"
    assert Log.of("text").content() == b"text"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, LogOptions()),
        ({"tailLines": ["5"]}, LogOptions(tail_lines=5)),
        (
            {"limitBytes": ["10"], "timestamps": ["true"]},
            LogOptions(limit_bytes=10, timestamps=True),
        ),
        ({"follow": ["1"]}, LogOptions(follow=True)),
    ],
)
def test_parse_log_options(query: dict[str, list[str]], expected: LogOptions) -> None:
    options, previous = parse_log_options(query)
    assert options == expected
    assert previous is False


@pytest.mark.parametrize(
    "query",
    [
        {"tailLines": ["-1"]},
        {"limitBytes": ["0"]},
        {"follow": ["maybe"]},
        {"sinceTime": ["x"]},
    ],
)
def test_parse_log_options_rejects_invalid(query: dict[str, list[str]]) -> None:
    with pytest.raises(InvalidQueryError):
        parse_log_options(query)


def _pod(init: bool = False) -> dict[str, object]:
    spec: dict[str, object] = {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "python"}],
    }
    if init:
        spec["initContainers"] = [{"name": "setup", "image": "python"}]
    return {"metadata": {"uid": "u1", "name": "p", "namespace": "n"}, "spec": spec}


def _condition(status: dict[str, object], kind: str) -> dict[str, object]:
    conditions = status["conditions"]
    assert isinstance(conditions, list)
    return next(c for c in conditions if c["type"] == kind)


def test_status_phases_follow_containers() -> None:
    model = PodStatusModel(_pod())
    assert model.current_phase() == "Pending"
    main = model.containers[0]
    main.set_running("u1")
    assert model.current_phase() == "Running"
    assert _condition(model.render(), "Ready")["status"] == "True"
    main.set_terminated("u1", 3)
    assert model.current_phase() == "Failed"
    assert main.reason == "Error"
    ready = _condition(model.render(), "Ready")
    assert ready["status"] == "False"
    assert ready["reason"] == "PodFailed"


def test_status_failed_init_container_fails_pod() -> None:
    model = PodStatusModel(_pod(init=True))
    initialized = _condition(model.render(), "Initialized")
    assert initialized["status"] == "False"
    assert initialized["message"] == "containers with incomplete status: [setup]"
    model.init_containers[0].set_terminated("u1", 2)
    assert model.current_phase() == "Failed"


def test_status_patch_contains_only_changes() -> None:
    model = PodStatusModel(_pod())
    first = model.patch()
    assert first is not None
    assert first["phase"] == "Pending"
    assert model.patch() is None
    model.containers[0].set_running("u1")
    second = model.patch()
    assert second is not None
    assert set(second) == {"phase", "containerStatuses", "conditions"}
    changed = {c["type"] for c in second["conditions"]}
    assert changed == {"Ready", "ContainersReady"}
