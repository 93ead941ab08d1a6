"""Settings of the watcher, from environment variables and command-line flags.

Every setting has an environment variable with the ``POD_MONITOR_`` prefix
and a flag of the same name (``POD_MONITOR_WATCH_TIMEOUT_MAX_SECONDS`` and
``--watch-timeout-max-seconds``). A flag wins over the variable. The pod
selection and the broker come from ``tasks.settings``, which the workers
share, so both sides select the same pods and use the same Redis.

An invalid value fails at start with one line that names the setting and
the value (``SettingsError``); the entry point exits with code 2.
"""

from __future__ import annotations

import argparse
import enum
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from pydantic import (
    AliasChoices,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks import settings as task_settings
from tasks.logfmt import LogFormat
from tasks.settings import ENV_PREFIX, BrokerSettings, PodSelection

#: Namespace file of the service account that Kubernetes mounts in a pod.
IN_CLUSTER_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class WatcherSettings(BaseSettings):
    """Settings that only the watcher reads."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    kubeconfig: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "POD_MONITOR_KUBECONFIG", "KUBECONFIG", "kubeconfig"
        ),
        description=(
            "kubeconfig file(s) to use (also read from KUBECONFIG); without one, "
            "the in-cluster service account, else ~/.kube/config"
        ),
    )
    watch_timeout_min_seconds: int = Field(
        default=300,
        ge=1,
        description="min of the random server-side timeout of a watch request",
    )
    watch_timeout_max_seconds: int = Field(
        default=600,
        ge=1,
        description="max of the random server-side timeout of a watch request",
    )
    read_timeout_margin_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "seconds added to the server-side timeout to get the client read "
            "timeout, which detects a stalled stream"
        ),
    )
    connect_timeout_seconds: float = Field(
        default=10.0, gt=0, description="TCP and TLS connect timeout to the API server"
    )
    list_page_size: int = Field(
        default=500, ge=1, le=10_000, description="pods per page of a list (limit)"
    )
    checkpoint_interval_seconds: float = Field(
        default=1.0,
        ge=0,
        description="min seconds between two writes of a checkpoint (0: every change)",
    )
    checkpoint_key_prefix: str = Field(
        default="pod-monitor:watcher:",
        min_length=1,
        description="prefix of the Redis keys of the resourceVersion checkpoints",
    )
    health_host: str = Field(
        default="0.0.0.0",  # noqa: S104 - kubelet probes reach the pod IP
        description="address of the /livez, /readyz and /metrics HTTP server",
    )
    health_port: int = Field(
        default=8080,
        ge=0,
        le=65535,
        description="port of the HTTP server; 0 picks a free port",
    )
    ready_staleness_seconds: float | None = Field(
        default=None,
        gt=0,
        description=(
            "/readyz fails when a watch heard nothing from the API server for "
            "longer; default twice the max watch timeout"
        ),
    )
    enqueue_failure_ready_seconds: float = Field(
        default=60.0,
        gt=0,
        description="/readyz fails when sending tasks kept failing for longer",
    )
    skip_warning_interval_seconds: float = Field(
        default=10.0,
        ge=0,
        description="min seconds between two warnings about skipped pods",
    )
    log_format: LogFormat = Field(
        default=LogFormat.TEXT, description="log line format: text (key=value) or json"
    )
    log_level: str = Field(default="INFO", description="log level name")
    leader_election: bool = Field(
        default=False,
        description="watch only while holding a Lease, so replicas do not all enqueue",
    )
    lease_name: str = Field(
        default="pod-monitor-watcher", min_length=1, description="name of the Lease"
    )
    lease_namespace: str | None = Field(
        default=None,
        description="namespace of the Lease; default the pod's own, else 'default'",
    )
    lease_identity: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        min_length=1,
        description="holder identity written to the Lease; default HOSTNAME-PID",
    )
    lease_duration_seconds: float = Field(
        default=15.0,
        ge=1,
        description="seconds a Lease stays held without renewal before others take it",
    )
    lease_renew_deadline_seconds: float = Field(
        default=10.0,
        ge=1,
        description="seconds the holder keeps trying to renew before it stops watching",
    )
    lease_retry_period_seconds: float = Field(
        default=2.0, ge=0.1, description="seconds between two attempts on the Lease"
    )

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in logging.getLevelNamesMapping():
            raise ValueError("expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value.upper()

    @model_validator(mode="after")
    def _check_bounds(self) -> Self:
        if self.watch_timeout_max_seconds < self.watch_timeout_min_seconds:
            raise ValueError(
                f"{env_name('watch_timeout_max_seconds')}="
                f"{self.watch_timeout_max_seconds} must be at least "
                f"{env_name('watch_timeout_min_seconds')}="
                f"{self.watch_timeout_min_seconds}"
            )
        if self.lease_renew_deadline_seconds >= self.lease_duration_seconds:
            raise ValueError(
                f"{env_name('lease_renew_deadline_seconds')}="
                f"{self.lease_renew_deadline_seconds} must be less than "
                f"{env_name('lease_duration_seconds')}={self.lease_duration_seconds}, "
                "so the holder stops watching before others may take the Lease"
            )
        if self.lease_retry_period_seconds * 1.2 >= self.lease_renew_deadline_seconds:
            raise ValueError(
                f"{env_name('lease_renew_deadline_seconds')}="
                f"{self.lease_renew_deadline_seconds} must exceed 1.2 x "
                f"{env_name('lease_retry_period_seconds')}="
                f"{self.lease_retry_period_seconds}, so a failed renewal can be "
                "retried before the deadline"
            )
        return self

    @property
    def ready_staleness(self) -> float:
        """Seconds of silence from the API server after which /readyz fails."""
        if self.ready_staleness_seconds is not None:
            return self.ready_staleness_seconds
        return 2.0 * self.watch_timeout_max_seconds

    def lease_namespace_or_default(self) -> str:
        """Return the Lease namespace: the setting, the pod's own, else default."""
        if self.lease_namespace:
            return self.lease_namespace
        try:
            with open(IN_CLUSTER_NAMESPACE_FILE, encoding="utf-8") as file:  # noqa: PTH123
                namespace = file.read().strip()
        except OSError:
            return "default"
        return namespace or "default"


@dataclass(frozen=True)
class Config:
    """All settings of one watcher process."""

    watcher: WatcherSettings
    selection: PodSelection
    broker: BrokerSettings
    #: Environment variables for the shared settings given as flags.
    shared_environment: Mapping[str, str]

    @property
    def namespaces(self) -> list[str]:
        """Namespaces to watch, each once, in the order given; empty means all."""
        return list(dict.fromkeys(self.selection.namespaces))


class SettingsError(Exception):
    """A setting is invalid; the message is one line naming it and its value."""


#: Settings of ``tasks.settings`` that the watcher takes as flags too.
_SHARED_FLAGS: Mapping[type[BaseSettings], Mapping[str, str]] = {
    PodSelection: {
        "label_selector": "label selector of execution pods",
        "namespaces": "comma-separated namespaces to watch; empty watches all",
        "execution_id_label": "label that carries the execution id",
        "execution_id_annotation": "annotation read when the label is missing",
        "container_annotation": "annotation naming the execution's container",
    },
    BrokerSettings: {
        "redis_url": "Redis URL of the Celery broker and of the checkpoints",
        "redis_connect_timeout_seconds": "seconds one connection to Redis may take",
    },
}


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def env_name(field: str) -> str:
    """Return the environment variable of a setting."""
    return ENV_PREFIX + field.upper()


def build_parser() -> argparse.ArgumentParser:
    """Build the parser of the flags; a flag that is not given stays unset."""
    parser = argparse.ArgumentParser(
        prog="pod-monitor-watcher",
        description=(
            "Watch Kubernetes execution pods and send one Celery task per change "
            "that matters. Every flag has an environment variable: "
            "--watch-timeout-max-seconds is POD_MONITOR_WATCH_TIMEOUT_MAX_SECONDS."
        ),
        argument_default=argparse.SUPPRESS,
    )
    for name, field in WatcherSettings.model_fields.items():
        help_text = (
            f"{field.description} ({_default_text(field.default)}env {env_name(name)})"
        )
        if field.annotation is bool:
            parser.add_argument(
                _flag(name),
                dest=name,
                action=argparse.BooleanOptionalAction,
                help=help_text,
            )
        else:
            parser.add_argument(_flag(name), dest=name, metavar="VALUE", help=help_text)
    for cls, fields in _SHARED_FLAGS.items():
        for name, help_text in fields.items():
            default = _default_text(cls.model_fields[name].default)
            parser.add_argument(
                _flag(name),
                dest=name,
                metavar="VALUE",
                help=f"{help_text} ({default}env {env_name(name)})",
            )
    return parser


def _default_text(default: object) -> str:
    # Computed defaults (None, or a factory) are described in the help text.
    if default is None or default is PydanticUndefined:
        return ""
    if isinstance(default, enum.Enum):
        default = default.value
    return f"default {default}; "


def load_config(argv: Sequence[str] | None = None) -> Config:
    """Read the settings from the environment and the flags in ``argv``.

    Raises ``SettingsError`` with a one-line message when a value is
    invalid; argparse itself exits with code 2 on an unknown flag.
    """
    flags: dict[str, Any] = vars(build_parser().parse_args(argv))
    shared: dict[type[BaseSettings], dict[str, Any]] = {}
    for cls, fields in _SHARED_FLAGS.items():
        shared[cls] = {name: flags.pop(name) for name in fields if name in flags}

    watcher = _build(WatcherSettings, flags)
    selection = _build(PodSelection, shared[PodSelection])
    broker = _build(BrokerSettings, shared[BrokerSettings])
    shared_environment = {
        env_name(name): str(value)
        for values in shared.values()
        for name, value in values.items()
    }
    return Config(
        watcher=watcher,
        selection=selection,
        broker=broker,
        shared_environment=shared_environment,
    )


def export_shared_settings(config: Config) -> None:
    """Copy the shared flags into ``os.environ`` and clear the cached settings.

    ``tasks/app.py`` builds the Celery configuration from the environment,
    so ``tasks.app.create_app()`` called after this uses the flags too.
    """
    os.environ.update(config.shared_environment)
    task_settings.broker.cache_clear()
    task_settings.pod_selection.cache_clear()


_Settings = TypeVar("_Settings", bound=BaseSettings)


def _build(cls: type[_Settings], flags: dict[str, Any]) -> _Settings:
    # Flags are init arguments, which pydantic-settings prefers over the
    # environment.
    try:
        return cls(**flags)
    except ValidationError as error:
        raise SettingsError(describe_error(error)) from error


def describe_error(error: ValidationError) -> str:
    """Return one line naming the first invalid setting, its value and the problem."""
    first = error.errors()[0]
    location = first.get("loc") or ()
    message = first.get("msg", "invalid value")
    if not location:
        return f"invalid settings: {message}"
    name = str(location[0])
    value = first.get("input")
    setting = env_name(name)
    if name in _flag_names():
        setting += f" ({_flag(name)})"
    return f"invalid setting {setting} = {value!r}: {message}"


def _flag_names() -> set[str]:
    shared = {name for fields in _SHARED_FLAGS.values() for name in fields}
    return set(WatcherSettings.model_fields) | shared
