"""Flower, the Celery monitor, watching the stack's Redis database 0.

Flower shows the workers and tasks of the Celery app in ``tasks.app`` and
serves a REST API that can also send tasks, such as a reconciliation. Its
API is open to anyone who can reach the port unless authentication is set,
so basic auth is always on: the credentials come from
``POD_MONITOR_FLOWER_BASIC_AUTH`` (``user:password``) or, when that is unset,
are generated once into ``<stack>/flower/credentials``. ``python -m
local_stack env`` prints them.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from local_stack import paths
from local_stack.components.base import Component
from local_stack.config import HOST, StackConfig
from local_stack.config import _port as parse_port
from local_stack.errors import ConfigError

PORT_VARIABLE = "POD_MONITOR_STACK_FLOWER_PORT"
DEFAULT_PORT = 25555
BASIC_AUTH_VARIABLE = "POD_MONITOR_FLOWER_BASIC_AUTH"
#: User name of generated credentials.
GENERATED_USER = "flower"
#: Seconds after which Flower drops a worker that stopped sending
#: heartbeats. Worker names change on every restart, so without it the list
#: keeps every worker that ever ran.
PURGE_OFFLINE_WORKERS_SECONDS = 60


def flower_arguments(port: int) -> list[str]:
    """Return the ``celery flower`` subcommand and options for ``port``.

    The broker and the credentials are not among them: Flower reads the
    broker from ``tasks.app`` (``POD_MONITOR_REDIS_URL``) and the
    credentials from ``FLOWER_BASIC_AUTH``, so no secret shows in the
    process list.
    """
    return [
        "flower",
        f"--port={port}",
        f"--address={HOST}",
        f"--purge_offline_workers={PURGE_OFFLINE_WORKERS_SECONDS}",
    ]


def check_basic_auth(value: str, source: str) -> str:
    """Return ``value`` if it is ``user:password``, else raise ConfigError."""
    user, colon, password = value.partition(":")
    if not colon or not user or not password:
        raise ConfigError(f"{source} is invalid: expected user:password")
    # Flower splits FLOWER_BASIC_AUTH at commas into several credentials.
    if "," in value:
        raise ConfigError(f"{source} is invalid: it must not contain a comma")
    return value


class Flower(Component):
    """``celery -A tasks.app flower`` on loopback with basic auth."""

    name = "flower"
    port_variables = (PORT_VARIABLE,)
    stop_timeout = 10.0

    def __init__(
        self, config: StackConfig, environ: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(config)
        self._environ = os.environ if environ is None else environ
        self._port = parse_port(self._environ, PORT_VARIABLE, DEFAULT_PORT)

    @property
    def ports(self) -> Sequence[int]:
        """HTTP port of the web UI, the REST API and ``/healthcheck``."""
        return (self._port,)

    @property
    def credentials_path(self) -> Path:
        """File with the generated ``user:password``, when none is configured."""
        return self.directory / "credentials"

    def skip_reason(self) -> str | None:
        """Skip when Flower is not installed (it is in the ``dev`` extra)."""
        if importlib.util.find_spec("flower") is None:
            return "the flower package is not installed"
        return None

    def prepare(self) -> None:
        """Generate the credentials file unless credentials are configured."""
        if self._environ.get(BASIC_AUTH_VARIABLE) or self.credentials_path.exists():
            return
        password = secrets.token_urlsafe(18)
        self.credentials_path.write_text(f"{GENERATED_USER}:{password}\n")
        self.credentials_path.chmod(0o600)

    def basic_auth(self) -> str | None:
        """Return the ``user:password`` Flower uses, or None before ``prepare``.

        Raises ConfigError when the configured or stored value is invalid.
        """
        configured = self._environ.get(BASIC_AUTH_VARIABLE)
        if configured:
            return check_basic_auth(configured, BASIC_AUTH_VARIABLE)
        try:
            stored = self.credentials_path.read_text().strip()
        except FileNotFoundError:
            return None
        return check_basic_auth(stored, str(self.credentials_path))

    def command(self) -> Sequence[str]:
        """Return ``celery -A tasks.app flower`` with this stack's port."""
        celery = Path(paths.venv_python()).parent / "celery"
        return [str(celery), "-A", "tasks.app", *flower_arguments(self._port)]

    def environment(self) -> Mapping[str, str]:
        """Return this environment plus the broker and the credentials."""
        basic_auth = self.basic_auth()
        if basic_auth is None:
            raise ConfigError(
                f"no Flower credentials: set {BASIC_AUTH_VARIABLE} or run `up`, "
                f"which writes {self.credentials_path}"
            )
        return {
            **os.environ,
            "POD_MONITOR_REDIS_URL": self.config.redis_url,
            "FLOWER_BASIC_AUTH": basic_auth,
        }

    def working_directory(self) -> Path:
        """Start in the checkout so ``-A tasks.app`` imports this copy."""
        return paths.CHECKOUT_DIR

    def owns_cmdline(self, cmdline: str) -> bool:
        """Match ``celery ... flower`` started on this stack's port."""
        return (
            "celery" in cmdline
            and " flower " in f"{cmdline} "
            and f"--port={self._port}" in cmdline
        )

    def check_health(self) -> str | None:
        """Expect 200 and ``OK`` from ``GET /healthcheck``, which needs no login."""
        url = f"http://{HOST}:{self._port}/healthcheck"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                body = reply.read(64)
        except (OSError, urllib.error.URLError) as error:
            return f"GET /healthcheck failed: {error}"
        if body != b"OK":
            return f"GET /healthcheck returned {body!r}, expected b'OK'"
        return None

    def exports(self) -> dict[str, str]:
        """Return the variables ``env`` prints for clients of Flower."""
        exports = {"POD_MONITOR_FLOWER_URL": f"http://{HOST}:{self._port}"}
        basic_auth = self.basic_auth()
        if basic_auth is not None:
            exports[BASIC_AUTH_VARIABLE] = basic_auth
        return exports
