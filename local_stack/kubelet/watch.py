"""The pod watch: list all pods, then watch from the list's resourceVersion.

:func:`watch_pods` never ends on its own. It lists pods (in pages), hands
the list to ``resync``, then runs watch requests from the last known
resourceVersion and hands each event to ``on_event``. A 410 Gone lists again,
which is routine and logged at debug level. Other failures are logged with the
attempt number and retried after a growing pause, with a fresh list.
Per pod, events arrive in the order of the API server, and events that
happened during a failure may be skipped, but the next list has their result.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Any

from local_stack.kubelet.api import ApiError, KubeClient, WatchExpiredError

logger = logging.getLogger(__name__)

#: Range of the server-side timeout of one watch request, in seconds. Random
#: so that restarts of several clients spread out, as client-go does.
WATCH_TIMEOUT_RANGE = (240, 300)

#: Extra seconds the client waits for data beyond the server-side timeout
#: before it declares the connection dead.
READ_GRACE_SECONDS = 30

#: Pods per page when listing.
LIST_PAGE_SIZE = 500

#: Pause after a failure: BACKOFF_START seconds, doubled per failure up to
#: BACKOFF_MAX. It goes back to the start after a successful list.
BACKOFF_START = 0.5
BACKOFF_MAX = 10.0

PODS_PATH = "/api/v1/pods"

EventHandler = Callable[[str, dict[str, Any]], None]
ListHandler = Callable[[list[dict[str, Any]]], None]


def list_pods(client: KubeClient) -> tuple[list[dict[str, Any]], str]:
    """Return every pod and the list's resourceVersion, reading in pages."""
    pods: list[dict[str, Any]] = []
    query: dict[str, str | int] = {"limit": LIST_PAGE_SIZE}
    while True:
        page = client.request("GET", PODS_PATH, query=query)
        pods.extend(page.get("items") or [])
        metadata = page.get("metadata") or {}
        token = metadata.get("continue")
        if not token:
            return pods, str(metadata.get("resourceVersion", ""))
        query = {"limit": LIST_PAGE_SIZE, "continue": token}


def watch_once(
    client: KubeClient, resource_version: str, on_event: EventHandler
) -> str:
    """Run one watch request and return the last resourceVersion seen.

    Raise WatchExpiredError when the version is too old and ApiError on failures.
    """
    timeout = random.randint(*WATCH_TIMEOUT_RANGE)  # noqa: S311 (not for security)
    query: dict[str, str | int] = {
        "resourceVersion": resource_version,
        "allowWatchBookmarks": "true",
        "timeoutSeconds": timeout,
    }
    for event in client.watch(
        PODS_PATH, query, read_timeout=timeout + READ_GRACE_SECONDS
    ):
        kind = event.get("type", "")
        pod = event.get("object") or {}
        resource_version = pod.get("metadata", {}).get(
            "resourceVersion", resource_version
        )
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            on_event(kind, pod)
    return resource_version


def watch_pods(
    client: KubeClient,
    resync: ListHandler,
    on_event: EventHandler,
    stop: threading.Event,
) -> None:
    """List and watch pods until ``stop`` is set."""
    failures = 0
    while not stop.is_set():
        try:
            pods, resource_version = list_pods(client)
            resync(pods)
            failures = 0
            while not stop.is_set():
                resource_version = watch_once(client, resource_version, on_event)
        except WatchExpiredError:
            logger.debug("watch expired, listing again")
        except ApiError as error:
            failures += 1
            pause = min(BACKOFF_MAX, BACKOFF_START * 2 ** (failures - 1))
            logger.warning(
                "pod watch failed, will retry",
                extra={
                    "attempt": failures,
                    "pause_seconds": pause,
                    "error": str(error),
                },
            )
            stop.wait(pause)
