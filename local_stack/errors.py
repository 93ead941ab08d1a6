"""Errors raised by the local stack, each naming what failed and what to do."""

from __future__ import annotations

from pathlib import Path


class StackError(Exception):
    """Base class of every error that the stack reports to its user."""


class ConfigError(StackError):
    """An environment variable of the stack has an invalid value."""


class MissingPrerequisiteError(StackError):
    """A tool needed to build or run a component is not installed."""


class BuildFailedError(StackError):
    """Building a binary or resolving jars failed."""

    def __init__(self, target: str, reason: str, log_path: Path) -> None:
        super().__init__(f"building {target} failed: {reason} (log: {log_path})")
        self.target = target
        self.log_path = log_path


class PortInUseError(StackError):
    """A port that a component needs is bound by another process."""

    def __init__(
        self, component: str, port: int, holder: str | None, variable: str
    ) -> None:
        held_by = f" by {holder}" if holder else " by an unknown process"
        super().__init__(
            f"{component}: port 127.0.0.1:{port} is already in use{held_by}; stop "
            f"that process or set {variable} to a free port"
        )
        self.component = component
        self.port = port


class ComponentFailedError(StackError):
    """A component did not start or did not become healthy."""

    def __init__(self, component: str, reason: str, log_path: Path) -> None:
        super().__init__(f"{component} failed: {reason} (log: {log_path})")
        self.component = component
        self.reason = reason
        self.log_path = log_path
