"""Redis, the Celery broker and result backend, without persistence."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import redis as redis_client

from local_stack import build
from local_stack.components.base import Component
from local_stack.config import HOST


class Redis(Component):
    """Debian's redis-server on loopback, keeping data only in memory."""

    name = "redis"
    port_variables = ("POD_MONITOR_STACK_REDIS_PORT",)
    stop_timeout = 10.0

    @property
    def ports(self) -> Sequence[int]:
        """Client port."""
        return (self.config.redis_port,)

    def check_prerequisites(self) -> None:
        """Require redis-server on PATH."""
        build.require_tool(
            "redis-server",
            "run the Celery broker",
            "Install it with `apt-get update && apt-get install -y redis-server`.",
        )

    @property
    def config_path(self) -> Path:
        """redis.conf written by `prepare`."""
        return self.directory / "redis.conf"

    def prepare(self) -> None:
        """Write redis.conf for this stack."""
        self.config_path.write_text(
            "\n".join(
                [
                    f"port {self.config.redis_port}",
                    f"bind {HOST}",
                    'save ""',
                    "appendonly no",
                    # Evicting a queue key would silently drop Celery messages.
                    "maxmemory-policy noeviction",
                    f"dir {self.directory}",
                    "daemonize no",
                    # redis-server replaces its command line with this title.
                    # Naming the config file in it lets owns_cmdline tell
                    # this stack's server from another one on the same port.
                    'proc-title-template "{title} {listen-addr} {config-file}"',
                    "",
                ]
            )
        )

    def command(self) -> Sequence[str]:
        """Return redis-server's argv."""
        return ["redis-server", str(self.config_path)]

    def owns_cmdline(self, cmdline: str) -> bool:
        """Match redis-server started with this stack's redis.conf."""
        return "redis-server" in cmdline and str(self.config_path) in cmdline

    def check_health(self) -> str | None:
        """Send PING and expect PONG."""
        client = redis_client.Redis(
            host=HOST, port=self.config.redis_port, socket_timeout=2
        )
        try:
            if not client.ping():
                return "PING returned no PONG"
        except redis_client.RedisError as error:
            return f"PING failed: {error}"
        finally:
            client.close()
        return None
