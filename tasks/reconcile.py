"""The reconciliation task, sent by Beat, the CLI or Flower's API.

It runs on its own queue, so it never waits behind pod changes. Beat, the
CLI and Flower's API give every run the same expiry, shorter than Beat's
interval, so a run that waited in the queue until the next one is due is
dropped instead of run.
``tasks.reconciling`` holds a lock, so runs never overlap: a second one
returns at once with ``status: skipped`` and the reason.

A run ends by itself at ``POD_MONITOR_RECONCILE_TIME_LIMIT_SECONDS`` with
``status: incomplete``; Celery's soft time limit, a minute later, stops a
run stuck inside one call, and its hard limit kills the process.
"""

from __future__ import annotations

import functools
import logging
from datetime import timedelta
from typing import Any

import redis
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from tasks import names, settings, state
from tasks.app import app, reconcile_expires_seconds, reconcile_time_limits
from tasks.pod_changes import context
from tasks.reconciling import Reconciler

logger = logging.getLogger(__name__)

#: Trigger of a run that Beat sent.
BEAT = "beat"
#: Trigger of a run sent without one, for example through Flower's API with
#: no ``kwargs``.
MANUAL = "manual"

_SOFT_TIME_LIMIT, _TIME_LIMIT = reconcile_time_limits(
    settings.worker(), settings.broker()
)


@functools.cache
def _redis() -> redis.Redis:
    # One client per worker process, created after the prefork fork.
    return state.connect(settings.broker())


@app.task(
    name=names.RECONCILE_TASK,
    bind=True,
    acks_late=True,
    expires=reconcile_expires_seconds(settings.worker()),
    soft_time_limit=_SOFT_TIME_LIMIT,
    time_limit=_TIME_LIMIT,
)
def reconcile(self: Task[Any, Any], trigger: str | None = None) -> dict[str, Any]:
    """List the execution pods and emit every event the state is missing.

    ``trigger`` names who sent the run, for the summary and the logs. When
    it is missing, the run is ``beat`` if Beat sent it, else ``manual``.
    Returns the ``tasks.reconciling.Summary`` as a dict.
    """
    if trigger is None:
        # Celery's Beat marks what it sends with this message header.
        trigger = BEAT if getattr(self.request, "celery_beat_task", False) else MANUAL
    worker = settings.worker()
    reconciler = Reconciler(
        context(),
        _redis(),
        settings.pod_selection(),
        retention=timedelta(days=worker.state_retention_days),
        lock_seconds=worker.reconcile_lock_seconds,
        time_limit_seconds=worker.reconcile_time_limit_seconds,
    )
    try:
        return reconciler.run(trigger=trigger, run_id=self.request.id).as_dict()
    except SoftTimeLimitExceeded:
        logger.error(
            "reconciliation exceeded its soft time limit; stopped",
            extra={
                "trigger": trigger,
                "run_id": self.request.id,
                "soft_time_limit": _SOFT_TIME_LIMIT,
            },
        )
        raise
