"""Listing the selected pods of a scope, page by page.

All pages of one list share one snapshot of the cluster at the list's
resourceVersion. A continue token expires (410) once etcd compacted that
snapshot; the list then starts again from the first page.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from watcher.errors import ApiError, ResourceVersionExpiredError
from watcher.podapi import PodApi
from watcher.scope import Scope

logger = logging.getLogger(__name__)

#: Times one list starts again after an expired continue token before the
#: watch loop backs off; each restart means the pages took minutes.
MAX_LIST_RESTARTS = 3


@dataclass(frozen=True)
class ListPage:
    """One page of pods."""

    items: list[dict[str, Any]]
    resource_version: str
    #: True for the first page of a list attempt: what earlier pages of an
    #: expired attempt showed is no longer part of this list.
    first: bool
    #: True for the last page; its resourceVersion is the list's.
    last: bool


def list_pages(
    api: PodApi, scope: Scope, *, label_selector: str, page_size: int
) -> Iterator[ListPage]:
    """Yield the pages of one consistent list of the selected pods.

    Raises ``ResourceVersionExpiredError`` after ``MAX_LIST_RESTARTS`` restarts,
    and ``ApiError`` or ``ApiUnavailableError`` as the requests do.
    """
    restarts = 0
    continue_token: str | None = None
    while True:
        try:
            page = api.list_pods(
                scope,
                label_selector=label_selector,
                limit=page_size,
                continue_token=continue_token,
            )
        except ApiError as error:
            if error.status != 410 or continue_token is None:
                raise
            restarts += 1
            if restarts > MAX_LIST_RESTARTS:
                raise ResourceVersionExpiredError(
                    f"list continue token expired {restarts} times", source="list"
                ) from error
            logger.info(
                "list continue token expired, listing again",
                extra={
                    "scope": scope.name,
                    "attempt": restarts,
                    "limit": MAX_LIST_RESTARTS,
                },
            )
            continue_token = None
            continue

        metadata = page.get("metadata") or {}
        next_token = metadata.get("continue") or None
        yield ListPage(
            items=list(page.get("items") or ()),
            resource_version=str(metadata.get("resourceVersion", "")),
            first=continue_token is None,
            last=next_token is None,
        )
        if next_token is None:
            return
        continue_token = next_token
