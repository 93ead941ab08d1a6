"""Prometheus metrics of the workers, across all prefork processes.

Set ``POD_MONITOR_WORKER_METRICS_PORT`` to serve them from the worker's
main process at ``/metrics``. The prefork children count, the main process
serves: prometheus_client's multiprocess mode keeps each process's counts
in files under ``PROMETHEUS_MULTIPROC_DIR``, and the server adds them up.
prometheus_client picks that mode when it is first imported, which in a
worker has already happened: the ``celery`` command loads Flower's command
entry point, and Flower imports prometheus_client. So this module sets the
folder (a new temporary one, unless the variable is set) and then picks the
value class again, before it creates its metrics. The worker imports this
module before it forks.

Without the port, the counters still exist, in this process only, and
nothing serves them.
"""

from __future__ import annotations

import logging
import os
import tempfile

from tasks import settings

logger = logging.getLogger(__name__)

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

if settings.worker().worker_metrics_port and not os.environ.get(MULTIPROC_VARIABLE):
    os.environ[MULTIPROC_VARIABLE] = tempfile.mkdtemp(prefix="pod-monitor-metrics-")

# The imports below must follow the folder's setup above.
from prometheus_client import (  # noqa: E402
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
    start_http_server,
    values,
)

# Metrics take their value class when they are created, from this module
# attribute of prometheus_client (0.26), read again here from the variable.
values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]

_PREFIX = "pod_monitor_worker_"

EVENTS_PUBLISHED = Counter(
    _PREFIX + "events_published",
    "Events Kafka confirmed, by event type.",
    ["event_type"],
)
TERMINAL_REASONS = Counter(
    _PREFIX + "terminal_events",
    "Terminal events Kafka confirmed, by reason.",
    ["reason"],
)
PUBLISH_FAILURES = Counter(
    _PREFIX + "publish_failures",
    "Publishes that Kafka did not confirm; the task retries them.",
)
LOG_READS = Counter(
    _PREFIX + "log_reads",
    "Container log reads, by outcome: read, not_found, failed, skipped.",
    ["status"],
)
TASK_RETRIES = Counter(
    _PREFIX + "task_retries",
    "Pod-change tasks sent back for a later attempt, by error.",
    ["error"],
)
PUBLISH_SECONDS = Histogram(
    _PREFIX + "publish_seconds",
    "Seconds from producing an event to Kafka's delivery report.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0),
)


def serve() -> int | None:
    """Serve the metrics of every process of this worker; return the port.

    Returns None when ``POD_MONITOR_WORKER_METRICS_PORT`` is unset (0).
    Call it in the worker's main process.
    """
    worker = settings.worker()
    if not worker.worker_metrics_port:
        return None
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(
        worker.worker_metrics_port, addr=worker.worker_metrics_host, registry=registry
    )
    logger.info(
        "worker metrics served",
        extra={"host": worker.worker_metrics_host, "port": worker.worker_metrics_port},
    )
    return worker.worker_metrics_port


def forget_process(pid: int) -> None:
    """Drop the live-gauge files of a process that exited."""
    if os.environ.get(MULTIPROC_VARIABLE):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
