"""Sending pod-change tasks to the Celery broker, retried until they are sent.

A send with the broker down fails in bounded time, because the app's
publish retry policy gives up after 4 attempts. With the Redis port closed
that took 2.1 s (measured on loopback). When packets are dropped instead,
each attempt may also wait the Redis connect timeout. The send is then
retried here with backoff, for as long as it takes.

The caller is the watch loop, which reads no further events meanwhile. So
no change is skipped, and nothing after it is marked as handled in the
checkpoint.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any, Protocol

import kombu.exceptions
import redis

from tasks import names
from tasks.snapshots import PodSnapshot
from watcher.backoff import Backoff
from watcher.clock import Clock
from watcher.errors import StopRequested
from watcher.health import Health
from watcher.metrics import WatcherMetrics

logger = logging.getLogger(__name__)

#: First wait in seconds before sending a task again after a failure.
ENQUEUE_RETRY_INITIAL_SECONDS = 0.5
#: Max wait between two sends. It is short because each failed send
#: already took seconds, and a returning broker should be noticed soon.
ENQUEUE_RETRY_MAX_SECONDS = 10.0

#: Errors of one send that a later send may not have: the broker is down,
#: slow or restarting. Anything else (a bug, an unserializable payload) is
#: raised to the watch loop.
RETRIED_ERRORS: tuple[type[BaseException], ...] = (
    kombu.exceptions.OperationalError,
    redis.RedisError,
    ConnectionError,
    TimeoutError,
    OSError,
)


def configure_sender(app: Any) -> None:
    """Turn off the result backend of the watcher's copy of the Celery app.

    With a Redis result backend, every ``send_task`` also subscribes to the
    task's result channel, so a long-running sender collects one
    subscription per task, and with Redis down it raises ``RuntimeError``
    ("must be restarted") instead of a connection error. The watcher never
    reads results, and the workers store them with their own app.
    """
    app.conf.update(result_backend="disabled")


class Enqueue(Protocol):
    def __call__(self, snapshot: PodSnapshot, scope: str) -> None:
        """Send one snapshot; return once the broker accepted it.

        Raises ``StopRequested`` when asked to stop before that.
        """
        ...


class CeleryEnqueuer:
    """Sends snapshots as ``POD_CHANGED_TASK`` with ``app.send_task``.

    Thread-safe: Celery takes a producer from its pool per send.
    """

    def __init__(
        self,
        app: Any,
        *,
        clock: Clock,
        stop: threading.Event,
        metrics: WatcherMetrics,
        health: Health,
        rng: random.Random | None = None,
    ) -> None:
        self._app = app
        self._clock = clock
        self._stop = stop
        self._metrics = metrics
        self._health = health
        self._rng = rng

    def __call__(self, snapshot: PodSnapshot, scope: str) -> None:
        backoff = Backoff(
            self._clock,
            initial=ENQUEUE_RETRY_INITIAL_SECONDS,
            maximum=ENQUEUE_RETRY_MAX_SECONDS,
            rng=self._rng,
        )
        payload = snapshot.model_dump(mode="json")
        while True:
            if self._stop.is_set():
                raise StopRequested
            try:
                self._app.send_task(
                    names.POD_CHANGED_TASK,
                    args=[payload],
                    queue=names.POD_CHANGES_QUEUE,
                )
            except RETRIED_ERRORS as error:
                self._metrics.enqueue_failures.labels(scope=scope).inc()
                self._health.enqueue_failed(scope)
                delay = backoff.next_delay()
                logger.warning(
                    "sending the task failed, will retry",
                    extra={
                        "scope": scope,
                        "namespace": snapshot.namespace,
                        "pod": snapshot.name,
                        "resource_version": snapshot.resource_version,
                        "attempt": backoff.attempt,
                        "delay_seconds": round(delay, 3),
                        "error": f"{type(error).__name__}: {error}",
                    },
                )
                if self._clock.sleep(delay, self._stop):
                    raise StopRequested from error
                continue

            if backoff.attempt:
                logger.info(
                    "sending the task succeeded after retries",
                    extra={
                        "scope": scope,
                        "namespace": snapshot.namespace,
                        "pod": snapshot.name,
                        "resource_version": snapshot.resource_version,
                        "attempt": backoff.attempt + 1,
                    },
                )
            self._metrics.enqueued.labels(scope=scope).inc()
            self._health.enqueue_succeeded(scope)
            return
