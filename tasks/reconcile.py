"""The reconciliation task, sent by Beat, the CLI or Flower's API.

It runs on its own queue, so it never waits behind pod changes. Beat gives
each run an expiry shorter than the interval, and ``tasks.reconciling``
holds a lock, so runs never overlap: a second one returns at once with
``status: skipped`` and the reason.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tasks import names, settings, state
from tasks.app import app
from tasks.pod_changes import context
from tasks.reconciling import Reconciler


@app.task(name=names.RECONCILE_TASK, acks_late=True)
def reconcile(trigger: str = "beat") -> dict[str, Any]:
    """List the execution pods and emit every event the state is missing."""
    worker = settings.worker()
    reconciler = Reconciler(
        context(),
        state.connect(settings.broker()),
        settings.pod_selection(),
        retention=timedelta(days=worker.state_retention_days),
        lock_seconds=worker.reconcile_lock_seconds,
    )
    return reconciler.run(trigger=trigger).as_dict()
