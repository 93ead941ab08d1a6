"""The kubelet stand-in (package local_stack.kubelet) as a stack component."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from local_stack import paths
from local_stack.components.apiserver import ApiServer
from local_stack.components.base import Component
from local_stack.config import HOST, NODE_NAME

#: Module whose absence makes the stack skip this component.
ENTRY_POINT = paths.CHECKOUT_DIR / "local_stack" / "kubelet" / "__main__.py"


class Kubelet(Component):
    """Registers Node `local-node` and serves the kubelet API on loopback.

    It talks to kube-apiserver with the admin kubeconfig, so it needs no
    RBAC objects of its own.
    """

    name = "kubelet"
    port_variables = ("POD_MONITOR_STACK_KUBELET_PORT",)
    stop_timeout = 15.0

    def __init__(self, apiserver: ApiServer) -> None:
        super().__init__(apiserver.config)
        self._apiserver = apiserver

    @property
    def ports(self) -> Sequence[int]:
        """Kubelet API port, which the Node reports as its daemon endpoint."""
        return (self.config.kubelet_port,)

    def skip_reason(self) -> str | None:
        """Skip when the stand-in's package is not in this checkout."""
        if not ENTRY_POINT.exists():
            return f"{ENTRY_POINT.relative_to(paths.CHECKOUT_DIR)} not found"
        return None

    def command(self) -> Sequence[str]:
        """Return the stand-in's argv, run by the checkout's interpreter."""
        return [
            paths.venv_python(),
            "-m",
            "local_stack.kubelet",
            "--kubeconfig",
            str(self.config.kubeconfig_path),
            "--node-name",
            NODE_NAME,
            "--port",
            str(self.config.kubelet_port),
            "--state-dir",
            str(self.directory),
        ]

    def working_directory(self) -> Path:
        """Start in the checkout so `-m local_stack.kubelet` imports this copy."""
        return paths.CHECKOUT_DIR

    def owns_cmdline(self, cmdline: str) -> bool:
        """Match the stand-in started with this stack's state folder."""
        return "local_stack.kubelet" in cmdline and str(self.directory) in cmdline

    def check_health(self) -> str | None:
        """Expect 200 from GET /healthz and Node `local-node` to be Ready."""
        # The stand-in serves a self-signed certificate, as kubelets do.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        url = f"https://{HOST}:{self.config.kubelet_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as reply:
                if reply.status != 200:
                    return f"GET /healthz returned {reply.status}"
        except (OSError, urllib.error.URLError) as error:
            return f"GET /healthz failed: {error}"
        try:
            response = self._apiserver.admin_client().request(
                "GET", f"/api/v1/nodes/{NODE_NAME}"
            )
        except OSError as error:
            return f"GET node {NODE_NAME} failed: {error}"
        if response.status != 200:
            return f"GET node {NODE_NAME} returned {response.status}"
        conditions = response.body.get("status", {}).get("conditions", [])
        ready = [c for c in conditions if c.get("type") == "Ready"]
        if not ready or ready[0].get("status") != "True":
            return f"node {NODE_NAME} is not Ready: {ready or 'no Ready condition'}"
        return None
