"""Cutting a terminal event's output so the event fits one Kafka message.

An event must always go out: losing an execution's end because its output
was large is worse than losing the end of its output. So the output is cut
to fit the topic's message size, and the cut is flagged in the event.
"""

from __future__ import annotations

import json

from tasks.events import CapturedOutput, TerminalEvent

#: Bytes kept free for the record's headers and framing.
HEADROOM_BYTES = 2048
#: Attempts at sharing the space between the streams; each shrinks the
#: budget by the excess the last one measured.
_MAX_ATTEMPTS = 8


def fit_event(event: TerminalEvent, max_bytes: int) -> TerminalEvent:
    """Return ``event``, with stdout and stderr cut so that it fits ``max_bytes``.

    The two streams share the space left after the rest of the event; a
    stream that needs less than half leaves the rest to the other. Cut text
    stays valid UTF-8, and a cut stream has ``truncated`` set.
    """
    limit = max_bytes - HEADROOM_BYTES
    if _size(event) <= limit:
        return event

    empty = _with_output(event, _cut(event.stdout, 0), _cut(event.stderr, 0))
    budget = max(0, limit - _size(empty))
    for _ in range(_MAX_ATTEMPTS):
        stdout_budget, stderr_budget = _split(
            budget, _data_size(event.stdout), _data_size(event.stderr)
        )
        fitted = _with_output(
            event,
            _fit_output(event.stdout, stdout_budget),
            _fit_output(event.stderr, stderr_budget),
        )
        excess = _size(fitted) - limit
        if excess <= 0:
            return fitted
        budget = max(0, budget - excess)
    # NOTE: reached only when the rest of the event alone exceeds the limit;
    # snapshots cap Kubernetes messages at a few KiB, far below any limit.
    return empty


def _split(budget: int, stdout_need: int, stderr_need: int) -> tuple[int, int]:
    half = budget // 2
    stdout_budget = min(stdout_need, max(half, budget - stderr_need))
    return stdout_budget, min(stderr_need, budget - stdout_budget)


def _fit_output(output: CapturedOutput | None, budget: int) -> CapturedOutput | None:
    if output is None or _data_size(output) <= budget:
        return output
    # Binary search for the longest prefix that fits: JSON escapes make a
    # byte of output take one to six bytes of event, so no ratio predicts it.
    low, high = 0, output.size_bytes
    while low < high:
        middle = (low + high + 1) // 2
        if _data_size(_cut(output, middle)) <= budget:
            low = middle
        else:
            high = middle - 1
    return _cut(output, low)


def _cut(output: CapturedOutput | None, keep: int) -> CapturedOutput | None:
    if output is None:
        return None
    kept = output.to_bytes()[:keep]
    if output.encoding == "utf-8":
        # Drop a character that the cut split in two, so the text stays valid.
        kept = kept.decode("utf-8", errors="ignore").encode("utf-8")
    return CapturedOutput.from_bytes(
        kept, original_size_bytes=output.original_size_bytes, truncated=True
    )


def _with_output(
    event: TerminalEvent, stdout: CapturedOutput | None, stderr: CapturedOutput | None
) -> TerminalEvent:
    return event.model_copy(update={"stdout": stdout, "stderr": stderr})


def _data_size(output: CapturedOutput | None) -> int:
    if output is None:
        return 0
    return len(json.dumps(output.data, ensure_ascii=False).encode("utf-8"))


def _size(event: TerminalEvent) -> int:
    return len(event.model_dump_json().encode("utf-8"))
