"""Building Kubernetes API clients, for the workers and the watcher.

Configuration comes, in this order, from the kubeconfig named by
``POD_MONITOR_KUBECONFIG`` or ``KUBECONFIG`` (several files as KUBECONFIG
lists them), the pod's service account, then ``~/.kube/config``.

A worker process keeps one client, built on first use: the client's
connection pool must not cross a fork, and the prefork pool forks after
import.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

# The client's loaders have no annotations.
_load_kube_config: Callable[..., None] = config.load_kube_config
_load_incluster_config: Callable[..., None] = config.load_incluster_config

_lock = threading.Lock()
_client: tuple[int, client.ApiClient] | None = None


def configured_kubeconfig() -> str | None:
    """Return the kubeconfig path the environment names, if any."""
    return os.environ.get("POD_MONITOR_KUBECONFIG") or os.environ.get("KUBECONFIG")


def load_api_client(
    kubeconfig: str | None, *, pool_size: int | None = None
) -> client.ApiClient:
    """Build an ``ApiClient`` from ``kubeconfig``, in-cluster config or ~/.kube.

    ``pool_size`` is the number of connections kept open. Raises the
    client's ``ConfigException`` or ``OSError`` when no configuration loads.
    """
    configuration = client.Configuration()
    if pool_size is not None:
        configuration.connection_pool_maxsize = max(
            pool_size, configuration.connection_pool_maxsize or 0
        )
    if kubeconfig:
        _load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        try:
            _load_incluster_config(client_configuration=configuration)
        except ConfigException:
            _load_kube_config(client_configuration=configuration)
    return client.ApiClient(configuration)


def api_client() -> client.ApiClient:
    """Return this process's API client, built on first use after a fork."""
    global _client  # noqa: PLW0603 - one client per process, by design
    with _lock:
        if _client is None or _client[0] != os.getpid():
            _client = (os.getpid(), load_api_client(configured_kubeconfig()))
        return _client[1]


def core_v1() -> client.CoreV1Api:
    return client.CoreV1Api(api_client())
