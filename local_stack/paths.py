"""Locations of the checkout, the stack's state folder and the build cache."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

#: Root of the checkout that contains this package. An editable install keeps
#: the package inside the checkout, which the deploy files rely on.
CHECKOUT_DIR = Path(__file__).resolve().parent.parent

#: Go wrapper modules, the Kafka pom and its config templates.
DEPLOY_DIR = CHECKOUT_DIR / "deploy" / "local"


def stack_dir(environ: Mapping[str, str]) -> Path:
    """Return the folder with the state, logs and pid files of a stack."""
    configured = environ.get("POD_MONITOR_STACK_DIR")
    if configured:
        return Path(configured).expanduser().resolve()
    return CHECKOUT_DIR / ".stack"


def cache_dir(environ: Mapping[str, str]) -> Path:
    """Return the build cache folder, shared by every checkout of one user."""
    configured = environ.get("POD_MONITOR_CACHE_DIR")
    if configured:
        return Path(configured).expanduser().resolve()
    return Path.home() / ".cache" / "pod-monitor"


def venv_python() -> str:
    """Return the checkout's virtualenv interpreter, or the running one.

    Child processes written in Python (the kubelet stand-in) need the
    project's dependencies, which live in `.venv` when `make test` made it.
    """
    candidate = CHECKOUT_DIR / ".venv" / "bin" / "python"
    if candidate.exists():
        return str(candidate)
    return sys.executable
