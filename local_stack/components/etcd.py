"""etcd, the storage of kube-apiserver, as a single member on loopback."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence

from local_stack import build
from local_stack.components.base import Component
from local_stack.config import HOST


class Etcd(Component):
    """One etcd member built from go.etcd.io/etcd/server/v3."""

    name = "etcd"
    port_variables = ("POD_MONITOR_STACK_ETCD_PORT", "POD_MONITOR_STACK_ETCD_PEER_PORT")

    @property
    def ports(self) -> Sequence[int]:
        """Client port, then peer port."""
        return (self.config.etcd_port, self.config.etcd_peer_port)

    @property
    def client_url(self) -> str:
        """URL that kube-apiserver connects to."""
        return f"http://{HOST}:{self.config.etcd_port}"

    def check_prerequisites(self) -> None:
        """Require Go when the etcd binary is not built yet."""
        build.require_go_if_unbuilt(build.etcd_binary(), self.config.cache_dir)

    def ensure_built(self) -> None:
        """Build the etcd binary unless it is cached."""
        build.ensure_go_binary(build.etcd_binary(), self.config.cache_dir)

    def command(self) -> Sequence[str]:
        """Return etcd's argv."""
        peer_url = f"http://{HOST}:{self.config.etcd_peer_port}"
        return [
            str(build.etcd_binary().path(self.config.cache_dir)),
            "--name=local",
            f"--data-dir={self.directory / 'data'}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=local={peer_url}",
            # Test data is disposable, and fsync dominates write latency.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]

    def owns_cmdline(self, cmdline: str) -> bool:
        """Match etcd started with this stack's data folder."""
        return "etcd" in cmdline and f"--data-dir={self.directory / 'data'}" in cmdline

    def check_health(self) -> str | None:
        """GET /health and expect {"health": "true"}."""
        try:
            with urllib.request.urlopen(  # noqa: S310 (an http URL built here)
                f"{self.client_url}/health", timeout=2
            ) as reply:
                body = json.loads(reply.read())
        except (OSError, ValueError) as error:
            return f"GET /health failed: {error}"
        if body.get("health") != "true":
            return f"GET /health returned {body}"
        return None
