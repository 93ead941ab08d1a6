"""Publishing events to Kafka and waiting until Kafka confirmed them.

One producer per worker process, created in that process: librdkafka's
threads do not survive ``fork()``, and the prefork pool forks after import.
The producer is idempotent with ``acks=all``, so its own retries neither
reorder nor duplicate an execution's events. A task that runs twice can
still publish an event twice, with the same event id.

Records follow the binary mode of the CloudEvents Kafka protocol binding
1.0: the event is the value and its attributes are ``ce_*`` headers. The
key is the execution id, so all events of one execution land in one
partition, in order.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from tasks import metrics
from tasks.errors import PublishError
from tasks.events import SCHEMA_VERSION, ExecutionEvent
from tasks.settings import KafkaSettings

logger = logging.getLogger(__name__)

CE_SPEC_VERSION = "1.0"
CE_TYPE_PREFIX = "io.pod-monitor."
SCHEMA_VERSION_HEADER = "pod_monitor_schema_version"
#: Seconds past librdkafka's own delivery timeout that ``publish`` waits for
#: the delivery report, because the report comes from the next poll.
_REPORT_GRACE_SECONDS = 5.0
_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class KafkaRecord:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, str | bytes | None]]

    @property
    def size(self) -> int:
        """Return the bytes the record takes against the message size limit."""
        headers = sum(len(name) + len(value or b"") for name, value in self.headers)
        return len(self.key) + len(self.value) + headers


@dataclass(frozen=True)
class Delivery:
    """The partition and offset at which Kafka stored an event."""

    partition: int
    offset: int


def to_record(event: ExecutionEvent, settings: KafkaSettings) -> KafkaRecord:
    headers: list[tuple[str, str | bytes | None]] = [
        ("ce_specversion", CE_SPEC_VERSION.encode()),
        ("ce_id", event.event_id.encode()),
        ("ce_type", (CE_TYPE_PREFIX + event.event_type.value).encode()),
        ("ce_source", settings.event_source.encode()),
        ("ce_time", event.occurred_at.isoformat().encode()),
        ("ce_subject", event.execution_id.encode()),
        ("content-type", b"application/json"),
        (SCHEMA_VERSION_HEADER, SCHEMA_VERSION.encode()),
    ]
    return KafkaRecord(
        topic=settings.topic,
        key=event.execution_id.encode(),
        value=event.model_dump_json().encode(),
        headers=headers,
    )


class Publisher:
    """Publishes one event at a time and waits for its delivery report."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._producer = Producer(producer_config(settings))

    def publish(self, event: ExecutionEvent) -> Delivery:
        """Publish ``event`` and return once Kafka confirmed it.

        Raises ``PublishError`` when Kafka rejected the event or did not
        confirm it in time; the event may still have been written then.
        """
        record = to_record(event, self._settings)
        outcome: list[KafkaError | Message] = []

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            outcome.append(error if error is not None else message)

        started = time.monotonic()
        self._produce(record, on_delivery)
        deadline = started + self._settings.delivery_timeout_seconds
        deadline += _REPORT_GRACE_SECONDS
        while not outcome and time.monotonic() < deadline:
            self._producer.poll(_POLL_SECONDS)
        if not outcome or isinstance(outcome[0], KafkaError):
            metrics.PUBLISH_FAILURES.inc()
        else:
            metrics.PUBLISH_SECONDS.observe(time.monotonic() - started)
        if not outcome:
            raise PublishError(
                f"Kafka did not confirm event {event.event_id} within "
                f"{self._settings.delivery_timeout_seconds:.0f} s"
            )
        result = outcome[0]
        if isinstance(result, KafkaError):
            raise PublishError(
                f"Kafka did not deliver event {event.event_id}: {result}"
            )
        return Delivery(partition=result.partition() or 0, offset=result.offset() or 0)

    def close(self, timeout_seconds: float = 10.0) -> int:
        """Flush what is queued; return how many records are still queued."""
        remaining: int = self._producer.flush(timeout_seconds)
        return remaining

    def _produce(
        self,
        record: KafkaRecord,
        on_delivery: Callable[[KafkaError | None, Message], None],
    ) -> None:
        for attempt in range(1, 4):
            try:
                self._producer.produce(
                    record.topic,
                    key=record.key,
                    value=record.value,
                    headers=record.headers,
                    on_delivery=on_delivery,
                )
                return
            except BufferError:
                # The local queue is full: serve delivery reports, then retry.
                logger.warning("Kafka producer queue full, attempt %d of 3", attempt)
                self._producer.poll(1.0)
            except KafkaException as error:
                raise PublishError(f"producing the record failed: {error}") from error
        raise PublishError("Kafka producer queue stayed full")


def producer_config(settings: KafkaSettings) -> dict[str, object]:
    config: dict[str, object] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": f"pod-monitor-worker-{socket.gethostname()}-{os.getpid()}",
        "enable.idempotence": True,
        "acks": "all",
        "message.timeout.ms": int(settings.delivery_timeout_seconds * 1000),
        "message.max.bytes": settings.max_event_bytes + 64 * 1024,
        # Each publish waits for its own delivery report, so batching delay
        # would only add latency.
        "linger.ms": 0,
        "error_cb": _log_client_error,
        # librdkafka also prints each failed reconnect to stderr itself;
        # error_cb above reports them, at a bounded rate.
        "log_level": 2,
    }
    config.update(settings.extra_config)
    return config


#: Seconds between two log lines about librdkafka's client errors; during
#: an outage it reports every failed reconnect, several a second.
CLIENT_ERROR_LOG_INTERVAL_SECONDS = 30.0
_client_errors = {"last_logged": -CLIENT_ERROR_LOG_INTERVAL_SECONDS, "suppressed": 0}


def _log_client_error(error: KafkaError) -> None:
    # librdkafka reports broker connection losses here and recovers by
    # itself; deliveries that fail still fail their own publish() call.
    now = time.monotonic()
    if now - _client_errors["last_logged"] < CLIENT_ERROR_LOG_INTERVAL_SECONDS:
        _client_errors["suppressed"] += 1
        return
    logger.warning(
        "Kafka client error",
        extra={
            "error": str(error),
            "suppressed_since_last": _client_errors["suppressed"],
        },
    )
    _client_errors.update(last_logged=now, suppressed=0)


_lock = threading.Lock()
_publisher: tuple[int, Publisher] | None = None


def publisher(settings: KafkaSettings) -> Publisher:
    """Return this process's publisher, creating it on first use after a fork."""
    global _publisher  # noqa: PLW0603 - one producer per process, by design
    with _lock:
        if _publisher is None or _publisher[0] != os.getpid():
            _publisher = (os.getpid(), Publisher(settings))
        return _publisher[1]


def close_publisher() -> None:
    global _publisher  # noqa: PLW0603
    with _lock:
        if _publisher is not None and _publisher[0] == os.getpid():
            remaining = _publisher[1].close()
            if remaining:
                logger.warning(
                    "Kafka producer closed with %d records unsent", remaining
                )
        _publisher = None
