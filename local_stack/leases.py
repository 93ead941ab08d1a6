"""Shared locks that mark a stack folder as in use by test sessions.

Several pytest sessions may share one stack. Each holds a shared flock on
`<stack>/.sessions.lock` while it runs. A session that started components
stops them at its end only if it can then take the lock exclusively, which
means no other session still uses the stack. The kernel drops the lock of a
session that dies, so a crash leaves no stale lease behind.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO


def _lock_path(stack_dir: Path) -> Path:
    return stack_dir / ".sessions.lock"


class SessionLease:
    """One session's shared lock on a stack folder."""

    def __init__(self, stack_dir: Path) -> None:
        stack_dir.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = _lock_path(stack_dir).open("a")
        fcntl.flock(self._file, fcntl.LOCK_SH)

    def release(self) -> bool:
        """Drop the lease and return True if no other session holds one.

        Converting the shared lock to an exclusive one is not atomic under
        flock, so two sessions ending at the same moment may both return
        False and leave the stack running, which is the safe outcome.
        """
        if self._file is None:
            return False
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            last = False
        else:
            last = True
        self._file.close()
        self._file = None
        return last


def sessions_active(stack_dir: Path) -> bool:
    """Return True if some test session holds a lease on `stack_dir`."""
    path = _lock_path(stack_dir)
    if not path.exists():
        return False
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
    return False
