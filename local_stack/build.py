"""Build the stack's binaries and resolve its jars into the build cache.

Go binaries land in `<cache>/bin/<name>-<version>/<name>` and Kafka's jars in
`<cache>/kafka-<version>/libs`. Next to each result a stamp file stores a
hash of the inputs (go.mod, go.sum and linker flags, or the pom), so a
result is rebuilt only when its pin changes. Results are written to a
temporary path and renamed, so an interrupted build never looks finished.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from local_stack import paths
from local_stack.errors import BuildFailedError, MissingPrerequisiteError

logger = logging.getLogger(__name__)

KUBE_MODULE_DIR = paths.DEPLOY_DIR / "kube"
ETCD_MODULE_DIR = paths.DEPLOY_DIR / "etcd"
KAFKA_DIR = paths.DEPLOY_DIR / "kafka"

#: Lines of a failed build's log quoted in the error.
_LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class GoBinary:
    """One command built with `go build` from a wrapper module."""

    name: str
    version: str
    module_dir: Path
    package: str
    ldflags: str

    def path(self, cache_dir: Path) -> Path:
        """Return where the binary is cached."""
        return cache_dir / "bin" / f"{self.name}-{self.version}" / self.name

    def fingerprint(self) -> str:
        """Return a hash of everything that decides the binary's content."""
        digest = hashlib.sha256()
        for name in ("go.mod", "go.sum"):
            digest.update((self.module_dir / name).read_bytes())
        digest.update(self.package.encode())
        digest.update(self.ldflags.encode())
        return digest.hexdigest()


def required_module_version(module_dir: Path, module: str) -> str:
    """Return the version at which go.mod in `module_dir` requires `module`."""
    text = (module_dir / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.M)
    if match is None:
        raise BuildFailedError(
            module, f"no require line in {module_dir / 'go.mod'}", module_dir
        )
    return match.group(1)


def kube_binaries() -> list[GoBinary]:
    """Return kube-apiserver and kubectl at the version pinned in go.mod."""
    version = required_module_version(KUBE_MODULE_DIR, "k8s.io/kubernetes")
    major, minor = version.lstrip("v").split(".")[:2]
    # Without these, /version and `kubectl version` report v0.0.0, because
    # the values normally come from the Kubernetes release scripts.
    ldflags = " ".join(
        [
            "-s -w",
            f"-X k8s.io/component-base/version.gitVersion={version}",
            f"-X k8s.io/component-base/version.gitMajor={major}",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
        ]
    )
    return [
        GoBinary(
            name,
            version,
            KUBE_MODULE_DIR,
            f"k8s.io/kubernetes/cmd/{name}",
            ldflags,
        )
        for name in ("kube-apiserver", "kubectl")
    ]


def etcd_binary() -> GoBinary:
    """Return the etcd server at the version pinned in go.mod."""
    version = required_module_version(ETCD_MODULE_DIR, "go.etcd.io/etcd/server/v3")
    return GoBinary(
        "etcd", version, ETCD_MODULE_DIR, "go.etcd.io/etcd/server/v3", "-s -w"
    )


def kafka_version() -> str:
    """Return the Kafka version pinned in the pom."""
    match = re.search(
        r"<kafka.version>([^<]+)</kafka.version>", (KAFKA_DIR / "pom.xml").read_text()
    )
    if match is None:
        raise BuildFailedError("kafka", "no <kafka.version> in pom.xml", KAFKA_DIR)
    return match.group(1)


def kafka_libs_dir(cache_dir: Path) -> Path:
    """Return the folder with Kafka's runtime jars."""
    return cache_dir / f"kafka-{kafka_version()}" / "libs"


def require_tool(tool: str, purpose: str, install_hint: str) -> str:
    """Return the path of `tool` on PATH or raise MissingPrerequisiteError."""
    found = shutil.which(tool)
    if found is None:
        raise MissingPrerequisiteError(
            f"{tool} not found on PATH; it is needed to {purpose}. {install_hint}"
        )
    return found


@contextlib.contextmanager
def cache_lock(cache_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the cache while building into it."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _stamp_path(result: Path) -> Path:
    return result.with_name(result.name + ".stamp")


def _is_current(result: Path, fingerprint: str) -> bool:
    stamp = _stamp_path(result)
    return result.exists() and stamp.exists() and stamp.read_text() == fingerprint


GO_INSTALL_HINT = "Install Go 1.26 or newer (https://go.dev/dl/) and put it on PATH."
MAVEN_INSTALL_HINT = "Install Maven, for example `apt-get install -y maven`."


def require_go_if_unbuilt(binary: GoBinary, cache_dir: Path) -> None:
    """Raise MissingPrerequisiteError if `binary` must be built and Go is missing."""
    if not _is_current(binary.path(cache_dir), binary.fingerprint()):
        require_tool("go", f"build {binary.name} {binary.version}", GO_INSTALL_HINT)


def require_maven_if_unresolved(cache_dir: Path) -> None:
    """Raise MissingPrerequisiteError if Kafka's jars must be resolved and
    Maven is missing."""
    fingerprint = hashlib.sha256((KAFKA_DIR / "pom.xml").read_bytes()).hexdigest()
    if not _is_current(kafka_libs_dir(cache_dir), fingerprint):
        require_tool(
            "mvn", "resolve Kafka's jars from Maven Central", MAVEN_INSTALL_HINT
        )


def ensure_go_binary(binary: GoBinary, cache_dir: Path) -> Path:
    """Build `binary` unless the cache contains it for the same inputs.

    Raises MissingPrerequisiteError without Go and BuildFailedError when the
    build fails. The first kube-apiserver build takes many minutes.
    """
    output = binary.path(cache_dir)
    fingerprint = binary.fingerprint()
    if _is_current(output, fingerprint):
        return output
    go = require_tool("go", f"build {binary.name} {binary.version}", GO_INSTALL_HINT)
    output.parent.mkdir(parents=True, exist_ok=True)
    log_path = cache_dir / "build-logs" / f"{binary.name}-{binary.version}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".tmp")
    logger.info(
        "building %s %s from %s (log: %s)",
        binary.name,
        binary.version,
        binary.package,
        log_path,
    )
    environment = dict(os.environ)
    # The wrapper modules pin Go 1.26; "local" stops Go from downloading
    # another toolchain when the installed one is newer or older.
    environment.setdefault("GOTOOLCHAIN", "local")
    argv = [
        go,
        "build",
        "-ldflags",
        binary.ldflags,
        "-o",
        str(temporary),
        binary.package,
    ]
    started = time.monotonic()
    _run_logged(argv, binary.module_dir, log_path, environment, binary.name)
    temporary.replace(output)
    _stamp_path(output).write_text(fingerprint)
    logger.info(
        "built %s %s in %.0fs: %s",
        binary.name,
        binary.version,
        time.monotonic() - started,
        output,
    )
    return output


def ensure_kafka_libs(cache_dir: Path) -> Path:
    """Resolve Kafka's runtime jars with Maven unless they are cached."""
    libs = kafka_libs_dir(cache_dir)
    pom = KAFKA_DIR / "pom.xml"
    fingerprint = hashlib.sha256(pom.read_bytes()).hexdigest()
    if _is_current(libs, fingerprint):
        return libs

    mvn = require_tool(
        "mvn", "resolve Kafka's jars from Maven Central", MAVEN_INSTALL_HINT
    )
    version = kafka_version()
    log_path = cache_dir / "build-logs" / f"kafka-{version}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = libs.with_name(libs.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    logger.info("resolving Kafka %s jars with Maven (log: %s)", version, log_path)

    argv = [
        mvn,
        "--batch-mode",
        "--no-transfer-progress",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={temporary}",
    ]
    started = time.monotonic()
    _run_logged(argv, KAFKA_DIR, log_path, dict(os.environ), f"kafka {version} jars")

    shutil.rmtree(libs, ignore_errors=True)
    temporary.replace(libs)
    _stamp_path(libs).write_text(fingerprint)
    logger.info("resolved Kafka %s jars in %.0fs", version, time.monotonic() - started)
    return libs


def _run_logged(
    argv: list[str], cwd: Path, log_path: Path, env: dict[str, str], target: str
) -> None:
    with log_path.open("w") as log:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        result = subprocess.run(
            argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False
        )
    if result.returncode != 0:
        lines = log_path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        raise BuildFailedError(
            target,
            f"exit code {result.returncode}; last lines:\n    " + "\n    ".join(lines),
            log_path,
        )
