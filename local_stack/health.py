"""Wait for a component's health check, failing fast when its process dies."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from local_stack.errors import ComponentFailedError
from local_stack.processes import START_MARKER

logger = logging.getLogger(__name__)

#: Seconds between two attempts of a health check.
_POLL_INTERVAL = 0.25

#: Lines of the component's log quoted in a failure message.
_LOG_TAIL_LINES = 15

#: A health check returns None when healthy, else the reason it is not.
HealthCheck = Callable[[], "str | None"]


def wait_until_healthy(
    component: str,
    check: HealthCheck,
    *,
    is_running: Callable[[], bool],
    timeout: float,
    log_path: Path,
) -> float:
    """Run `check` until it passes and return the seconds that took.

    Raises ComponentFailedError with the last reason and the tail of the log
    when the process exits or `timeout` seconds pass first.
    """
    started = time.monotonic()
    deadline = started + timeout
    reason = "no health check ran"
    while True:
        reason = check() or ""
        if not reason:
            return time.monotonic() - started
        if not is_running():
            raise ComponentFailedError(
                component, f"process exited ({reason}){_log_tail(log_path)}", log_path
            )
        if time.monotonic() >= deadline:
            raise ComponentFailedError(
                component,
                f"not healthy after {timeout:.0f}s: {reason}{_log_tail(log_path)}",
                log_path,
            )
        logger.debug("%s not healthy yet: %s", component, reason)
        time.sleep(_POLL_INTERVAL)


def _log_tail(log_path: Path) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    # Quote only the latest run, which starts after the last start marker.
    latest = text.rsplit(START_MARKER, 1)[-1]
    lines = latest.splitlines()[-_LOG_TAIL_LINES:]
    quoted = "\n    ".join(line[:300] for line in lines)
    return f"\n  last lines of the log:\n    {quoted}\n "
