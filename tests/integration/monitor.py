"""The pod monitor run for real: a watcher and a prefork Celery worker.

Tests of the main job start both as subprocesses against the local stack,
each test module with its own namespace, Kafka topic and Redis database,
then create execution pods through the API server and read the events back
from Kafka.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from kubernetes import client as kube_client

from local_stack.components.flower import flower_arguments
from local_stack.executions import execution_pod

VENV_BIN = Path(sys.executable).parent
TERMINAL_TYPES = frozenset(
    {"execution.completed", "execution.failed", "execution.timed_out"}
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Process:
    """A subprocess with its log in a file, stopped on ``stop``."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    #: Port of the worker's Prometheus metrics, for workers.
    metrics_port: int | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL, timeout=5)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(
            self.log_path.read_text(errors="replace").splitlines()[-lines:]
        )


@dataclass
class Monitor:
    """Watcher, worker and the clients a test needs to drive and observe them."""

    namespace: str
    topic: str
    redis_url: str
    bootstrap_servers: str
    core: kube_client.CoreV1Api
    env: dict[str, str]
    log_dir: Path
    processes: dict[str, Process] = field(default_factory=dict)
    _client: Celery | None = field(default=None, repr=False)

    def worker(self, name: str = "worker", concurrency: int = 2) -> Process:
        argv = [
            str(VENV_BIN / "celery"),
            "-A",
            "tasks.app",
            "worker",
            "-P",
            "prefork",
            "-c",
            str(concurrency),
            "-Q",
            "pod-changes,reconcile",
            "-E",
            "-n",
            f"{name}-{uuid.uuid4().hex[:6]}@%h",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "INFO",
        ]
        port = free_port()
        env = {
            "POD_MONITOR_WORKER_METRICS_HOST": "127.0.0.1",
            "POD_MONITOR_WORKER_METRICS_PORT": str(port),
        }
        process = self._start(name, argv, env)
        process.metrics_port = port
        return process

    def beat(self, name: str = "beat", env: dict[str, str] | None = None) -> Process:
        """Start ``celery beat`` with the app's scheduler (celery-redbeat)."""
        argv = [str(VENV_BIN / "celery"), "-A", "tasks.app", "beat", "-l", "INFO"]
        return self._start(name, argv, env)

    def flower(self, port: int, basic_auth: str, name: str = "flower") -> Process:
        """Start Flower on ``port`` for this module's Redis database.

        The credentials go through the environment, so they stay out of the
        process list.
        """
        argv = [str(VENV_BIN / "celery"), "-A", "tasks.app", *flower_arguments(port)]
        return self._start(name, argv, {"FLOWER_BASIC_AUTH": basic_auth})

    def create_pod(self, manifest: dict[str, Any]) -> str:
        """Create a pod from a full manifest and return its name."""
        body: Any = manifest
        pod: Any = self.core.create_namespaced_pod(self.namespace, body)
        return str(pod.metadata.name)

    def celery_client(self) -> Celery:
        """Return a Celery app that sends to and reads results from this
        module's Redis database, whatever ``tasks.app`` was configured with.
        """
        if self._client is None:
            client = Celery(
                "pod-monitor-test-client",
                broker=self.redis_url,
                backend=self.redis_url,
                set_as_current=False,
            )
            client.conf.update(
                task_serializer="json",
                result_serializer="json",
                accept_content=["json"],
                task_routes={"pod_monitor.reconcile": {"queue": "reconcile"}},
            )
            self._client = client
        return self._client

    def watcher(self, name: str = "watcher") -> Process:
        env = {
            "POD_MONITOR_HEALTH_HOST": "127.0.0.1",
            "POD_MONITOR_HEALTH_PORT": str(free_port()),
        }
        return self._start(name, [str(VENV_BIN / "pod-monitor-watcher")], env)

    def _start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> Process:
        process = Process(
            name, argv, {**self.env, **(env or {})}, self.log_dir / f"{name}.log"
        )
        process.start()
        self.processes[name] = process
        return process

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.stop()
        if self._client is not None:
            self._client.close()
            self._client = None

    def submit(self, execution_id: str, code: str, **options: Any) -> str:
        manifest: Any = execution_pod(execution_id, code, **options)
        pod: Any = self.core.create_namespaced_pod(self.namespace, manifest)
        return str(pod.metadata.name)

    def consumer(self) -> Consumer:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": f"test-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        metadata = consumer.list_topics(self.topic, timeout=10)
        partitions = metadata.topics[self.topic].partitions
        consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions]
        )
        return consumer

    def wait_for_terminal(
        self,
        execution_ids: Iterable[str],
        *,
        timeout: float = 120.0,
        settle: float = 3.0,
    ) -> dict[str, list[Record]]:
        """Return every record per execution once each has a terminal event.

        Keeps reading for ``settle`` seconds after the last terminal event,
        so that a duplicate published late would be seen too.
        """
        wanted = set(execution_ids)
        records: dict[str, list[Record]] = defaultdict(list)
        consumer = self.consumer()
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        try:
            while time.monotonic() < (settle_until or deadline):
                for record in _poll(consumer):
                    if record.key in wanted:
                        records[record.key].append(record)
                done = all(
                    any(r.event["event_type"] in TERMINAL_TYPES for r in records[i])
                    for i in wanted
                )
                if done and settle_until is None:
                    settle_until = time.monotonic() + settle
        finally:
            consumer.close()
        missing = [
            i
            for i in wanted
            if not any(r.event["event_type"] in TERMINAL_TYPES for r in records[i])
        ]
        if missing:
            raise AssertionError(
                f"no terminal event within {timeout:.0f} s for {sorted(missing)}; "
                f"got {dict(_types(records))}\n" + self.diagnostics()
            )
        return dict(records)

    def read_all(self, *, idle: float = 3.0) -> list[Record]:
        consumer = self.consumer()
        out: list[Record] = []
        quiet_since = time.monotonic()
        try:
            while time.monotonic() - quiet_since < idle:
                batch = list(_poll(consumer))
                if batch:
                    out.extend(batch)
                    quiet_since = time.monotonic()
        finally:
            consumer.close()
        return out

    def diagnostics(self) -> str:
        parts = []
        for process in self.processes.values():
            state = (
                "running"
                if process.running
                else f"exited {process.popen and process.popen.returncode}"
            )
            parts.append(
                f"--- {process.name} ({state}), last lines:\n{process.log_tail()}"
            )
        return "\n".join(parts)


@dataclass(frozen=True)
class Record:
    key: str
    partition: int
    offset: int
    headers: dict[str, bytes]
    value: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.value)
        return parsed


def _poll(consumer: Consumer) -> Iterator[Record]:
    for message in consumer.consume(num_messages=500, timeout=0.5):
        if message.error() is not None:
            continue
        key = message.key()
        yield Record(
            key=key.decode() if isinstance(key, bytes) else str(key),
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            headers=_headers(message.headers()),
            value=message.value() or b"",
        )


def _headers(raw: Any) -> dict[str, bytes]:
    pairs: list[tuple[str, Any]] = list(raw or [])
    return {name: value for name, value in pairs if isinstance(value, bytes)}


def _types(records: dict[str, list[Record]]) -> Iterator[tuple[str, list[str]]]:
    for key, entries in records.items():
        yield key, [entry.event["event_type"] for entry in entries]


def event_types(records: list[Record]) -> list[str]:
    return [record.event["event_type"] for record in records]


def output_bytes(output: dict[str, Any]) -> bytes:
    if output["encoding"] == "base64":
        return base64.b64decode(output["data"])
    return str(output["data"]).encode()
