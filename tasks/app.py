"""The Celery app and its configuration, built to lose nothing.

The contract of the configuration:

- A task is acknowledged after it returns (``task_acks_late``), and the
  pod-change task returns only after Kafka confirmed every event it emitted.
- A task whose worker process died (SIGKILL, the OOM killer) goes back to
  the queue (``task_reject_on_worker_lost``) instead of being acknowledged.
- Each process reserves one task at a time (prefetch multiplier 1), so a
  killed process takes at most one unacknowledged task with it.
- One visibility timeout, longer than the longest task, is set everywhere
  that takes it, so Redis never redelivers a task that is still running.
- After a broker reconnect, long-running tasks are cancelled instead of
  finished, because the broker will deliver them again.

This module imports no task code and no Kafka client: the watcher uses it to
send tasks, and only ``celery worker`` loads the modules in ``include``.
"""

from __future__ import annotations

import math
import sys
from datetime import timedelta
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from tasks import names, settings
from tasks.settings import BrokerSettings, WorkerSettings

#: Prefix of celery-redbeat's keys: the entry ``reconcile``, the lock, and
#: redbeat's own ``:schedule`` and ``:statics`` keys.
BEAT_KEY_PREFIX = "pod-monitor:redbeat:"
#: Seconds from the reconciliation's own deadline to Celery's soft time
#: limit, and again from there to the hard limit that kills the process.
TIME_LIMIT_MARGIN_SECONDS = 60


def reconcile_expires_seconds(worker: WorkerSettings) -> float:
    """Return how long a sent reconciliation may wait in the queue.

    A run still queued when the next one is due is pointless, so the
    expiry is shorter than the interval and runs never pile up behind a
    stopped worker. Every trigger uses it: Beat, the CLI and Flower's API.
    """
    return worker.reconcile_interval_seconds * 0.8


def reconcile_time_limits(
    worker: WorkerSettings, broker: BrokerSettings
) -> tuple[int, int]:
    """Return Celery's soft and hard time limits of the reconciliation.

    Both sit above the run's own deadline, which ends a run cleanly with a
    summary. The soft limit stops a run stuck inside one call, and the hard
    one kills a run that ignores the soft one. Raises ``ValueError`` when
    the hard limit does not end before Redis would deliver the task again.
    """
    soft = math.ceil(worker.reconcile_time_limit_seconds + TIME_LIMIT_MARGIN_SECONDS)
    hard = soft + TIME_LIMIT_MARGIN_SECONDS
    if hard >= broker.visibility_timeout_seconds:
        raise ValueError(
            f"POD_MONITOR_RECONCILE_TIME_LIMIT_SECONDS="
            f"{worker.reconcile_time_limit_seconds:g} is invalid: with the margins "
            f"of the time limits a run may last {hard:g} s, which must be less than "
            f"POD_MONITOR_VISIBILITY_TIMEOUT_SECONDS="
            f"{broker.visibility_timeout_seconds}, or Redis delivers it twice"
        )
    return soft, hard


def pod_change_time_limits(
    worker: WorkerSettings, broker: BrokerSettings
) -> tuple[int, int]:
    """Return Celery's soft and hard time limits of the pod-change task.

    A pod-change task holds its execution's lock, so both limits end it
    before the lock expires and another task could emit the same events.
    Raises ``ValueError`` when the lock outlives the visibility timeout.
    """
    lock = worker.execution_lock_seconds
    if lock >= broker.visibility_timeout_seconds:
        raise ValueError(
            f"POD_MONITOR_EXECUTION_LOCK_SECONDS={lock:g} is invalid: it must be "
            f"less than POD_MONITOR_VISIBILITY_TIMEOUT_SECONDS="
            f"{broker.visibility_timeout_seconds}, or Redis delivers a task twice"
        )
    hard = math.floor(lock * 0.95)
    return math.floor(lock * 0.85), hard


def build_config() -> dict[str, Any]:
    """Return the Celery configuration made from the environment."""
    broker = settings.broker()
    worker = settings.worker()
    transport_options: dict[str, Any] = {
        "visibility_timeout": broker.visibility_timeout_seconds,
        "socket_connect_timeout": broker.redis_connect_timeout_seconds,
        "socket_timeout": broker.redis_connect_timeout_seconds * 2,
        "socket_keepalive": True,
        "health_check_interval": 25,
    }
    interval = worker.reconcile_interval_seconds
    return {
        "broker_url": broker.redis_url,
        "result_backend": broker.redis_url,
        "broker_transport_options": transport_options,
        "result_backend_transport_options": dict(transport_options),
        "visibility_timeout": broker.visibility_timeout_seconds,
        "broker_connection_retry_on_startup": True,
        # Keep reconnecting for as long as Redis is away; Celery's default
        # of 100 attempts makes a worker exit during a long outage.
        "broker_connection_max_retries": None,
        "broker_connection_timeout": broker.redis_connect_timeout_seconds,
        # Sending a task with the broker down fails after these retries
        # (about 3.5 s), so the watcher notices and keeps its checkpoint.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 3,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 2.0,
        },
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # On SIGTERM, running tasks get this long to finish before the
        # worker stops them and puts them back on the queue (Celery 5.5+).
        "worker_soft_shutdown_timeout": 60.0,
        "task_track_started": True,
        "result_expires": timedelta(days=1),
        "result_extended": True,
        # Flower reads task events; the watcher's "sent" events let it show
        # tasks that are queued but not yet received.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_default_queue": names.POD_CHANGES_QUEUE,
        # Each queue has an exchange and routing key of its own. A bare
        # Queue(name) binds to the default exchange with the default queue's
        # routing key, so a message for one queue would land in both.
        "task_queues": tuple(
            Queue(name, Exchange(name, type="direct"), routing_key=name)
            for name in (names.POD_CHANGES_QUEUE, names.RECONCILE_QUEUE)
        ),
        "task_routes": {
            names.POD_CHANGED_TASK: {"queue": names.POD_CHANGES_QUEUE},
            names.RECONCILE_TASK: {"queue": names.RECONCILE_QUEUE},
        },
        "beat_schedule": {
            "reconcile": {
                "task": names.RECONCILE_TASK,
                "schedule": timedelta(seconds=interval),
                "options": {"expires": reconcile_expires_seconds(worker)},
            }
        },
        # celery-redbeat keeps the schedule and each entry's last run time in
        # Redis, so a restarted Beat resumes the schedule where it stopped.
        # Its lock lets one Beat send; a second one blocks until the lock is
        # released (on shutdown) or expires (after a kill).
        "beat_scheduler": "redbeat.RedBeatScheduler",
        "redbeat_redis_url": broker.redis_url,
        # Without its own options redbeat 2.4 borrows broker_transport_options
        # (deprecated) and passes none of them to its Redis client.
        "redbeat_redis_options": {
            "socket_connect_timeout": broker.redis_connect_timeout_seconds,
            "socket_timeout": broker.redis_connect_timeout_seconds * 2,
            "socket_keepalive": True,
            "health_check_interval": 25,
        },
        "redbeat_key_prefix": BEAT_KEY_PREFIX,
        "redbeat_lock_key": BEAT_KEY_PREFIX + "lock",
        "redbeat_lock_timeout": int(worker.beat_lock_seconds),
        # Beat renews its lock once per loop, so the loop must come back well
        # within the lock's lifetime, and often enough to keep the schedule.
        "beat_max_loop_interval": min(5.0, interval / 4, worker.beat_lock_seconds / 3),
        "worker_hijack_root_logger": False,
    }


def create_app() -> Celery:
    app = Celery(
        "pod_monitor",
        include=["tasks.pod_changes", "tasks.reconcile", "tasks.worker"],
    )
    app.conf.update(build_config())
    return app


def _create_app_or_exit() -> Celery:
    # Every process that loads the app (worker, Beat, Flower, the CLI)
    # checks every setting first, so a bad one stops it at start with one
    # line naming the variable, instead of failing tasks later.
    try:
        settings.check_all()
        pod_change_time_limits(settings.worker(), settings.broker())
        return create_app()
    except ValueError as error:
        print(f"pod-monitor: invalid configuration: {error}", file=sys.stderr)
        raise SystemExit(2) from None


app = _create_app_or_exit()
