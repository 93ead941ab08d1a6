"""The errors of the workers, raised at the boundary with each outside system.

The task decides in one place what each error means: a ``RetryableError``
becomes a Celery retry with backoff, anything else is a bug to report.
"""

from __future__ import annotations


class PodMonitorError(Exception):
    """Base of the errors this project raises."""


class RetryableError(PodMonitorError):
    """An outside system failed in a way that a later attempt may not."""


class PublishError(RetryableError):
    """Kafka did not confirm the delivery of an event."""


class LogReadError(RetryableError):
    """Reading a container log failed for a reason that may pass."""


class KubernetesApiError(RetryableError):
    """The Kubernetes API server failed a request for a reason that may pass."""


class ExecutionLockedError(RetryableError):
    """Another task holds the lock of this execution."""

    def __init__(self, execution_id: str) -> None:
        super().__init__(f"execution {execution_id!r} is locked by another task")
        self.execution_id = execution_id
