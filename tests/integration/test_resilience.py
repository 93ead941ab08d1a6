"""Nothing lost, nothing doubled, when Kafka or a worker goes away.

These tests run their own Kafka node, started from the local stack's jars
in a folder of the test's own, so stopping it leaves the shared node to
the other tests.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not in __all__
    AdminClient,
    NewTopic,
)

from local_stack import paths
from local_stack.config import StackConfig
from local_stack.stack import Stack
from tests.conftest import TEST_TOPIC_PARTITIONS
from tests.integration.monitor import Monitor, event_types, free_port

#: Seconds before Redis redelivers a task whose worker died holding it.
VISIBILITY_TIMEOUT = 150
LIFECYCLE_OK = ["execution.scheduled", "execution.running", "execution.completed"]


@pytest.fixture(scope="module")
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A Kafka node of this module only, on free ports."""
    config = StackConfig(
        stack_dir=tmp_path_factory.mktemp("private-stack"),
        cache_dir=paths.cache_dir(os.environ),
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
    )
    stack = Stack(config)
    stack.start(["kafka"])
    yield stack
    stack.stop(["kafka"])


@pytest.fixture(scope="module")
def resilient(monitor_env: Monitor, private_kafka: Stack) -> Monitor:
    """The module's monitor, publishing to the private Kafka node."""
    bootstrap = private_kafka.config.kafka_bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics(
        [
            NewTopic(
                monitor_env.topic,
                num_partitions=TEST_TOPIC_PARTITIONS,
                replication_factor=1,
            )
        ]
    )[monitor_env.topic].result(timeout=30)
    monitor = dataclasses.replace(
        monitor_env,
        bootstrap_servers=bootstrap,
        env={
            **monitor_env.env,
            "POD_MONITOR_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            # Short, so a task lost with a killed worker comes back within
            # the test; the reconciliation's time limit must stay below it.
            "POD_MONITOR_VISIBILITY_TIMEOUT_SECONDS": str(VISIBILITY_TIMEOUT),
            "POD_MONITOR_RECONCILE_TIME_LIMIT_SECONDS": "5",
            "POD_MONITOR_EXECUTION_LOCK_SECONDS": "60",
        },
        processes=monitor_env.processes,
    )
    monitor.watcher()
    monitor.worker()
    return monitor


def _wait_for_pods_to_end(
    monitor: Monitor, names: list[str], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            pod: Any = monitor.core.read_namespaced_pod(name, monitor.namespace)
            if pod.status.phase in {"Succeeded", "Failed"}:
                pending.discard(name)
        time.sleep(0.3)
    assert not pending, f"pods still running after {timeout} s: {sorted(pending)}"


def test_kafka_down_loses_nothing(resilient: Monitor, private_kafka: Stack) -> None:
    monitor = resilient
    warm_up = f"warm-{uuid.uuid4().hex[:8]}"
    monitor.submit(warm_up, "print('up')")
    monitor.wait_for_terminal([warm_up])

    private_kafka.stop(["kafka"])
    ids = [f"outage-{uuid.uuid4().hex[:8]}" for _ in range(4)]
    names = [
        monitor.submit(i, f"print('during outage {n}')") for n, i in enumerate(ids)
    ]
    _wait_for_pods_to_end(monitor, names)
    # Longer than the delivery timeout (10 s), so deliveries fail and retry.
    time.sleep(15)
    assert monitor.processes["worker"].running, monitor.diagnostics()
    private_kafka.start(["kafka"])

    records = monitor.wait_for_terminal(ids, timeout=180, settle=5)

    for execution_id in ids:
        assert event_types(records[execution_id]) == LIFECYCLE_OK, execution_id
        assert len({r.event["event_id"] for r in records[execution_id]}) == 3
    assert monitor.processes["worker"].running


def test_killed_worker_loses_nothing(resilient: Monitor) -> None:
    monitor = resilient
    ids = [f"killed-{uuid.uuid4().hex[:8]}" for _ in range(4)]
    for execution_id in ids:
        monitor.submit(execution_id, "import time; time.sleep(1); print('done')")
    time.sleep(1.5)
    monitor.processes["worker"].kill()
    monitor.worker("worker")

    # A task a killed worker held comes back after the visibility timeout.
    records = monitor.wait_for_terminal(ids, timeout=VISIBILITY_TIMEOUT + 90, settle=5)

    for execution_id in ids:
        types = event_types(records[execution_id])
        assert types.count("execution.completed") == 1, types
        assert types[-1] == "execution.completed"
        assert types == sorted(types, key=LIFECYCLE_OK.index)


def test_killed_child_loses_nothing(resilient: Monitor, private_kafka: Stack) -> None:
    # With Kafka down, tasks wait in the worker's children for delivery
    # reports; killing the children then loses the tasks they hold unless
    # they go back to the queue.
    monitor = resilient
    private_kafka.stop(["kafka"])
    ids = [f"child-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    names = [monitor.submit(i, "print('child')") for i in ids]
    _wait_for_pods_to_end(monitor, names)
    time.sleep(2)
    worker = monitor.processes["worker"]
    assert worker.popen is not None
    children = _children(worker.popen.pid)
    assert children, "the prefork worker has no child processes"
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    private_kafka.start(["kafka"])

    records = monitor.wait_for_terminal(ids, timeout=180, settle=5)

    for execution_id in ids:
        types = event_types(records[execution_id])
        assert types.count("execution.completed") == 1, types
        assert types[-1] == "execution.completed"
    assert worker.running, monitor.diagnostics()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.extend(int(child) for child in (task / "children").read_text().split())
    return found


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, free_port())
    server.start()
    yield server
    server.stop()


class RedisServer:
    """A redis-server of one test, persisting to an append-only file.

    The local stack's Redis keeps nothing on disk; a Redis that is to
    restart without losing queued tasks must persist, as in production.
    """

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        log = (self.directory / "redis.log").open("ab")
        self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)


def test_redis_restart_loses_nothing(
    monitor_env: Monitor, private_redis: RedisServer
) -> None:
    monitor = dataclasses.replace(
        monitor_env,
        redis_url=private_redis.url,
        env={**monitor_env.env, "POD_MONITOR_REDIS_URL": private_redis.url},
        processes={},
    )
    try:
        monitor.worker()
        monitor.watcher()
        warm_up = f"warm-{uuid.uuid4().hex[:8]}"
        monitor.submit(warm_up, "print('up')")
        monitor.wait_for_terminal([warm_up])

        private_redis.stop()
        ids = [f"redis-down-{uuid.uuid4().hex[:8]}" for _ in range(3)]
        names = [monitor.submit(i, "print('while redis was down')") for i in ids]
        _wait_for_pods_to_end(monitor, names)
        time.sleep(5)
        assert monitor.processes["worker"].running, monitor.diagnostics()
        assert monitor.processes["watcher"].running, monitor.diagnostics()
        private_redis.start()

        records = monitor.wait_for_terminal(ids, timeout=180, settle=5)

        for execution_id in ids:
            assert event_types(records[execution_id]) == LIFECYCLE_OK, execution_id
    finally:
        monitor.stop_all()
