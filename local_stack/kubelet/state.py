"""Records of the stand-in's work per pod, kept in the state folder across restarts.

Layout of the state folder::

    kubelet.crt, kubelet.key          serving certificate of the log endpoint
    pods/<uid>.json                   one PodRecord per pod the stand-in took on
    logs/<namespace>_<name>_<uid>/<container>/0.log and 0.index
    scratch/<uid>/<container>/        working directory without workingDir

A restarted stand-in reads the records to leave finished pods alone, to kill
processes that the previous run left behind, and to resume scripts after the
last step applied.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

Mode = Literal["process", "script"]


@dataclass
class ProcessRecord:
    """A container process started by the stand-in."""

    container: str
    pid: int
    start_ticks: int | None
    cgroup: str | None


@dataclass
class PodRecord:
    """The stand-in's own record of one pod."""

    uid: str
    namespace: str
    name: str
    mode: Mode
    finished: bool = False
    #: Index of the last script step applied, -1 before the first.
    script_step: int = -1
    processes: list[ProcessRecord] = field(default_factory=list)


class StateStore:
    """Reads and writes PodRecords and returns the folders of a pod."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._pods = root / "pods"
        self._pods.mkdir(parents=True, exist_ok=True)

    def log_folder(self, namespace: str, name: str, uid: str) -> Path:
        return self.root / "logs" / f"{namespace}_{name}_{uid}"

    def scratch_folder(self, uid: str, container: str) -> Path:
        return self.root / "scratch" / uid / container

    def load(self, uid: str) -> PodRecord | None:
        path = self._pods / f"{uid}.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            logger.warning(
                "unreadable pod record ignored", extra={"uid": uid, "error": str(error)}
            )
            return None
        processes = [ProcessRecord(**item) for item in data.pop("processes", [])]
        return PodRecord(**data, processes=processes)

    def save(self, record: PodRecord) -> None:
        """Write the record atomically: a crash leaves the old or the new one."""
        path = self._pods / f"{record.uid}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(record)))
        temporary.replace(path)

    def forget(self, uid: str) -> None:
        """Remove the record and scratch folders of a pod that is gone."""
        (self._pods / f"{uid}.json").unlink(missing_ok=True)
        shutil.rmtree(self.root / "scratch" / uid, ignore_errors=True)

    def uids(self) -> list[str]:
        return [path.stem for path in self._pods.glob("*.json")]
