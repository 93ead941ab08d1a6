"""Per-process setup of the Celery workers: logging, clients after fork.

``worker_process_init`` runs in each prefork child right after the fork.
The Kafka producer is created there, never in the parent, because
librdkafka's threads do not survive a fork. A handler that blocks for more
than 4 seconds gets the child killed, so nothing here waits on a network.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

# Imported before the pool forks, so that every child counts into the
# multiprocess folder the main process serves.
from tasks import logfmt, metrics, publishing, settings

logger = logging.getLogger(__name__)


@signals.setup_logging.connect
def _setup_logging(loglevel: str | None = None, **_: Any) -> None:
    # Connecting to this signal stops Celery from configuring logging itself.
    logfmt.configure_from_environment(loglevel if isinstance(loglevel, str) else None)


@signals.worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    metrics.serve()


@signals.worker_process_init.connect
def _create_clients(**_: Any) -> None:
    # Creating the producer only builds librdkafka's handle; it connects in
    # the background, so this returns at once.
    publishing.publisher(settings.kafka())


@signals.worker_process_shutdown.connect
def _close_clients(pid: int | None = None, **_: Any) -> None:
    publishing.close_publisher()
    if pid is not None:
        metrics.forget_process(pid)
