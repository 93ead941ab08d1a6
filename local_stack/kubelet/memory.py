"""Container memory limits: a cgroup v1 memory controller, or RSS polling.

The stand-in prefers a child cgroup of its own memory cgroup per container,
with ``memory.limit_in_bytes`` set to the container's limit, so the kernel's
OOM killer enforces the limit exactly and ``memory.oom_control`` counts the
kills. It needs cgroup v1 with the memory controller mounted and write access
(root). Where that is missing, :class:`RssPoller` sums the resident set size
of the container's process session and the stand-in kills the session when
the sum passes the limit. Polling misses memory allocated and freed between
two polls and lets a fast allocator overshoot the limit until the next poll.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

logger = logging.getLogger(__name__)

_BINARY_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_DECIMAL_SUFFIXES = {
    "m": Decimal("0.001"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")

#: Name of the folder, inside the stand-in's own memory cgroup, that contains one
#: child cgroup per container.
CGROUP_FOLDER = "local-kubelet"

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def parse_quantity(text: str) -> int:
    """Parse a Kubernetes resource quantity ("64Mi", "1G", "1.5e9") into bytes.

    Fractions round up, as the API server's ``Quantity.Value()`` does. Raise
    ValueError for text that is not a quantity.
    """
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise ValueError(f"invalid resource quantity {text!r}")
    number_text, suffix = match.groups()
    try:
        number = Decimal(number_text)
    except InvalidOperation as error:
        raise ValueError(f"invalid resource quantity {text!r}") from error
    if suffix in _BINARY_SUFFIXES:
        value = number * _BINARY_SUFFIXES[suffix]
    elif suffix in _DECIMAL_SUFFIXES:
        value = number * _DECIMAL_SUFFIXES[suffix]
    else:
        raise ValueError(f"invalid suffix {suffix!r} in resource quantity {text!r}")
    return math.ceil(value)


@dataclass(frozen=True)
class ContainerCgroup:
    """Memory cgroup of one container. Processes join it before they exec."""

    path: Path

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def oom_kill_count(self) -> int:
        """Return how many processes the OOM killer has killed in this cgroup."""
        try:
            text = (self.path / "memory.oom_control").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        # NOTE: kernels before 4.13 have no oom_kill counter. failcnt also
        # counts charges at the limit that reclaim satisfied, so there a
        # container that only touched its limit is reported OOMKilled.
        try:
            return int((self.path / "memory.failcnt").read_text())
        except (OSError, ValueError):
            return 0

    def kill_all(self) -> None:
        """Send SIGKILL to every process still in the cgroup."""
        try:
            pids = self.procs_file.read_text().split()
        except OSError:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)

    def remove(self) -> None:
        """Remove the cgroup. Logs and gives up if processes remain in it."""
        try:
            self.path.rmdir()
        except FileNotFoundError:
            return
        except OSError as error:
            logger.warning(
                "failed to remove container cgroup",
                extra={"cgroup": str(self.path), "error": str(error)},
            )


class CgroupV1Memory:
    """Creates per-container memory cgroups under the stand-in's own cgroup."""

    def __init__(self, parent: Path) -> None:
        self.parent = parent

    @classmethod
    def detect(cls, node_name: str) -> CgroupV1Memory | None:
        """Return a controller if a child cgroup with a memory limit works here.

        The check creates a probe cgroup, writes a limit and removes it again.
        Return None on cgroup v2 only hosts, without the memory controller or
        without write access.
        """
        mount = _memory_mount()
        own = _own_memory_cgroup()
        if mount is None or own is None:
            return None
        parent = mount / own.lstrip("/") / f"{CGROUP_FOLDER}-{node_name}"
        # The pid keeps the probes of two stand-ins of one node name apart.
        probe = parent / f"probe-{os.getpid()}"
        try:
            parent.mkdir(exist_ok=True)
            probe.mkdir(exist_ok=True)
            (probe / "memory.limit_in_bytes").write_text(str(64 * 2**20))
            probe.rmdir()
        except OSError as error:
            logger.info(
                "memory cgroup not usable, polling RSS instead",
                extra={"cgroup": str(parent), "error": str(error)},
            )
            return None
        return cls(parent)

    def release(self) -> None:
        """Remove the parent cgroup if no container cgroup is left in it."""
        try:
            self.parent.rmdir()
        except OSError:
            return

    def create(self, container_id: str, limit_bytes: int) -> ContainerCgroup:
        """Create the cgroup of one container with its memory limit.

        Swap is limited to the same amount where the kernel accounts swap, so a
        container cannot escape the limit by swapping. Raise OSError on failure.
        """
        path = self.parent / container_id
        path.mkdir(exist_ok=True)
        (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
        memsw = path / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            memsw.write_text(str(limit_bytes))
        return ContainerCgroup(path)


def _memory_mount() -> Path | None:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        before, _, after = line.partition(" - ")
        fields_after = after.split()
        if len(fields_after) < 3 or fields_after[0] != "cgroup":
            continue
        if "memory" in fields_after[2].split(","):
            return Path(before.split()[4])
    return None


def _own_memory_cgroup() -> str | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    return None


class RssPoller:
    """Sums the resident set size of the processes in one session."""

    def __init__(self, session_id: int) -> None:
        self.session_id = session_id

    def rss_bytes(self) -> int:
        """Return the summed RSS of the session's live processes in bytes."""
        total_pages = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_bytes()
            except OSError:
                continue
            # The command name is in brackets and may contain spaces, so the
            # numeric fields are counted from the last closing bracket.
            fields = stat[stat.rfind(b")") + 2 :].split()
            # fields[0] is field 3 (state) of proc(5), so session (6) is
            # fields[3] and rss (24, in pages) is fields[21].
            if len(fields) > 21 and int(fields[3]) == self.session_id:
                total_pages += int(fields[21])
        return total_pages * _PAGE_SIZE
