"""The Kubernetes API client of a worker process.

One client per process, built on first use: the client's connection pool
must not cross a fork, and the prefork pool forks after import.
"""

from __future__ import annotations

import os
import threading

from kubernetes import client, config

_lock = threading.Lock()
_client: tuple[int, client.ApiClient] | None = None


def api_client() -> client.ApiClient:
    """Return this process's API client, from KUBECONFIG or the pod's account."""
    global _client  # noqa: PLW0603 - one client per process, by design
    with _lock:
        if _client is None or _client[0] != os.getpid():
            _client = (os.getpid(), _build())
        return _client[1]


def core_v1() -> client.CoreV1Api:
    return client.CoreV1Api(api_client())


def _build() -> client.ApiClient:
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)
