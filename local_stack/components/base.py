"""The contract every component of the stack implements."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from pathlib import Path

from local_stack import processes
from local_stack.config import StackConfig
from local_stack.errors import PortInUseError


class Component(abc.ABC):
    """A server process of the stack with its folder, log, pid file and ports.

    Subclasses define how to build, prepare, start and check the server. The
    stack calls `ensure_built`, then `prepare`, then starts `command()` in
    the background and polls `check_health` until it returns None.
    """

    #: Short name used in messages, folder names and `status` output.
    name: str = ""

    #: Seconds `down` waits after SIGTERM before it sends SIGKILL.
    stop_timeout: float = 20.0

    def __init__(self, config: StackConfig) -> None:
        self.config = config

    @property
    def directory(self) -> Path:
        """Folder with this component's state, log and pid file."""
        return self.config.stack_dir / self.name

    @property
    def log_path(self) -> Path:
        """File receiving the server's standard output and error."""
        return self.directory / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        """File holding the pid of the running server."""
        return self.directory / f"{self.name}.pid"

    #: Environment variables that set `ports`, in the same order.
    port_variables: Sequence[str] = ()

    @property
    @abc.abstractmethod
    def ports(self) -> Sequence[int]:
        """Ports the server listens on, the client port first."""

    def check_ports_free(self) -> None:
        """Raise PortInUseError if another process listens on one of `ports`."""
        for port, variable in zip(self.ports, self.port_variables, strict=True):
            if not processes.port_is_free(port):
                holder = processes.describe_port_holder(port)
                raise PortInUseError(self.name, port, holder, variable)

    def skip_reason(self) -> str | None:
        """Return why this component is left out, or None to run it."""
        return None

    def check_prerequisites(self) -> None:
        """Raise MissingPrerequisiteError if a tool to run the server is missing."""
        return

    def ensure_built(self) -> None:
        """Build or fetch what the server needs into the cache, if missing."""
        return

    def prepare(self) -> None:
        """Write config files and initialise data before each start."""
        return

    @abc.abstractmethod
    def command(self) -> Sequence[str]:
        """Return the argv that runs the server in the foreground."""

    def environment(self) -> Mapping[str, str] | None:
        """Return the server's environment, or None to inherit this one."""
        return None

    def working_directory(self) -> Path | None:
        """Return the folder to start the server in, or None for the current."""
        return self.directory

    @abc.abstractmethod
    def owns_cmdline(self, cmdline: str) -> bool:
        """Return True if a process with `cmdline` is this stack's server.

        Used to trust a pid file and to adopt a server whose pid file is lost.
        """

    @abc.abstractmethod
    def check_health(self) -> str | None:
        """Probe the server once: None when healthy, else the reason it is not."""

    def after_healthy(self) -> None:
        """Run once after the server became healthy (bootstrap objects)."""
        return
