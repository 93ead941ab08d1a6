"""The two requests the watcher makes on pods: a list page and a watch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from watcher.kube import KubeClient
from watcher.scope import Scope

JsonObject = dict[str, Any]


class PodApi(Protocol):
    """Pods of a scope as the API server serializes them (camelCase JSON)."""

    def list_pods(
        self,
        scope: Scope,
        *,
        label_selector: str,
        limit: int,
        continue_token: str | None,
    ) -> JsonObject:
        """Return one page of a PodList.

        Raises ``ApiError`` (status 410 when the continue token expired) or
        ``ApiUnavailableError``.
        """
        ...

    def watch_pods(
        self,
        scope: Scope,
        *,
        label_selector: str,
        resource_version: str,
        timeout_seconds: int,
        read_timeout: float,
    ) -> contextlib.AbstractContextManager[Iterable[bytes]]:
        """Open a watch from ``resource_version`` that yields its raw lines.

        Iterating raises ``StreamStalledError`` after ``read_timeout`` seconds
        without bytes and ``ApiUnavailableError`` when the connection breaks.
        """
        ...


class KubePodApi:
    """``PodApi`` over the API server."""

    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube
        self._active: set[Any] = set()

    def list_pods(
        self,
        scope: Scope,
        *,
        label_selector: str,
        limit: int,
        continue_token: str | None,
    ) -> JsonObject:
        # No resourceVersion: a consistent read of the latest state, which a
        # relist after 410 needs ("0" may return an older state).
        query = [("labelSelector", label_selector), ("limit", str(limit))]
        if continue_token:
            query.append(("continue", continue_token))
        return self._kube.request_json("GET", scope.pods_path, query=query)

    @contextlib.contextmanager
    def watch_pods(
        self,
        scope: Scope,
        *,
        label_selector: str,
        resource_version: str,
        timeout_seconds: int,
        read_timeout: float,
    ) -> Iterator[Iterable[bytes]]:
        query = [
            ("labelSelector", label_selector),
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        with self._kube.open_stream(
            scope.pods_path, query=query, read_timeout=read_timeout
        ) as stream:
            self._active.add(stream)
            try:
                yield stream
            finally:
                self._active.discard(stream)

    def interrupt(self) -> None:
        """Unblock every open watch, so that a stop does not wait for a read."""
        for stream in list(self._active):
            stream.interrupt()
