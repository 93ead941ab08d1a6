"""Unit tests of splitting a watch stream into lines, and of the log formats."""

from __future__ import annotations

import logging

import orjson
import pytest

from tasks.logfmt import JsonFormatter, KeyValueFormatter
from watcher.kube import split_lines


@pytest.mark.parametrize(
    ("chunks", "lines"),
    [
        ([b'{"a":1}\n'], [b'{"a":1}']),
        ([b'{"a":', b"1}\n", b'{"b":2}\n'], [b'{"a":1}', b'{"b":2}']),
        ([b'{"a":1}\n{"b"', b":2}\n"], [b'{"a":1}', b'{"b":2}']),
        ([b'{"a":1}\n\n'], [b'{"a":1}', b""]),
        ([b'{"a":1}'], [b'{"a":1}']),
        ([b"caf\xc3", b"\xa9\n"], ["café".encode()]),
        ([], []),
    ],
)
def test_split_lines(chunks: list[bytes], lines: list[bytes]) -> None:
    assert list(split_lines(chunks)) == lines


def record(**fields: object) -> logging.LogRecord:
    log_record = logging.LogRecord(
        "watcher.x", logging.INFO, "f", 1, "watch started", None, None
    )
    for key, value in fields.items():
        setattr(log_record, key, value)
    return log_record


def test_key_value_format_quotes_values() -> None:
    line = KeyValueFormatter().format(
        record(scope="namespace:jobs", pod="a b", message_text='say "hi"', gone=None)
    )

    assert 'msg="watch started"' in line
    assert "scope=namespace:jobs" in line
    assert 'pod="a b"' in line
    assert 'message_text="say \\"hi\\""' in line
    assert "gone=null" in line
    assert "\n" not in line


def test_json_format_has_fields() -> None:
    data = orjson.loads(JsonFormatter().format(record(resource_version="42")))

    assert data["msg"] == "watch started"
    assert data["level"] == "info"
    assert data["resource_version"] == "42"
