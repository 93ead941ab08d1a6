"""Structured log lines of the watcher and the workers: logfmt or JSON.

A record's message is constant; its fields come from ``extra={...}``, so
``logger.info("watch started", extra={"scope": s, "resource_version": rv})``
prints ``... msg="watch started" scope=all-namespaces resource_version=42``.
"""

from __future__ import annotations

import enum
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

import orjson


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


#: Attributes every LogRecord has; anything else on a record is a field.
#: Celery's own ``data`` field repeats the whole task, arguments included,
#: so it is left out too.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName", "data"}
)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Return the fields passed through ``extra``, in the order given."""
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _entry(formatter: logging.Formatter, record: logging.LogRecord) -> dict[str, Any]:
    """Return the fields of one log line, in the order they are printed."""
    entry: dict[str, Any] = {
        "ts": _timestamp(record),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
        **record_fields(record),
    }
    if record.exc_info:
        entry["exception"] = formatter.formatException(record.exc_info)
    return entry


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=info logger=... msg="..." key=value ...`` (logfmt)."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = _entry(self, record)
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in pairs.items())


_LOGFMT_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t"})


def _logfmt_value(value: Any) -> str:
    text = "null" if value is None else str(value)
    if text and not any(c in text for c in ' ="\\\n\t'):
        return text
    return '"' + text.translate(_LOGFMT_ESCAPES) + '"'


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, fields."""

    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(_entry(self, record), default=str).decode()


def configure_logging(log_format: LogFormat, level: str) -> None:
    """Send every log record to stderr in ``log_format`` at ``level``.

    Raises ``ValueError`` when ``level`` is not a level name.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"{level!r} is not a log level name")
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if log_format is LogFormat.JSON else KeyValueFormatter()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)


def configure_from_environment(level: str | None = None) -> None:
    """Configure logging from ``POD_MONITOR_LOG_FORMAT`` and ``_LOG_LEVEL``.

    Celery workers and Beat use it; ``level`` (Celery's ``-l``) wins over
    the environment. An invalid value raises ``ValueError`` naming it.
    """
    raw_format = os.environ.get("POD_MONITOR_LOG_FORMAT", LogFormat.TEXT.value)
    try:
        log_format = LogFormat(raw_format.lower())
    except ValueError:
        raise ValueError(
            f"POD_MONITOR_LOG_FORMAT={raw_format!r} is invalid; use text or json"
        ) from None
    configure_logging(
        log_format, level or os.environ.get("POD_MONITOR_LOG_LEVEL", "INFO")
    )
