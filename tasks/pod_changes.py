"""The pod-change task: one snapshot in, the events it calls for out.

The decision to acknowledge, retry or reject is made here and only here:

- a snapshot that does not validate is rejected, because no attempt will
  make it valid, and the reconciliation repairs what it would have emitted;
- a ``RetryableError`` (Kafka did not confirm, the API server failed, the
  execution is locked) is retried with capped exponential backoff; Kafka
  and lock failures retry without limit, because giving up loses an event;
- a log that stays unreadable ends, after ``LOG_READ_ATTEMPTS`` failed
  reads spread over minutes, in an event that reports the failed read;
- any other exception is a bug: retried a few times, then failed.

Log-read failures and unexpected exceptions are counted in the task's own
keyword arguments, apart from Celery's retry count, so a long Kafka outage
does not use up the attempts of a later log read.

The task returns, and is acknowledged, only after Kafka confirmed every
event it emitted.
"""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime
from typing import Any

import orjson
from celery import Task
from celery.exceptions import Reject
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from tasks import handling, kube, metrics, names, publishing, settings
from tasks.app import app, pod_change_time_limits
from tasks.errors import (
    ExecutionLockedError,
    KubernetesApiError,
    LogReadError,
    RetryableError,
)
from tasks.snapshots import PodSnapshot, build_snapshot
from tasks.state import StateStore

logger = logging.getLogger(__name__)

#: Failed log reads before the event goes out without the log. With the
#: backoff below they span about six minutes, longer than an API server
#: restart or a kubelet's brief absence.
LOG_READ_ATTEMPTS = 8
#: First wait after a failed log read, doubled after each failure up to
#: ``MAX_BACKOFF_SECONDS``.
LOG_READ_BACKOFF_SECONDS = 5.0
#: Attempts after an unexpected exception before the task fails.
BUG_ATTEMPTS = 3
#: Maximum wait between two attempts. Kafka outages last minutes, and a
#: shorter cap notices the broker's return sooner.
MAX_BACKOFF_SECONDS = 60.0
_NOT_FOUND = 404

_store: StateStore | None = None


def context() -> handling.Context:
    """Return the clients of this worker process, built on first use."""
    global _store  # noqa: PLW0603 - one store per process
    if _store is None:
        _store = StateStore.from_settings(settings.broker(), settings.worker())
    return handling.Context(
        store=_store,
        publisher=publishing.publisher(settings.kafka()),
        core_v1=kube.core_v1(),
        policy=settings.policy(),
        kafka=settings.kafka(),
        logs=settings.logs(),
    )


_SOFT_TIME_LIMIT, _TIME_LIMIT = pod_change_time_limits(
    settings.worker(), settings.broker()
)


# Results are not stored: no caller reads them, and each would keep a copy
# of the snapshot in Redis for a day.
@app.task(
    name=names.POD_CHANGED_TASK,
    bind=True,
    max_retries=None,
    ignore_result=True,
    soft_time_limit=_SOFT_TIME_LIMIT,
    time_limit=_TIME_LIMIT,
)
def pod_changed(
    self: Task[Any, Any],
    snapshot: dict[str, Any],
    refresh: bool = False,
    log_failures: int = 0,
    unexpected_failures: int = 0,
) -> dict[str, object]:
    """Emit the events that one pod snapshot calls for."""
    parsed = _validate(snapshot)
    fields = {
        "execution_id": parsed.execution_id,
        "namespace": parsed.namespace,
        "pod": parsed.name,
        "attempt": self.request.retries + 1,
    }
    retry_kwargs = {
        "refresh": refresh,
        "log_failures": log_failures,
        "unexpected_failures": unexpected_failures,
    }
    try:
        if refresh:
            parsed = _refreshed(parsed)
        result = handling.handle(
            parsed,
            context(),
            give_up_on_log=log_failures + 1 >= LOG_READ_ATTEMPTS,
        )
    except RetryableError as error:
        raise _retry(self, error, fields, retry_kwargs) from error
    except Exception as error:
        if unexpected_failures + 1 >= BUG_ATTEMPTS:
            logger.exception("pod change failed; giving up", extra=fields)
            raise
        logger.exception("pod change failed unexpectedly; will retry", extra=fields)
        raise self.retry(
            exc=error,
            countdown=_backoff(unexpected_failures),
            kwargs={**retry_kwargs, "unexpected_failures": unexpected_failures + 1},
        ) from error

    if result.recheck_after is not None:
        _schedule_recheck(parsed, result.recheck_after)
    if result.skipped == "no_execution_id":
        logger.warning("pod has no execution id; skipped", extra=fields)
    return result.summary()


def _validate(snapshot: dict[str, Any]) -> PodSnapshot:
    try:
        return PodSnapshot.model_validate(snapshot)
    except ValidationError as error:
        logger.error(
            "invalid pod snapshot rejected",
            extra={
                "namespace": snapshot.get("namespace"),
                "pod": snapshot.get("name"),
                "execution_id": snapshot.get("execution_id"),
                "error": str(error).replace("\n", "; ")[:1000],
            },
        )
        raise Reject(error, requeue=False) from error


def _retry(
    task: Task[Any, Any],
    error: RetryableError,
    fields: dict[str, Any],
    retry_kwargs: dict[str, Any],
) -> Exception:
    kwargs = dict(retry_kwargs)
    limit = "no limit"
    if isinstance(error, ExecutionLockedError):
        countdown = random.uniform(0.5, 2.0)  # noqa: S311 - jitter, not security
    elif isinstance(error, LogReadError):
        failures = kwargs["log_failures"]
        kwargs["log_failures"] = failures + 1
        countdown = min(MAX_BACKOFF_SECONDS, LOG_READ_BACKOFF_SECONDS * 2**failures)
        limit = f"log read {failures + 1} of {LOG_READ_ATTEMPTS}"
    else:
        countdown = _backoff(task.request.retries)
    metrics.TASK_RETRIES.labels(type(error).__name__).inc()
    logger.warning(
        "pod change failed; will retry",
        extra={
            **fields,
            "error": str(error),
            "retry_in": round(countdown, 1),
            "limit": limit,
        },
    )
    return task.retry(exc=error, countdown=countdown, kwargs=kwargs)


def _backoff(retries: int) -> float:
    # Full jitter keeps a burst of retries from hitting Kafka all at once.
    return random.uniform(0, min(MAX_BACKOFF_SECONDS, 1.0 * 2**retries))  # noqa: S311


def _refreshed(snapshot: PodSnapshot) -> PodSnapshot:
    """Return a snapshot of the pod as the API server has it now."""
    core_v1 = kube.core_v1()
    try:
        response: Any = core_v1.read_namespaced_pod(
            snapshot.name, snapshot.namespace, _preload_content=False
        )
    except ApiException as error:
        if error.status == _NOT_FOUND:
            return snapshot.model_copy(
                update={"deleted": True, "observed_at": datetime.now(UTC)}
            )
        raise KubernetesApiError(
            f"reading pod {snapshot.ref} failed: {error.status}"
        ) from error
    raw = orjson.loads(response.data)
    if raw.get("metadata", {}).get("uid") != snapshot.uid:
        return snapshot.model_copy(
            update={"deleted": True, "observed_at": datetime.now(UTC)}
        )
    return build_snapshot(raw, settings.pod_selection(), source=snapshot.source)


def _schedule_recheck(snapshot: PodSnapshot, after_seconds: float) -> None:
    pod_changed.apply_async(
        args=(snapshot.model_dump(mode="json"),),
        kwargs={"refresh": True},
        countdown=after_seconds + 1.0,
        queue=names.POD_CHANGES_QUEUE,
    )
