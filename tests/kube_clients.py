"""Kubernetes clients for tests that run against the local stack."""

from __future__ import annotations

from kubernetes import client as kube_client
from kubernetes import config as kube_config

from local_stack.config import StackConfig


def new_kube_api_client(config: StackConfig) -> kube_client.ApiClient:
    """Return a new ApiClient authenticated as cluster admin by the kubeconfig."""
    # kubernetes 37 ships no annotations for its config loaders.
    api_client: kube_client.ApiClient = kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(config.kubeconfig_path)
    )
    return api_client
