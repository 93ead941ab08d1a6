"""The list-then-watch ladder of one scope: endless loop, one session, one stream.

The contract of the watcher, per scope (one namespace, or all of them):

- Per pod, snapshots are enqueued in the order the API server recorded the
  changes (by resourceVersion), because one thread reads one stream and
  sends each task before it reads the next event.
- Intermediate states may be skipped: a change whose change key equals the
  one last enqueued for the pod is not sent, and a relist after a gap (410,
  restart) sends only the current state of each pod.
- Delivery is at least once. A change is marked as handled (in memory and
  in the checkpoint) only after its task was sent, or after it was skipped
  as mattering to no event. After a crash the watch resumes from the
  checkpoint, which may replay changes that were already sent.
- Duplicates are harmless because the tasks are idempotent.
- A pod deleted while no watch was open is sent as a deleted snapshot by
  the next relist if this process remembers it. After a restart the
  watcher remembers nothing, so such a pod is left to the reconciliation.
- Nothing is promised across pods or across scopes.

The ladder, after kopf's watching and client-go's reflector:

``ScopeWatcher.run``
    the endless loop: runs sessions, backs off after each one that fails,
    returns only when asked to stop.
``ScopeWatcher._session``
    resumes from the in-memory resourceVersion or the stored checkpoint, or
    lists; then watches stream after stream until one fails.
``ScopeWatcher._stream``
    one watch request with a random server timeout and a client read
    timeout above it; ends normally when the server closes it.

A 410 (ERROR event with a Status of code 410, reason Expired or Gone, or an
HTTP 410) is routine: logged at debug level, then the session lists again.
Other ERROR events raise ``WatchError`` and the loop backs off.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from typing import Any

import orjson

from tasks.settings import PodSelection
from watcher.backoff import Backoff
from watcher.changes import PodChanges, PodMemory, SkipWarnings
from watcher.checkpoint import Checkpointer
from watcher.clock import Clock
from watcher.enqueue import Enqueue
from watcher.errors import (
    ApiError,
    ApiUnavailableError,
    CheckpointError,
    ResourceVersionExpiredError,
    StopRequested,
    StreamStalledError,
    WatchError,
    cut,
)
from watcher.health import Health
from watcher.listing import list_pages
from watcher.metrics import WatcherMetrics
from watcher.podapi import PodApi
from watcher.scope import Scope

logger = logging.getLogger(__name__)

POD_EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED"})

#: A watch that the server closes sooner than this, with no event, counts as
#: a failure (backoff), so a proxy that closes every request at once does
#: not make the watcher reconnect in a tight loop. client-go does the same.
SHORT_WATCH_SECONDS = 1.0

#: Characters of an invalid line kept in its log message.
MAX_LOGGED_LINE_CHARS = 200

#: Errors after which the loop backs off and starts a new session.
SESSION_ERRORS: tuple[type[Exception], ...] = (
    ApiUnavailableError,
    ApiError,
    WatchError,
    CheckpointError,
    ResourceVersionExpiredError,
)


@dataclass(frozen=True)
class WatchOptions:
    """Timeouts and sizes of the requests of one scope."""

    #: Bounds in seconds of the random ``timeoutSeconds`` of one watch.
    timeout_min_seconds: int = 300
    timeout_max_seconds: int = 600
    #: The client read timeout is the server timeout plus this margin, so a
    #: healthy idle stream ends by the server, and a stalled one by us.
    read_timeout_margin_seconds: float = 30.0
    list_page_size: int = 500


class ScopeWatcher:
    """Lists and watches the selected pods of one scope and enqueues their changes."""

    def __init__(
        self,
        scope: Scope,
        *,
        api: PodApi,
        selection: PodSelection,
        enqueue: Enqueue,
        checkpointer: Checkpointer,
        metrics: WatcherMetrics,
        health: Health,
        clock: Clock,
        stop: threading.Event,
        options: WatchOptions,
        skip_warning_interval: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        self.scope = scope
        self._api = api
        self._selection = selection
        self._checkpointer = checkpointer
        self._metrics = metrics
        self._health = health
        self._clock = clock
        self._stop = stop
        self._options = options
        self._rng = rng or random.Random()  # noqa: S311 - timeouts, not security
        self._backoff = Backoff(clock, rng=self._rng)
        self._line_warnings = SkipWarnings(clock, skip_warning_interval)
        self.changes = PodChanges(
            scope.name,
            selection=selection,
            enqueue=enqueue,
            metrics=metrics,
            warnings=SkipWarnings(clock, skip_warning_interval),
        )
        #: The resourceVersion up to which every change is handled.
        self.resource_version: str | None = None
        self._checkpoint_loaded = False
        self._list_cause = "start"
        #: True from a resume from the checkpoint until its first event.
        self._resuming = False
        health.register(scope.name)

    @property
    def memory(self) -> PodMemory:
        """Return what this loop last enqueued per pod."""
        return self.changes.memory

    # The endless loop.

    def run(self) -> None:
        """Watch until the stop event is set.

        Returns only then. Errors of the API server and Redis end a session,
        which is retried with backoff. Any other exception is a bug and
        propagates, so the process exits and restarts from the checkpoint.
        """
        fields = {"scope": self.scope.name}
        logger.info("watch loop started", extra=fields)
        level = logging.INFO
        while not self._stop.is_set():
            try:
                self._session()
            except StopRequested:
                break
            except SESSION_ERRORS as error:
                if self._stop.is_set():
                    break
                level = self._record_failure(error)
            if self._sleep_before_retry(level):
                break
        self._checkpointer.flush()
        logger.info(
            "watch loop stopped",
            extra={**fields, "resource_version": self.resource_version},
        )

    def _record_failure(self, error: Exception) -> int:
        """Count and log a failed session; return the log level of the retry."""
        fields: dict[str, Any] = {
            "scope": self.scope.name,
            "resource_version": self.resource_version,
            "error": f"{type(error).__name__}: {error}",
        }
        if isinstance(error, ResourceVersionExpiredError):
            # The next session lists, and must not resume from a checkpoint
            # that is older still.
            self._metrics.expired.labels(
                scope=self.scope.name, source=error.source
            ).inc()
            self.resource_version = None
            self._checkpoint_loaded = True
            self._list_cause = "expired"
            self._resuming = False
            logger.debug("resourceVersion expired, will list again", extra=fields)
            return logging.DEBUG
        cause = "stalled" if isinstance(error, StreamStalledError) else "error"
        self._metrics.reconnects.labels(scope=self.scope.name, cause=cause).inc()
        logger.warning("watch session failed, will retry", extra=fields)
        return logging.INFO

    def _sleep_before_retry(self, level: int) -> bool:
        delay = self._backoff.next_delay()
        logger.log(
            level,
            "waiting before the next watch session",
            extra={
                "scope": self.scope.name,
                "attempt": self._backoff.attempt,
                "delay_seconds": round(delay, 3),
            },
        )
        self._health.beat(self.scope.name)
        return self._clock.sleep(delay, self._stop)

    # One session: resume or list, then stream after stream.

    def _session(self) -> None:
        resource_version = self._start_position()
        while True:
            resource_version = self._stream(resource_version)

    def _start_position(self) -> str:
        if self.resource_version is None and not self._checkpoint_loaded:
            stored = self._checkpointer.load()
            self._checkpoint_loaded = True
            if stored is not None:
                logger.info(
                    "resuming from the checkpoint",
                    extra={"scope": self.scope.name, "resource_version": stored},
                )
                self.resource_version = stored
                self._resuming = True
        if self.resource_version is None:
            return self._relist()
        return self.resource_version

    def _relist(self) -> str:
        cause = self._list_cause
        self._metrics.relists.labels(scope=self.scope.name, cause=cause).inc()
        logger.info("listing pods", extra={"scope": self.scope.name, "cause": cause})

        listed: set[str] = set()
        list_version = ""
        for page in list_pages(
            self._api,
            self.scope,
            label_selector=self._selection.label_selector,
            page_size=self._options.list_page_size,
        ):
            self._health.heard(self.scope.name)
            if page.first:
                listed = set()
            for pod in page.items:
                uid = (pod.get("metadata") or {}).get("uid")
                if isinstance(uid, str):
                    listed.add(uid)
                self.changes.handle(pod, deleted=False)
            list_version = page.resource_version
        if not list_version:
            raise ApiError(200, "pod list has no metadata.resourceVersion")

        # Pods remembered but no longer listed were deleted (or stopped
        # matching the selector) while no watch was open.
        self.changes.send_tombstones(listed)

        self.resource_version = list_version
        self._list_cause = "start"
        self._checkpointer.advance(list_version)
        self._checkpointer.flush()
        logger.info(
            "listed pods",
            extra={
                "scope": self.scope.name,
                "pods": len(listed),
                "resource_version": list_version,
            },
        )
        return list_version

    # One stream.

    def _stream(self, resource_version: str) -> str:
        """Watch from ``resource_version`` until the server ends the request.

        Returns the resourceVersion to watch from next. Raises
        ``ResourceVersionExpiredError`` on a 410, ``WatchError`` on other ERROR
        events, and the errors of the request.
        """
        timeout = self._rng.randint(
            self._options.timeout_min_seconds, self._options.timeout_max_seconds
        )
        read_timeout = timeout + self._options.read_timeout_margin_seconds
        started = self._clock.monotonic()
        events = 0
        fields = {"scope": self.scope.name, "resource_version": resource_version}
        try:
            with self._api.watch_pods(
                self.scope,
                label_selector=self._selection.label_selector,
                resource_version=resource_version,
                timeout_seconds=timeout,
                read_timeout=read_timeout,
            ) as lines:
                self._set_established(True)
                logger.debug(
                    "watch started", extra={**fields, "timeout_seconds": timeout}
                )
                for line in lines:
                    self._health.heard(self.scope.name)
                    if self._stop.is_set():
                        raise StopRequested
                    event = self._parse(line)
                    if event is not None:
                        events += 1
                        self._handle_event(event)
        except ApiError as error:
            if error.status == 410:
                raise ResourceVersionExpiredError(
                    str(error), source=self._expiry_source()
                ) from error
            raise
        finally:
            self._set_established(False)
            self._checkpointer.flush()

        if events == 0 and self._clock.monotonic() - started < SHORT_WATCH_SECONDS:
            raise ApiUnavailableError(
                f"watch closed within {SHORT_WATCH_SECONDS} s without events"
            )
        self._metrics.reconnects.labels(scope=self.scope.name, cause="closed").inc()
        logger.debug(
            "watch closed by the server, watching again",
            extra={
                **fields,
                "events": events,
                "next_resource_version": self.resource_version,
            },
        )
        assert self.resource_version is not None  # set before any stream starts
        return self.resource_version

    def _set_established(self, established: bool) -> None:
        self._health.set_established(self.scope.name, established)
        self._metrics.watch_established.labels(scope=self.scope.name).set(
            int(established)
        )

    def _expiry_source(self) -> str:
        return "resume" if self._resuming else "watch"

    def _parse(self, line: bytes) -> dict[str, Any] | None:
        if not line.strip():
            return None
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            event = None
        if isinstance(event, dict) and isinstance(event.get("type"), str):
            return event
        self._metrics.invalid_lines.labels(scope=self.scope.name).inc()
        self._line_warnings.warn(
            "watch line is not a JSON watch event, skipping it",
            scope=self.scope.name,
            line=cut(line.decode("utf-8", errors="replace"), MAX_LOGGED_LINE_CHARS),
        )
        return None

    def _handle_event(self, event: dict[str, Any]) -> None:
        event_type = event["type"]
        obj = event.get("object")
        self._metrics.events.labels(scope=self.scope.name, type=event_type).inc()
        if not isinstance(obj, dict):
            self._metrics.invalid_lines.labels(scope=self.scope.name).inc()
            logger.warning(
                "watch event has no object, skipping it",
                extra={"scope": self.scope.name, "type": event_type},
            )
            return

        if event_type == "ERROR":
            self._raise_for_error(obj)
        resource_version = (obj.get("metadata") or {}).get("resourceVersion")
        if event_type == "BOOKMARK":
            if isinstance(resource_version, str) and resource_version:
                self._advance(resource_version)
                self._checkpointer.flush()
            return
        if event_type not in POD_EVENT_TYPES:
            self._metrics.invalid_lines.labels(scope=self.scope.name).inc()
            logger.warning(
                "watch event has an unknown type, skipping it",
                extra={"scope": self.scope.name, "type": event_type},
            )
            return

        self.changes.handle(obj, deleted=event_type == "DELETED")
        if isinstance(resource_version, str) and resource_version:
            self._advance(resource_version)

    def _raise_for_error(self, status: dict[str, Any]) -> None:
        code = status.get("code")
        reason = str(status.get("reason") or "")
        message = str(status.get("message") or "")
        if code == 410:
            raise ResourceVersionExpiredError(
                f"{reason}: {message}", source=self._expiry_source()
            )
        raise WatchError(code if isinstance(code, int) else None, reason, message)

    def _advance(self, resource_version: str) -> None:
        self._resuming = False
        self.resource_version = resource_version
        self._checkpointer.advance(resource_version)
