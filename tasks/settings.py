"""Configuration shared by the watcher and the workers.

Every setting comes from an environment variable with the ``POD_MONITOR_``
prefix (``POD_MONITOR_REDIS_URL``, ``POD_MONITOR_KAFKA_TOPIC``, ...). An
invalid value fails at start with a message that names the variable, because
a service that starts with a bad setting fails later, and less clearly.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

ENV_PREFIX = "POD_MONITOR_"

# A label key is an optional DNS subdomain prefix and a name of at most 63
# characters, as Kubernetes validates it (apimachinery's IsQualifiedName).
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")


def _check_label_key(value: str) -> str:
    if not _LABEL_KEY.match(value):
        raise ValueError(f"{value!r} is not a valid Kubernetes label or annotation key")
    return value


LabelKey = Annotated[str, AfterValidator(_check_label_key)]

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

# One requirement of a label selector, in the grammar of apimachinery's
# labels.Parse: existence, equality, set membership, and gt/lt on integers.
_SELECTOR_KEY = _LABEL_KEY.pattern.strip("^$")
_LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?"
_REQUIREMENT = re.compile(
    rf"!?\s*{_SELECTOR_KEY}"
    rf"|{_SELECTOR_KEY}\s*(=|==|!=)\s*{_LABEL_VALUE}"
    rf"|{_SELECTOR_KEY}\s+(in|notin)\s*\(\s*{_LABEL_VALUE}(\s*,\s*{_LABEL_VALUE})*\s*\)"
    rf"|{_SELECTOR_KEY}\s*(<|>)\s*-?[0-9]+"
)


def _split_requirements(selector: str) -> list[str]:
    """Split a selector at the commas that are not inside parentheses."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(selector):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(selector[start:index])
            start = index + 1
    parts.append(selector[start:])
    return parts


def _split_list(value: object) -> object:
    # Environment variables hold lists as "a,b" or as a JSON array.
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            return json.loads(value)
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


#: Waiting reasons after which a pending container will not start by itself.
#: Airflow's KubernetesExecutor and Tekton treat these as fatal.
DEFAULT_FATAL_WAITING_REASONS = (
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
)


class PodSelection(BaseSettings):
    """The selection of execution pods and the place of their execution id."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", use_attribute_docstrings=True
    )

    label_selector: str = "app.kubernetes.io/managed-by=pod-monitor-executions"
    """Label selector, in the API server's syntax, that picks execution pods."""
    execution_id_label: LabelKey = "pod-monitor.io/execution-id"
    """Label that carries the execution id."""
    execution_id_annotation: LabelKey = "pod-monitor.io/execution-id"
    """Annotation read when the label is missing, because label values are limited
    to 63 characters and some execution ids are longer."""
    container_annotation: LabelKey = "pod-monitor.io/container"
    """Annotation naming the container that runs the runner; without it the first
    container of the pod is the execution's container."""
    namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Namespaces to watch; empty means all namespaces."""

    @field_validator("label_selector")
    @classmethod
    def _selector_valid(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(
                "an empty label selector would select every pod in the cluster; "
                "set a selector that matches only execution pods"
            )
        for requirement in _split_requirements(value.strip()):
            if not _REQUIREMENT.fullmatch(requirement.strip()):
                raise ValueError(
                    f"{requirement.strip()!r} is not a label selector requirement "
                    "(key, !key, key=value, key!=value, key in (a,b), key notin (a,b))"
                )
        return value.strip()

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        # Accept "a,b" as well as the JSON list pydantic-settings expects.
        return _split_list(value)

    @field_validator("namespaces")
    @classmethod
    def _valid_namespaces(cls, value: list[str]) -> list[str]:
        # A namespace name is a DNS label; a watcher given another name
        # would watch nothing and look healthy.
        for name in value:
            if not _DNS_LABEL.fullmatch(name):
                raise ValueError(
                    f"{name!r} is not a valid namespace name (a DNS label: at most "
                    "63 lowercase letters, digits and '-')"
                )
        return value


class Policy(BaseSettings):
    """How long the monitor waits before it decides a pod has failed."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", use_attribute_docstrings=True
    )

    pending_grace_seconds: float = Field(default=120.0, ge=0)
    """Seconds a pending pod may stay on a fatal waiting reason before the execution
    fails; image pulls recover from short registry outages."""
    fatal_waiting_reasons: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_FATAL_WAITING_REASONS)
    )
    """Container waiting reasons that fail a pending execution once its grace
    period passed, comma-separated."""
    node_lost_grace_seconds: float = Field(default=300.0, ge=0)
    """Seconds before an execution fails as node lost: counted from when a
    started pod's Ready condition turned Unknown, or from the end of a pod's
    deletion grace period that no kubelet completed."""

    @field_validator("fatal_waiting_reasons", mode="before")
    @classmethod
    def _split_reasons(cls, value: object) -> object:
        return _split_list(value)


class BrokerSettings(BaseSettings):
    """The Celery broker, which also stores the watcher's checkpoint."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", use_attribute_docstrings=True
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis URL of the Celery broker and result backend, the watcher's
    checkpoint and the per-execution state."""
    visibility_timeout_seconds: int = Field(default=3600, ge=60)
    """Seconds before Redis redelivers an unacknowledged task. It must exceed the
    longest task, or a slow task runs twice."""
    redis_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    """Seconds one connection attempt to Redis may take, so that sending a task with
    the broker down fails in bounded time."""

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"{value!r} is not a Redis URL; expected redis://HOST:PORT/DB"
            )
        return value


class KafkaSettings(BaseSettings):
    """The Kafka topic that receives execution events."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX + "KAFKA_", extra="ignore", use_attribute_docstrings=True
    )

    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated host:port list of Kafka brokers."""
    topic: str = "execution-events"
    """The topic that receives every execution event, keyed by execution id."""
    max_event_bytes: int = Field(default=1_000_000, ge=16_384)
    """Largest event in bytes, value and headers included. Keep it at or below the
    topic's max.message.bytes (broker default 1048588) and the producer's
    message.max.bytes (librdkafka default 1000000)."""
    delivery_timeout_seconds: float = Field(default=30.0, gt=0)
    """Seconds librdkafka keeps trying to deliver one event before it reports a
    failure and the task retries."""
    extra_config: dict[str, str] = Field(default_factory=dict)
    """Extra librdkafka properties as JSON, for security settings and tuning."""
    event_source: str = "pod-monitor"
    """CloudEvents ``source`` attribute of every event."""

    @field_validator("topic")
    @classmethod
    def _topic_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", value):
            raise ValueError(
                f"{value!r} is not a valid Kafka topic name "
                "(1 to 249 characters of letters, digits, '.', '_' and '-')"
            )
        return value


class LogSettings(BaseSettings):
    """Limits of the workers' container log reads."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX + "CONTAINER_LOG_",
        extra="ignore",
        use_attribute_docstrings=True,
    )

    max_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Most bytes of a container log read through the API server. A runner report
    with both streams at their cap fits well below this."""
    read_timeout_seconds: float = Field(default=60.0, gt=0)
    """Socket timeout in seconds for one log read."""


class WorkerSettings(BaseSettings):
    """Settings of the Celery workers and Beat."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", use_attribute_docstrings=True
    )

    reconcile_interval_seconds: float = Field(default=300.0, ge=2)
    """Seconds between two reconciliations scheduled by Beat. The floor of 2 s lets
    tests watch several runs; production runs want minutes."""
    state_retention_days: float = Field(default=7.0, gt=0)
    """Days the per-execution state of a finished execution is kept."""
    execution_lock_seconds: float = Field(default=180.0, ge=5)
    """Seconds one task may hold the lock of an execution. It must exceed a log read
    plus a delivery, or two tasks may emit the same event."""
    reconcile_lock_seconds: float = Field(default=600.0, ge=10)
    """Seconds the reconciliation lock lives without renewal. A run renews it
    whenever a third of this has passed, so it bounds how long a killed run blocks
    the next one."""
    reconcile_time_limit_seconds: float = Field(default=1800.0, ge=5)
    """Seconds one reconciliation may work before it stops where it is and reports
    ``status: incomplete``; the next run goes on from scratch. Celery's soft and
    hard time limits sit a little above it."""
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port of the worker's Prometheus ``/metrics``, served by its main process
    for all its processes; 0 turns it off."""
    # Prometheus scrapes from outside the pod, so all interfaces by default.
    worker_metrics_host: str = "0.0.0.0"  # noqa: S104
    """Address the worker's metrics server binds."""
    beat_lock_seconds: float = Field(default=30.0, ge=5)
    """Seconds Beat's schedule lock in Redis lives without renewal. Beat renews it
    on every tick; a Beat killed without releasing it holds back a replacement for
    at most this long."""


@functools.cache
def pod_selection() -> PodSelection:
    return PodSelection()


@functools.cache
def policy() -> Policy:
    return Policy()


@functools.cache
def broker() -> BrokerSettings:
    return BrokerSettings()


@functools.cache
def kafka() -> KafkaSettings:
    return KafkaSettings()


@functools.cache
def logs() -> LogSettings:
    return LogSettings()


@functools.cache
def worker() -> WorkerSettings:
    return WorkerSettings()


class InvalidSettingsError(ValueError):
    """One or more settings have invalid values; the message names each."""


#: Every settings class with the accessor that caches it.
_ACCESSORS: tuple[tuple[type[BaseSettings], Callable[[], BaseSettings]], ...] = (
    (PodSelection, pod_selection),
    (Policy, policy),
    (BrokerSettings, broker),
    (KafkaSettings, kafka),
    (LogSettings, logs),
    (WorkerSettings, worker),
)


def check_all() -> None:
    """Load every setting now, so that a bad one stops the process at start.

    Raises ``InvalidSettingsError`` whose message names each invalid
    environment variable, its value and the problem.
    """
    problems: list[str] = []
    for cls, accessor in _ACCESSORS:
        try:
            accessor()
        except ValidationError as error:
            prefix = str(cls.model_config.get("env_prefix", ""))
            problems.extend(_describe(prefix, entry) for entry in error.errors())
        except SettingsError as error:
            # pydantic-settings raises this when a value is not valid JSON.
            problems.append(f"{error} ({error.__cause__})")
    if problems:
        raise InvalidSettingsError("; ".join(problems))


def _describe(prefix: str, entry: Mapping[str, Any]) -> str:
    location = entry.get("loc") or ()
    name = f"{prefix}{str(location[0]).upper()}" if location else prefix + "*"
    return f"{name}={entry.get('input')!r} is invalid: {entry.get('msg')}"
