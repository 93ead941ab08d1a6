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

from datetime import timedelta
from typing import Any

from celery import Celery
from kombu import Queue

from tasks import names, settings


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
        "task_track_started": True,
        "result_expires": timedelta(days=1),
        "result_extended": True,
        # Flower reads task events; the watcher's "sent" events let it show
        # tasks that are queued but not yet received.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_default_queue": names.POD_CHANGES_QUEUE,
        "task_queues": (
            Queue(names.POD_CHANGES_QUEUE),
            Queue(names.RECONCILE_QUEUE),
        ),
        "task_routes": {
            names.POD_CHANGED_TASK: {"queue": names.POD_CHANGES_QUEUE},
            names.RECONCILE_TASK: {"queue": names.RECONCILE_QUEUE},
        },
        "beat_schedule": {
            "reconcile": {
                "task": names.RECONCILE_TASK,
                "schedule": timedelta(seconds=interval),
                # A run that waited in the queue past the next one is
                # dropped, so runs never pile up behind a stopped worker.
                "options": {"expires": interval * 0.8},
            }
        },
        # celery-redbeat keeps the schedule in Redis and holds a lock there,
        # so a second Beat started by mistake waits instead of sending too.
        "beat_scheduler": "redbeat.RedBeatScheduler",
        "redbeat_redis_url": broker.redis_url,
        "redbeat_key_prefix": "pod-monitor:redbeat",
        "redbeat_lock_timeout": max(int(interval) * 2, 60),
        "beat_max_loop_interval": min(5.0, interval / 4),
        "worker_hijack_root_logger": False,
    }


def create_app() -> Celery:
    app = Celery(
        "pod_monitor",
        include=["tasks.pod_changes", "tasks.reconcile", "tasks.worker"],
    )
    app.conf.update(build_config())
    return app


app = create_app()
