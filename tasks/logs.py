"""Reading a container log through the API server, streamed and capped.

The log is read with ``limitBytes`` so the API server never sends more than
the cap, and handed on in chunks, so the worker holds at most one chunk of
it plus what the report parser keeps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from tasks.errors import LogReadError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
_NOT_FOUND = 404
_BAD_REQUEST = 400


class LogNotFoundError(Exception):
    """The API server has no log for this container: the pod is gone."""


@dataclass
class LogStream:
    """An open container log: iterate it once for its chunks."""

    chunks: Iterator[bytes]
    limit_bytes: int
    #: Bytes handed out so far; equal to ``limit_bytes`` when the cap cut it.
    read_bytes: int = field(default=0)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.read_bytes += len(chunk)
            yield chunk

    @property
    def cut_by_limit(self) -> bool:
        return self.read_bytes >= self.limit_bytes


@contextmanager
def open_log(
    core_v1: Any,
    *,
    namespace: str,
    pod: str,
    container: str,
    limit_bytes: int,
    timeout_seconds: float,
) -> Iterator[LogStream]:
    """Open the log of one container.

    Raises ``LogNotFoundError`` when the pod or its log no longer exists
    (a pod deleted right after it ended has no log), and ``LogReadError``
    for failures that may pass: the API server or kubelet unreachable, a
    5xx, a stream cut mid-way.
    """
    try:
        response = core_v1.read_namespaced_pod_log(
            name=pod,
            namespace=namespace,
            container=container,
            limit_bytes=limit_bytes,
            _preload_content=False,
            _request_timeout=(10.0, timeout_seconds),
        )
    except ApiException as error:
        if error.status == _NOT_FOUND:
            raise LogNotFoundError(_api_message(error)) from error
        if error.status == _BAD_REQUEST:
            # The container never started, or its node is gone; no later
            # attempt will find a log either.
            raise LogNotFoundError(_api_message(error)) from error
        raise LogReadError(f"reading the log failed: {_api_message(error)}") from error
    except HTTPError as error:
        raise LogReadError(f"reading the log failed: {error}") from error

    def chunks() -> Iterator[bytes]:
        try:
            yield from response.stream(CHUNK_BYTES, decode_content=True)
        except HTTPError as error:
            raise LogReadError(f"the log stream broke: {error}") from error

    try:
        yield LogStream(chunks=chunks(), limit_bytes=limit_bytes)
    finally:
        response.release_conn()


def _api_message(error: ApiException) -> str:
    body = error.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    text = f"{error.status} {error.reason}"
    if body:
        # Kubernetes Status bodies are short, but a proxy's error page is
        # not; keep the log line readable.
        text += f": {str(body)[:300]}"
    return text
