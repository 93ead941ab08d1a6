"""Errors of the watcher, raised at the boundary to the API server and Redis.

Client errors (urllib3, kubernetes, redis-py) are wrapped here, chained with
``from``, so the watch loop decides what to retry by these classes alone.
"""

from __future__ import annotations

#: Characters of a response body kept in an error message; API server and
#: proxy error pages can be large.
MAX_BODY_CHARS = 512


def cut(text: str, limit: int = MAX_BODY_CHARS) -> str:
    """Return ``text`` cut to ``limit`` characters, marked when cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + "... [cut]"


class WatcherError(Exception):
    """Base class of the errors that the watch loop handles."""


class ApiUnavailableError(WatcherError):
    """The API server could not be reached, or a connection to it broke."""


class StreamStalledError(ApiUnavailableError):
    """No bytes arrived on a watch stream within the client read timeout."""


class ApiError(WatcherError):
    """The API server returned an HTTP error status."""

    def __init__(self, status: int, reason: str, body: str = "") -> None:
        self.status = status
        self.reason = reason
        self.body = cut(body)
        super().__init__(f"HTTP {status} {reason}: {self.body}")


class ResourceVersionExpiredError(WatcherError):
    """The API server no longer has the requested resourceVersion (HTTP 410).

    It comes as an ERROR watch event, as a 410 response to a watch or to a
    list continue token. It is routine: the watcher lists again.
    """

    def __init__(self, message: str, *, source: str = "watch") -> None:
        #: Where the 410 came: ``watch``, ``resume`` (the first watch from a
        #: stored checkpoint) or ``list``.
        self.source = source
        super().__init__(message)


class WatchError(WatcherError):
    """The watch stream sent an ERROR event other than 410 Gone."""

    def __init__(self, code: int | None, reason: str, message: str) -> None:
        self.code = code
        self.reason = reason
        self.message = cut(message)
        super().__init__(f"watch ERROR event: code={code} reason={reason}: {message}")


class CheckpointError(WatcherError):
    """Reading or writing the checkpoint in Redis failed."""


class StopRequested(Exception):  # noqa: N818 - control flow, not an error
    """The watcher was asked to stop while it waited or retried."""
