"""Structured log lines: a constant message, then the fields as key=value.

``logger.info("event published", extra={"execution_id": ...})`` prints
``... INFO tasks.handling event published execution_id=e-1 pod=p``, which
people read and log pipelines parse. Set ``POD_MONITOR_LOG_FORMAT=json``
for one JSON object per line instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys

#: Attributes every LogRecord has; anything else came in through ``extra``.
#: Celery's own ``data`` extra repeats the whole task, arguments included,
#: so it is left out too.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
    "data",
}


def fields_of(record: logging.LogRecord) -> dict[str, object]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_") and value is not None
    }


class KeyValueFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        pairs = " ".join(
            f"{key}={_quote(value)}" for key, value in fields_of(record).items()
        )
        if not pairs:
            return text
        head, _, tail = text.partition("\n")
        return f"{head} {pairs}" + (f"\n{tail}" if tail else "")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **fields_of(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str | None = None) -> None:
    """Send log lines of every logger to stderr in the configured format."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("POD_MONITOR_LOG_FORMAT", "text").lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("POD_MONITOR_LOG_LEVEL", "INFO").upper())


def _quote(value: object) -> str:
    text = str(value)
    if not text or any(ch in text for ch in ' "=\n'):
        return json.dumps(text)
    return text
