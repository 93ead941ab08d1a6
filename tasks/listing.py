"""Listing the selected pods page by page, as raw JSON.

All pages of one list share the snapshot of the first page. A continue
token expires (410 Gone) once etcd compacted that snapshot; the list then
starts over, and the caller sees ``restarted`` so it can discount what the
earlier pages showed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from kubernetes.client.exceptions import ApiException

from tasks.errors import KubernetesApiError

logger = logging.getLogger(__name__)

_GONE = 410
#: Restarts of one list after expired continue tokens before giving up.
MAX_RESTARTS = 3


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    #: True on the first page after the list started over.
    restarted: bool


def list_pods(
    core_v1: Any,
    *,
    namespaces: Sequence[str],
    label_selector: str,
    page_size: int = 500,
    timeout_seconds: float = 60.0,
) -> Iterator[Page]:
    """Yield pages of the selected pods, in the namespaces or in all (empty).

    Raises ``KubernetesApiError`` when a request fails.
    """
    scopes: Sequence[str | None] = namespaces or [None]
    for namespace in scopes:
        yield from _list_scope(
            core_v1, namespace, label_selector, page_size, timeout_seconds
        )


def _list_scope(
    core_v1: Any,
    namespace: str | None,
    label_selector: str,
    page_size: int,
    timeout_seconds: float,
) -> Iterator[Page]:
    restarts = 0
    token: str | None = None
    restarted = False
    while True:
        kwargs: dict[str, Any] = {
            "label_selector": label_selector,
            "limit": page_size,
            "_preload_content": False,
            "_request_timeout": (10.0, timeout_seconds),
        }
        if token:
            kwargs["_continue"] = token
        try:
            if namespace is None:
                response = core_v1.list_pod_for_all_namespaces(**kwargs)
            else:
                response = core_v1.list_namespaced_pod(namespace, **kwargs)
        except ApiException as error:
            if error.status == _GONE and token and restarts < MAX_RESTARTS:
                restarts += 1
                logger.info(
                    "pod list continue token expired; listing again",
                    extra={"namespace": namespace or "*", "attempt": restarts},
                )
                token, restarted = None, True
                continue
            raise KubernetesApiError(
                f"listing pods in {namespace or 'all namespaces'} failed: "
                f"{error.status} {error.reason}"
            ) from error
        body = orjson.loads(response.data)
        yield Page(items=body.get("items") or [], restarted=restarted)
        restarted = False
        token = (body.get("metadata") or {}).get("continue") or None
        if token is None:
            return
