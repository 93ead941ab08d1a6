"""Settings of one stack, read from POD_MONITOR_STACK_* environment variables."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from local_stack import paths
from local_stack.errors import ConfigError

#: Node name that the kubelet stand-in registers and that pods are bound to.
NODE_NAME = "local-node"

#: Listening address of every component. Nothing binds outside loopback.
HOST = "127.0.0.1"


@dataclass(frozen=True)
class StackConfig:
    """Ports, folders and tuning of one stack.

    Every field has a default, so an empty environment gives a working stack.
    """

    stack_dir: Path
    cache_dir: Path
    etcd_port: int = 22379
    etcd_peer_port: int = 22380
    apiserver_port: int = 26443
    kafka_port: int = 29092
    kafka_controller_port: int = 29093
    redis_port: int = 26379
    kubelet_port: int = 20250
    #: Value of kube-apiserver's --etcd-compaction-interval, for example "30s".
    #: None keeps the server's default (5m). A short interval with the watch
    #: cache off lets a test provoke "410 Gone" on watches.
    etcd_compaction_interval: str | None = None
    #: Value of kube-apiserver's --watch-cache.
    watch_cache: bool = True
    #: Further kube-apiserver flags, appended last so that they win.
    apiserver_extra_args: tuple[str, ...] = field(default=())
    #: Maximum and initial Java heap of the Kafka node, in MiB.
    kafka_heap_mb: int = 384
    #: Seconds that `up` waits for each component to become healthy.
    start_timeout: float = 120.0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> StackConfig:
        """Build the settings from `environ` (default: os.environ).

        Raises ConfigError naming the variable when a value is invalid.
        """
        env = os.environ if environ is None else environ
        return cls(
            stack_dir=paths.stack_dir(env),
            cache_dir=paths.cache_dir(env),
            etcd_port=_port(env, "POD_MONITOR_STACK_ETCD_PORT", 22379),
            etcd_peer_port=_port(env, "POD_MONITOR_STACK_ETCD_PEER_PORT", 22380),
            apiserver_port=_port(env, "POD_MONITOR_STACK_APISERVER_PORT", 26443),
            kafka_port=_port(env, "POD_MONITOR_STACK_KAFKA_PORT", 29092),
            kafka_controller_port=_port(
                env, "POD_MONITOR_STACK_KAFKA_CONTROLLER_PORT", 29093
            ),
            redis_port=_port(env, "POD_MONITOR_STACK_REDIS_PORT", 26379),
            kubelet_port=_port(env, "POD_MONITOR_STACK_KUBELET_PORT", 20250),
            etcd_compaction_interval=env.get(
                "POD_MONITOR_STACK_ETCD_COMPACTION_INTERVAL"
            )
            or None,
            watch_cache=_bool(env, "POD_MONITOR_STACK_WATCH_CACHE", default=True),
            apiserver_extra_args=tuple(
                shlex.split(env.get("POD_MONITOR_STACK_APISERVER_EXTRA_ARGS", ""))
            ),
            kafka_heap_mb=_positive_int(env, "POD_MONITOR_STACK_KAFKA_HEAP_MB", 384),
            start_timeout=float(
                _positive_int(env, "POD_MONITOR_STACK_START_TIMEOUT", 120)
            ),
        )

    @property
    def kubeconfig_path(self) -> Path:
        """Admin kubeconfig, written by `up`."""
        return self.stack_dir / "kubeconfig"

    @property
    def kafka_bootstrap_servers(self) -> str:
        """Bootstrap address for Kafka clients."""
        return f"{HOST}:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        """URL of Redis database 0, the one the demo uses."""
        return f"redis://{HOST}:{self.redis_port}/0"


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    value = _positive_int(env, name, default)
    if value > 65535:
        raise ConfigError(f"{name}={value} is invalid: a port must be 1 to 65535")
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is invalid: expected an integer") from None
    if value <= 0:
        raise ConfigError(f"{name}={value} is invalid: expected a positive integer")
    return value


def _bool(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={raw!r} is invalid: expected true or false")
