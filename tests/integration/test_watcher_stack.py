"""Integration tests of the watcher against the real API server and real Redis.

Pods are bound to a node that no kubelet serves, so only the tests change
their status. Tasks are read straight from the Celery queue in Redis (a
Redis list of kombu messages), so no worker is needed.
"""

from __future__ import annotations

import base64
import contextlib
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from kubernetes import client as kube_client

from local_stack.config import StackConfig
from tasks import names
from tasks.app import create_app
from tasks.kube import load_api_client
from tasks.settings import PodSelection
from tests.etcd_compaction import compact_etcd
from watcher.checkpoint import Checkpointer, RedisCheckpointStore, redis_client
from watcher.clock import SystemClock
from watcher.enqueue import CeleryEnqueuer, configure_sender
from watcher.health import Health
from watcher.kube import KubeClient
from watcher.leader import LeaseElector, LeaseOptions
from watcher.metrics import WatcherMetrics
from watcher.podapi import KubePodApi
from watcher.scope import Scope
from watcher.service import Service
from watcher.settings import load_config
from watcher.watching import ScopeWatcher, WatchOptions

SELECTOR_LABEL = "app.kubernetes.io/managed-by"
SELECTOR_VALUE = "pod-monitor-executions"
LABEL_SELECTOR = f"{SELECTOR_LABEL}={SELECTOR_VALUE}"
EXECUTION_ID_LABEL = "pod-monitor.io/execution-id"
KEY_PREFIX = "pod-monitor:watcher:"
#: A node that no kubelet stand-in serves, so pod status changes only here.
NODE = "no-kubelet"
#: Seconds a test waits for an expected task or state.
WAIT_SECONDS = 45.0
#: Port of the test's own Redis for the outage test, apart from the stack's.
OUTAGE_REDIS_PORT = 26390


SHORT_WATCHES = WatchOptions(
    timeout_min_seconds=5,
    timeout_max_seconds=8,
    read_timeout_margin_seconds=5,
    list_page_size=2,
)


def wait_for(
    predicate: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def queued_snapshots(redis_url: str) -> list[dict[str, Any]]:
    """Return the snapshots of the queued pod-change tasks, oldest first."""
    connection = redis.Redis.from_url(redis_url)
    try:
        raw_messages = connection.lrange(names.POD_CHANGES_QUEUE, 0, -1)
    finally:
        connection.close()
    snapshots = []
    # kombu pushes to the head of the list, so the oldest message is last.
    for raw in reversed(raw_messages):
        message = orjson.loads(raw)
        assert message["headers"]["task"] == names.POD_CHANGED_TASK
        args, _kwargs, _embed = orjson.loads(base64.b64decode(message["body"]))
        snapshots.append(args[0])
    return snapshots


def snapshots_of(redis_url: str, pod_name: str) -> list[dict[str, Any]]:
    return [s for s in queued_snapshots(redis_url) if s["name"] == pod_name]


def has_snapshot(redis_url: str, pod_name: str, **fields: Any) -> Callable[[], bool]:
    def check() -> bool:
        return any(
            all(snapshot.get(key) == value for key, value in fields.items())
            for snapshot in snapshots_of(redis_url, pod_name)
        )

    return check


def new_pod(name: str, execution_id: str | None = "exec-1") -> kube_client.V1Pod:
    labels = {SELECTOR_LABEL: SELECTOR_VALUE}
    if execution_id is not None:
        labels[EXECUTION_ID_LABEL] = execution_id
    return kube_client.V1Pod(
        metadata=kube_client.V1ObjectMeta(name=name, labels=labels),
        spec=kube_client.V1PodSpec(
            node_name=NODE,
            restart_policy="Never",
            containers=[kube_client.V1Container(name="main", image="busybox")],
        ),
    )


def set_phase(
    core: kube_client.CoreV1Api, namespace: str, name: str, phase: str
) -> None:
    core.patch_namespaced_pod_status(name, namespace, {"status": {"phase": phase}})


@dataclass
class RunningWatcher:
    watcher: ScopeWatcher
    metrics: WatcherMetrics
    health: Health
    stop: threading.Event
    api: KubePodApi
    thread: threading.Thread

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(
            f"pod_monitor_watcher_{name}",
            {"scope": self.watcher.scope.name, **labels},
        )
        return value or 0.0

    def established(self) -> bool:
        return self.metric("watch_established") == 1

    def shutdown(self) -> None:
        self.stop.set()
        self.api.interrupt()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive(), "watch loop did not stop"


@contextlib.contextmanager
def run_watcher(
    stack: StackConfig,
    namespace: str,
    redis_url: str,
    *,
    api_host: str | None = None,
    options: WatchOptions = SHORT_WATCHES,
) -> Iterator[RunningWatcher]:
    """Run one namespace's watch loop in a thread, with short watch timeouts.

    ``api_host`` replaces the API server URL of the kubeconfig.
    """
    clock = SystemClock()
    stop = threading.Event()
    metrics = WatcherMetrics()
    health = Health(clock, liveness_window=120, staleness=60, enqueue_failure_limit=30)
    app = create_app()
    app.conf.update(broker_url=redis_url)
    configure_sender(app)
    api_client = load_api_client(str(stack.kubeconfig_path))
    if api_host is not None:
        api_client.configuration.host = api_host
    kube = KubeClient(api_client, connect_timeout=5)
    api = KubePodApi(kube)
    scope = Scope(namespace)
    checkpoint_redis = redis_client(redis_url, timeout=2)
    watcher = ScopeWatcher(
        scope,
        api=api,
        selection=PodSelection(label_selector=LABEL_SELECTOR),
        enqueue=CeleryEnqueuer(
            app, clock=clock, stop=stop, metrics=metrics, health=health
        ),
        checkpointer=Checkpointer(
            RedisCheckpointStore(checkpoint_redis, KEY_PREFIX),
            scope,
            label_selector=LABEL_SELECTOR,
            interval=0.5,
            clock=clock,
            metrics=metrics,
        ),
        metrics=metrics,
        health=health,
        clock=clock,
        stop=stop,
        options=options,
        skip_warning_interval=0,
        rng=random.Random(),
    )
    thread = threading.Thread(
        target=watcher.run, name=f"watch-{namespace}", daemon=True
    )
    running = RunningWatcher(watcher, metrics, health, stop, api, thread)
    thread.start()
    try:
        yield running
    finally:
        running.shutdown()
        checkpoint_redis.close()
        app.close()


def stored_checkpoint(redis_url: str, namespace: str) -> dict[str, Any] | None:
    connection = redis.Redis.from_url(redis_url)
    try:
        raw = connection.get(f"{KEY_PREFIX}checkpoint:namespace:{namespace}")
    finally:
        connection.close()
    return None if raw is None else dict(orjson.loads(raw))


def test_watcher_enqueues_pod_changes(
    stack: StackConfig,
    kube_api_client: kube_client.ApiClient,
    kube_namespace: str,
    redis_url: str,
) -> None:
    core = kube_client.CoreV1Api(kube_api_client)
    with run_watcher(stack, kube_namespace, redis_url) as running:
        wait_for(running.established, "the watch to open")

        core.create_namespaced_pod(kube_namespace, new_pod("with-id", "exec-42"))
        core.create_namespaced_pod(kube_namespace, new_pod("without-id", None))
        wait_for(has_snapshot(redis_url, "with-id", phase="Pending"), "Pending task")
        set_phase(core, kube_namespace, "with-id", "Running")
        wait_for(has_snapshot(redis_url, "with-id", phase="Running"), "Running task")
        core.delete_namespaced_pod("with-id", kube_namespace, grace_period_seconds=0)
        wait_for(has_snapshot(redis_url, "with-id", deleted=True), "deleted task")

        # A pod that stops matching the selector comes as DELETED too.
        core.create_namespaced_pod(kube_namespace, new_pod("relabeled"))
        wait_for(has_snapshot(redis_url, "relabeled"), "the task of relabeled")
        core.patch_namespaced_pod(
            "relabeled",
            kube_namespace,
            {"metadata": {"labels": {SELECTOR_LABEL: None}}},
        )
        wait_for(has_snapshot(redis_url, "relabeled", deleted=True), "relabeled gone")
        wait_for(
            lambda: (
                running.metric("changes_skipped_total", reason="no_execution_id") >= 1
            ),
            "the skip of the pod without execution id",
        )

    snapshots = snapshots_of(redis_url, "with-id")
    assert {s["execution_id"] for s in snapshots} == {"exec-42"}
    assert snapshots_of(redis_url, "without-id") == []
    checkpoint = stored_checkpoint(redis_url, kube_namespace)
    assert checkpoint is not None
    assert checkpoint["labelSelector"] == LABEL_SELECTOR
    assert int(checkpoint["resourceVersion"]) >= int(snapshots[-1]["resource_version"])


def test_watcher_restart_resumes_from_checkpoint(
    stack: StackConfig,
    kube_api_client: kube_client.ApiClient,
    kube_namespace: str,
    redis_url: str,
) -> None:
    core = kube_client.CoreV1Api(kube_api_client)
    with run_watcher(stack, kube_namespace, redis_url) as first:
        wait_for(first.established, "the first watch to open")
        core.create_namespaced_pod(kube_namespace, new_pod("a"))
        core.create_namespaced_pod(kube_namespace, new_pod("c"))
        wait_for(has_snapshot(redis_url, "a"), "the task of a")
        wait_for(has_snapshot(redis_url, "c"), "the task of c")
    checkpoint = stored_checkpoint(redis_url, kube_namespace)
    assert checkpoint is not None

    # Changes while no watcher runs.
    set_phase(core, kube_namespace, "a", "Running")
    core.create_namespaced_pod(kube_namespace, new_pod("b"))
    core.delete_namespaced_pod("c", kube_namespace, grace_period_seconds=0)

    with run_watcher(stack, kube_namespace, redis_url) as second:
        wait_for(has_snapshot(redis_url, "a", phase="Running"), "a Running")
        wait_for(has_snapshot(redis_url, "b"), "the task of b")
        wait_for(has_snapshot(redis_url, "c", deleted=True), "c deleted")
        assert second.metric("relists_total", cause="start") == 0
        assert second.metric("relists_total", cause="expired") == 0

    # Resuming replayed nothing from before the checkpoint.
    pending_a = [s for s in snapshots_of(redis_url, "a") if s["phase"] == "Pending"]
    assert len(pending_a) == 1


def test_watcher_relists_after_expired_checkpoint(
    stack: StackConfig,
    kube_api_client: kube_client.ApiClient,
    kube_namespace: str,
    redis_url: str,
) -> None:
    core = kube_client.CoreV1Api(kube_api_client)
    core.create_namespaced_pod(kube_namespace, new_pod("before"))
    connection = redis.Redis.from_url(redis_url)
    # Once etcd is compacted, resuming from resourceVersion 1 gets a 410.
    compact_etcd(stack)
    connection.set(
        f"{KEY_PREFIX}checkpoint:namespace:{kube_namespace}",
        orjson.dumps(
            {"resourceVersion": "1", "labelSelector": LABEL_SELECTOR, "savedAt": 0}
        ),
    )
    connection.close()

    with run_watcher(stack, kube_namespace, redis_url) as running:
        wait_for(has_snapshot(redis_url, "before"), "the relisted pod")
        wait_for(running.established, "the watch after the relist")
        core.create_namespaced_pod(kube_namespace, new_pod("after"))
        wait_for(has_snapshot(redis_url, "after"), "the pod created after the relist")

        assert running.metric("resource_version_expired_total", source="resume") == 1
        assert running.metric("relists_total", cause="expired") == 1
    checkpoint = stored_checkpoint(redis_url, kube_namespace)
    assert checkpoint is not None
    assert int(checkpoint["resourceVersion"]) > 1


class OwnRedis:
    """A redis-server of this test on loopback, which the test stops and starts.

    The append-only file with fsync on every write keeps the queue across
    a restart, as a production broker's persistence would.
    """

    def __init__(self, data_dir: Path, port: int) -> None:
        self.url = f"redis://127.0.0.1:{port}/0"
        self._command = [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            str(data_dir),
            "--maxmemory-policy",
            "noeviction",
        ]
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            self._command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(self._answers, f"redis-server at {self.url}", timeout=10)

    def _answers(self) -> bool:
        connection = redis.Redis.from_url(self.url, socket_timeout=0.5)
        try:
            return bool(connection.ping())
        except redis.RedisError:
            return False
        finally:
            connection.close()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path, OUTAGE_REDIS_PORT)
    server.start()
    yield server
    server.stop()


def test_watcher_loses_nothing_while_redis_down(
    stack: StackConfig,
    kube_api_client: kube_client.ApiClient,
    kube_namespace: str,
    own_redis: OwnRedis,
) -> None:
    core = kube_client.CoreV1Api(kube_api_client)
    redis_url = own_redis.url
    with run_watcher(stack, kube_namespace, redis_url) as running:
        wait_for(running.established, "the watch to open")
        core.create_namespaced_pod(kube_namespace, new_pod("a"))
        wait_for(has_snapshot(redis_url, "a"), "the task of a")

        own_redis.stop()
        core.create_namespaced_pod(kube_namespace, new_pod("b"))
        set_phase(core, kube_namespace, "a", "Running")
        core.create_namespaced_pod(kube_namespace, new_pod("c"))
        wait_for(
            lambda: running.metric("enqueue_failures_total") >= 2,
            "failed sends while Redis is down",
        )
        held_at = running.watcher.resource_version

        own_redis.start()
        wait_for(has_snapshot(redis_url, "b"), "the task of b after the outage")
        wait_for(has_snapshot(redis_url, "a", phase="Running"), "a Running")
        wait_for(has_snapshot(redis_url, "c"), "the task of c after the outage")
        wait_for(
            lambda: (
                (stored_checkpoint(redis_url, kube_namespace) or {}).get(
                    "resourceVersion"
                )
                == running.watcher.resource_version
            ),
            "the checkpoint to catch up",
        )

    # The stream was held at the change that failed to send.
    assert held_at is not None
    b_versions = [int(s["resource_version"]) for s in snapshots_of(redis_url, "b")]
    assert min(b_versions) > int(held_at)


def test_leader_election_one_holder(stack: StackConfig, kube_namespace: str) -> None:
    kube = KubeClient(load_api_client(str(stack.kubeconfig_path)), connect_timeout=5)
    clock = SystemClock()

    def elector(identity: str) -> LeaseElector:
        options = LeaseOptions(
            namespace=kube_namespace,
            name="watcher",
            identity=identity,
            lease_duration=15,
            renew_deadline=10,
            retry_period=1,
        )
        return LeaseElector(kube, options, clock)

    first, second = elector("first"), elector("second")

    assert first.try_acquire_or_renew() is True
    assert second.try_acquire_or_renew() is False
    assert first.try_acquire_or_renew() is True
    first.release()
    assert second.try_acquire_or_renew() is True
    assert first.try_acquire_or_renew() is False


def test_watcher_command_serves_probes(
    stack: StackConfig,
    kube_api_client: kube_client.ApiClient,
    kube_namespace: str,
    redis_url: str,
) -> None:
    core = kube_client.CoreV1Api(kube_api_client)
    process, port = start_command(stack, redis_url, ["--namespaces", kube_namespace])
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, "/readyz 200")
        assert httpx.get(f"{base}/livez").status_code == 200

        core.create_namespaced_pod(kube_namespace, new_pod("cli"))
        wait_for(has_snapshot(redis_url, "cli"), "the task of the pod")
        metrics = httpx.get(f"{base}/metrics").text
        assert "pod_monitor_watcher_tasks_enqueued_total" in metrics

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@contextlib.contextmanager
def extra_namespace(core: kube_client.CoreV1Api, name: str) -> Iterator[str]:
    """Create one more namespace for a test, and delete its pods and itself after."""
    core.create_namespace(
        kube_client.V1Namespace(metadata=kube_client.V1ObjectMeta(name=name))
    )
    try:
        yield name
    finally:
        core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
        core.delete_namespace(name)


@contextlib.contextmanager
def run_service(
    stack: StackConfig, redis_url: str, flags: list[str]
) -> Iterator[Service]:
    """Run the whole watcher service in a thread, configured by ``flags``."""
    config = load_config(
        [
            "--redis-url",
            redis_url,
            "--watch-timeout-min-seconds",
            "5",
            "--watch-timeout-max-seconds",
            "8",
            *flags,
        ]
    )
    app = create_app()
    app.conf.update(broker_url=redis_url)
    configure_sender(app)
    checkpoint_redis = redis_client(redis_url, timeout=2)
    service = Service(
        config,
        kube=KubeClient(load_api_client(str(stack.kubeconfig_path)), connect_timeout=5),
        celery_app=app,
        checkpoint_store=RedisCheckpointStore(checkpoint_redis, KEY_PREFIX),
        clock=SystemClock(),
    )
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(service.run()), daemon=True)
    thread.start()
    try:
        yield service
    finally:
        service.request_stop()
        thread.join(timeout=30)
        checkpoint_redis.close()
        app.close()
    assert codes == [0]


def test_service_watches_several_namespaces(
    stack: StackConfig,
    kube_api_client: kube_client.ApiClient,
    kube_namespace: str,
    redis_url: str,
) -> None:
    core = kube_client.CoreV1Api(kube_api_client)
    with (
        extra_namespace(core, f"{kube_namespace[:50]}-second") as second,
        run_service(
            stack, redis_url, ["--namespaces", f"{kube_namespace},{second}"]
        ) as service,
    ):
        assert [w.scope.namespace for w in service.watchers] == [kube_namespace, second]
        wait_for(lambda: service.health.readiness()[0], "both watches to be ready")
        core.create_namespaced_pod(kube_namespace, new_pod("in-first"))
        core.create_namespaced_pod(second, new_pod("in-second"))
        wait_for(has_snapshot(redis_url, "in-first"), "the pod of the first namespace")
        wait_for(
            has_snapshot(redis_url, "in-second"), "the pod of the second namespace"
        )

    assert stored_checkpoint(redis_url, kube_namespace) is not None
    assert stored_checkpoint(redis_url, second) is not None


def test_service_watches_all_namespaces(
    stack: StackConfig,
    kube_api_client: kube_client.ApiClient,
    kube_namespace: str,
    redis_url: str,
) -> None:
    core = kube_client.CoreV1Api(kube_api_client)
    # A selector of this test only, so that pods of other tests stay out.
    run_label = f"run-{uuid.uuid4().hex[:8]}"
    selector = f"{LABEL_SELECTOR},pod-monitor.io/test-run={run_label}"
    with run_service(stack, redis_url, ["--label-selector", selector]) as service:
        assert [w.scope.namespace for w in service.watchers] == [None]
        wait_for(lambda: service.health.readiness()[0], "the cluster-wide watch")
        matching = new_pod("matching")
        assert matching.metadata is not None
        assert matching.metadata.labels is not None
        matching.metadata.labels["pod-monitor.io/test-run"] = run_label
        core.create_namespaced_pod(kube_namespace, matching)
        core.create_namespaced_pod(kube_namespace, new_pod("not-matching"))
        wait_for(has_snapshot(redis_url, "matching"), "the selected pod")

    assert snapshots_of(redis_url, "not-matching") == []
    connection = redis.Redis.from_url(redis_url)
    assert connection.exists(f"{KEY_PREFIX}checkpoint:all-namespaces") == 1
    connection.close()


def start_command(
    stack: StackConfig, redis_url: str, flags: list[str]
) -> tuple[subprocess.Popen[str], int]:
    """Start ``python -m watcher`` and return it with the port of its health server."""
    environment = {**os.environ, "KUBECONFIG": str(stack.kubeconfig_path)}
    command = [
        sys.executable,
        "-m",
        "watcher",
        "--redis-url",
        redis_url,
        "--health-host",
        "127.0.0.1",
        "--health-port",
        "0",
        "--log-format",
        "text",
        "--watch-timeout-min-seconds",
        "5",
        "--watch-timeout-max-seconds",
        "8",
        *flags,
    ]
    process = subprocess.Popen(
        command, env=environment, stderr=subprocess.PIPE, text=True
    )
    log_lines: queue.Queue[str] = queue.Queue()

    def collect_log() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log_lines.put(line)

    threading.Thread(target=collect_log, daemon=True).start()
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            found = re.search(
                r'"health server started" port=(\d+)', log_lines.get(timeout=1)
            )
            if found:
                return process, int(found.group(1))
    process.kill()
    pytest.fail("the watcher logged no health server port")


def leader_gauge(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    found = re.search(r"^pod_monitor_watcher_leader (\S+)$", text, re.MULTILINE)
    assert found is not None
    return float(found.group(1))


def test_leader_election_fails_over(
    stack: StackConfig,
    kube_api_client: kube_client.ApiClient,
    kube_namespace: str,
    redis_url: str,
) -> None:
    core = kube_client.CoreV1Api(kube_api_client)
    flags = [
        "--namespaces",
        kube_namespace,
        "--leader-election",
        "--lease-namespace",
        kube_namespace,
        "--lease-retry-period-seconds",
        "0.5",
    ]
    first, first_port = start_command(
        stack, redis_url, [*flags, "--lease-identity", "first"]
    )
    second: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: leader_gauge(first_port) == 1, "the first to lead")
        second, second_port = start_command(
            stack, redis_url, [*flags, "--lease-identity", "second"]
        )
        time.sleep(2)
        assert leader_gauge(second_port) == 0
        standby = httpx.get(f"http://127.0.0.1:{second_port}/readyz")
        assert standby.status_code == 200
        assert standby.json()["standby"] is True

        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=20) == 0
        # The first released the Lease, so the second leads at once.
        wait_for(lambda: leader_gauge(second_port) == 1, "the second to lead", 10)
        core.create_namespaced_pod(kube_namespace, new_pod("after-failover"))
        wait_for(has_snapshot(redis_url, "after-failover"), "the task from the second")

        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=20) == 0
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


class FreezingProxy:
    """A TCP proxy on loopback that can stop forwarding, as a dropped link does.

    While frozen it accepts connections and reads nothing, so no byte moves
    in either direction and no connection is closed.
    """

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.frozen = threading.Event()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream_port))
            for source, target in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(
                    target=self._pump, args=(source, target), daemon=True
                ).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        source.settimeout(0.1)
        with contextlib.suppress(OSError):
            while not self._closed.is_set():
                try:
                    data = source.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                # Bytes read just before a freeze wait for the thaw too.
                while self.frozen.is_set() and not self._closed.is_set():
                    time.sleep(0.05)
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()


def test_watcher_detects_stalled_stream(
    stack: StackConfig,
    kube_api_client: kube_client.ApiClient,
    kube_namespace: str,
    redis_url: str,
) -> None:
    core = kube_client.CoreV1Api(kube_api_client)
    api_port = int(str(kube_api_client.configuration.host).rsplit(":", 1)[1])
    proxy = FreezingProxy(api_port)
    # The frozen proxy also holds back the server's close at its 3 s
    # timeout, so only the client read timeout (2 s later) ends the watch.
    options = WatchOptions(
        timeout_min_seconds=3, timeout_max_seconds=3, read_timeout_margin_seconds=2
    )
    try:
        with run_watcher(
            stack,
            kube_namespace,
            redis_url,
            api_host=f"https://127.0.0.1:{proxy.port}",
            options=options,
        ) as running:
            wait_for(running.established, "the watch through the proxy")

            proxy.frozen.set()
            core.create_namespaced_pod(kube_namespace, new_pod("during-stall"))
            wait_for(
                lambda: running.metric("reconnects_total", cause="stalled") >= 1,
                "the read timeout to end the stalled watch",
            )
            assert snapshots_of(redis_url, "during-stall") == []

            proxy.frozen.clear()
            wait_for(
                has_snapshot(redis_url, "during-stall"), "the change after the stall"
            )
    finally:
        proxy.close()
