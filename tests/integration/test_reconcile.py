"""Reconciliation through a real prefork worker, with the watcher stopped.

Each test first runs a baseline reconciliation, which repairs whatever
earlier tests of the module left behind, so the summary of the run under
test counts only what the test set up. Runs are sent by task name through
a Celery client of the module's own Redis database, as Beat, the CLI and
Flower send them.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from celery.result import AsyncResult
from kubernetes import client as kube_client
from kubernetes import config as kube_config

from local_stack.executions import execution_pod
from local_stack.kubelet.script import ANNOTATION, Script, Step
from tasks import handling
from tasks.publishing import Publisher
from tasks.reconciling import LOCK_KEY, Reconciler
from tasks.settings import KafkaSettings, LogSettings, PodSelection, Policy
from tasks.state import StateStore
from tests.integration.monitor import VENV_BIN, Monitor, Process, Record, event_types
from tests.integration.test_executions import _wait_for_phase

RECONCILE_TASK = "pod_monitor.reconcile"
RAN = ["execution.scheduled", "execution.running"]
#: Seconds a pod may wait on ErrImagePull before it fails; set by
#: ``monitor_env`` through POD_MONITOR_PENDING_GRACE_SECONDS.
PENDING_GRACE_SECONDS = 5.0
#: Seconds one reconciliation may take on this module's few pods.
RUN_TIMEOUT = 120.0


def new_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:10]}"


def reconcile(monitor: Monitor, trigger: str) -> dict[str, Any]:
    """Send one reconciliation by name and return its summary."""
    result = monitor.celery_client().send_task(
        RECONCILE_TASK, kwargs={"trigger": trigger}
    )
    summary: dict[str, Any] = result.get(timeout=RUN_TIMEOUT)
    return summary


def ensure_running(monitor: Monitor, name: str) -> Process:
    """Start the module's worker or watcher unless it already runs."""
    process = monitor.processes.get(name)
    if process is not None and process.running:
        return process
    if name == "worker":
        return monitor.worker()
    return monitor.watcher()


def stop(monitor: Monitor, name: str) -> None:
    process = monitor.processes.get(name)
    if process is not None:
        process.stop()


def scripted_execution(execution_id: str, script: Script) -> dict[str, Any]:
    """Return an execution pod whose status the kubelet stand-in plays."""
    manifest = execution_pod(execution_id, "pass")
    manifest["metadata"]["annotations"] = {ANNOTATION: script.to_json()}
    return manifest


def wait_for_emitted(
    monitor: Monitor, execution_id: str, event_type: str, timeout: float = 60.0
) -> None:
    """Wait until the state records ``event_type`` for the execution."""
    client = redis.Redis.from_url(monitor.redis_url)
    key = f"pod-monitor:execution:{execution_id}"
    deadline = time.monotonic() + timeout
    try:
        while not client.hexists(key, f"emitted:{event_type}"):
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the state has no {event_type} for {execution_id} after "
                    f"{timeout:g} s\n{monitor.diagnostics()}"
                )
            time.sleep(0.2)
    finally:
        client.close()


def wait_until_gone(monitor: Monitor, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            monitor.core.read_namespaced_pod(name, monitor.namespace)
        except kube_client.ApiException as error:
            if error.status == 404:
                return
            raise
        time.sleep(0.2)
    pytest.fail(f"pod {name} still exists after {timeout:g} s")


def records_by_execution(monitor: Monitor) -> dict[str, list[Record]]:
    grouped: dict[str, list[Record]] = defaultdict(list)
    for record in monitor.read_all(idle=3.0):
        grouped[record.key].append(record)
    return grouped


def event_ids(records: list[Record]) -> list[str]:
    return [record.event["event_id"] for record in records]


@pytest.fixture
def unwatched(monitor_env: Monitor) -> Monitor:
    """The module's monitor with a worker running and no watcher, after a
    baseline reconciliation."""
    ensure_running(monitor_env, "worker")
    stop(monitor_env, "watcher")
    reconcile(monitor_env, "baseline")
    return monitor_env


def test_reconcile_emits_missing_events_once(unwatched: Monitor) -> None:
    monitor = unwatched

    # The watcher reports this pod's start, so the state tracks it as running.
    vanish_id = new_id("vanish")
    watcher = ensure_running(monitor, "watcher")
    vanish_pod = monitor.create_pod(
        scripted_execution(vanish_id, Script([Step.running(delay=0.1)]))
    )
    wait_for_emitted(monitor, vanish_id, "execution.running")
    watcher.stop()

    # Nothing watches these two pods from start to end.
    finish_id, fail_id = new_id("finish"), new_id("fail")
    finish_pod = monitor.submit(finish_id, "print('finished unwatched')")
    fail_pod = monitor.submit(fail_id, "import sys; print('bye'); sys.exit(3)")
    _wait_for_phase(monitor, finish_pod, {"Succeeded"})
    _wait_for_phase(monitor, fail_pod, {"Failed"})
    monitor.core.delete_namespaced_pod(
        vanish_pod, monitor.namespace, grace_period_seconds=0
    )
    wait_until_gone(monitor, vanish_pod)

    summary = reconcile(monitor, "test")
    records = records_by_execution(monitor)

    assert summary["status"] == "completed"
    assert summary["trigger"] == "test"
    assert summary["executions_repaired"] == 3
    assert summary["vanished"] == 1
    assert summary["errors"] == 0
    assert summary["events_emitted"] == {
        "execution.scheduled": 2,
        "execution.running": 2,
        "execution.completed": 1,
        "execution.failed": 2,
    }
    assert event_types(records[finish_id]) == [*RAN, "execution.completed"]
    assert event_types(records[fail_id]) == [*RAN, "execution.failed"]
    assert event_types(records[vanish_id]) == [*RAN, "execution.failed"]
    for execution_id in (finish_id, fail_id, vanish_id):
        ids = event_ids(records[execution_id])
        assert len(set(ids)) == len(ids), execution_id
    assert records[fail_id][-1].event["exit_code"] == 3
    assert records[fail_id][-1].event["stdout"]["data"] == "bye\n"
    assert records[vanish_id][-1].event["reason"] == "pod_disappeared"

    again = reconcile(monitor, "again")
    records_after = records_by_execution(monitor)

    assert again["status"] == "completed"
    assert again["events_emitted"] == {}
    assert again["executions_repaired"] == 0
    assert again["vanished"] == 0
    assert sum(map(len, records_after.values())) == sum(map(len, records.values()))


def test_reconcile_fails_pod_stuck_on_image_pull(unwatched: Monitor) -> None:
    monitor = unwatched
    execution_id = new_id("stuck")
    message = 'failed to pull image "registry.invalid/none:1": not found'
    script = Script([Step.waiting("ErrImagePull", message, delay=0.1)])
    created = time.monotonic()
    monitor.create_pod(scripted_execution(execution_id, script))

    # Inside the grace period the pod may still recover: nothing fails.
    early = reconcile(monitor, "early")
    time.sleep(max(0.0, created + PENDING_GRACE_SECONDS + 1.0 - time.monotonic()))
    late = reconcile(monitor, "late")
    records = records_by_execution(monitor)[execution_id]

    assert early["stuck"] == 0
    assert early["events_emitted"].get("execution.failed", 0) == 0
    assert late["stuck"] == 1
    assert late["events_emitted"]["execution.failed"] == 1
    assert event_types(records) == ["execution.scheduled", "execution.failed"]
    assert records[-1].event["reason"] == "image_pull_failed"
    assert "ErrImagePull" in records[-1].event["message"]


#: Executions that the watcher's tasks and reconciliations handle at once.
RACING_EXECUTIONS = 40


def any_emitted(monitor: Monitor, execution_ids: list[str]) -> bool:
    client = redis.Redis.from_url(monitor.redis_url)
    try:
        return any(client.exists(f"pod-monitor:execution:{i}") for i in execution_ids)
    finally:
        client.close()


def test_reconcile_racing_watcher_emits_no_duplicates(unwatched: Monitor) -> None:
    monitor = unwatched
    # A second worker, so that reconciliations and pod changes run side by
    # side on more processes than one worker has.
    extra = monitor.worker(name="race-worker", concurrency=4)
    try:
        submitted = [new_id("race") for _ in range(RACING_EXECUTIONS)]
        pods = [monitor.submit(i, f"print({i!r})") for i in submitted]
        for pod in pods:
            _wait_for_phase(monitor, pod, {"Succeeded"})

        # Every execution misses all its events. The watcher's first list
        # enqueues a task for each pod. Once the first of them has emitted,
        # reconciliations start on the same executions, in the same order.
        ensure_running(monitor, "watcher")
        deadline = time.monotonic() + 60
        while not any_emitted(monitor, submitted) and time.monotonic() < deadline:
            time.sleep(0.05)
        client = monitor.celery_client()
        runs = []
        for number in range(3):
            runs.append(
                client.send_task(RECONCILE_TASK, kwargs={"trigger": f"race-{number}"})
            )
            time.sleep(0.2)
        summaries = [run.get(timeout=RUN_TIMEOUT) for run in runs]
        records = monitor.wait_for_terminal(submitted)
    finally:
        extra.stop()
        stop(monitor, "watcher")

    for execution_id in submitted:
        ids = event_ids(records[execution_id])
        assert event_types(records[execution_id]) == [*RAN, "execution.completed"]
        assert len(set(ids)) == 3, execution_id
    assert all(summary["errors"] == 0 for summary in summaries)

    final = reconcile(monitor, "after-race")
    assert final["events_emitted"] == {}


def test_concurrent_reconciliations_one_skipped(unwatched: Monitor) -> None:
    monitor = unwatched
    execution_id = new_id("held")
    pod = monitor.create_pod(
        scripted_execution(execution_id, Script([Step.running(delay=0.1)]))
    )
    _wait_for_phase(monitor, pod, {"Running"})

    # Holding this execution's lock, as a pod-change task would, keeps the
    # run that reaches it waiting about 5 s, long enough to overlap.
    client = redis.Redis.from_url(monitor.redis_url)
    lock = client.lock(f"pod-monitor:lock:execution:{execution_id}", timeout=60)
    assert lock.acquire(blocking=False)
    try:
        celery = monitor.celery_client()
        first = celery.send_task(RECONCILE_TASK, kwargs={"trigger": "first"})
        second = celery.send_task(RECONCILE_TASK, kwargs={"trigger": "second"})
        summaries = [first.get(timeout=RUN_TIMEOUT), second.get(timeout=RUN_TIMEOUT)]
    finally:
        lock.release()
        client.close()

    statuses = sorted(summary["status"] for summary in summaries)
    assert statuses == ["completed", "skipped"]
    ran = next(s for s in summaries if s["status"] == "completed")
    skipped = next(s for s in summaries if s["status"] == "skipped")
    assert skipped["reason"].startswith("another reconciliation is running: ")
    assert f"{ran['trigger']} run {ran['run_id']}" in skipped["reason"]
    assert skipped["duration_seconds"] < 1.0
    assert skipped["pods_seen"] == 0
    assert ran["errors"] == 1

    # With the lock released, the next run repairs the held execution.
    after = reconcile(monitor, "after-hold")
    assert after["events_emitted"] == {
        "execution.scheduled": 1,
        "execution.running": 1,
    }


def run_cli(
    monitor: Monitor, *arguments: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "pod-monitor"), "reconcile", *arguments],
        env={**monitor.env, **env},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT + 30,
        check=False,
    )


def test_cli_reconcile_wait_prints_summary(unwatched: Monitor) -> None:
    completed = run_cli(unwatched, "--wait", "--timeout", "60")

    assert completed.returncode == 0, completed.stderr
    first_line, _, rest = completed.stdout.partition("\n")
    assert first_line.startswith("sent reconciliation ")
    task_id = first_line.removeprefix("sent reconciliation ")
    summary = json.loads(rest)
    assert summary["status"] == "completed"
    assert summary["trigger"] == "cli"
    assert summary["run_id"] == task_id


def test_cli_reconcile_expires_while_no_worker(unwatched: Monitor) -> None:
    monitor = unwatched
    stop(monitor, "worker")
    try:
        # An interval of 2 s gives the run an expiry of 1.6 s.
        completed = run_cli(monitor, POD_MONITOR_RECONCILE_INTERVAL_SECONDS="2")
        assert completed.returncode == 0, completed.stderr
        task_id = completed.stdout.strip().removeprefix("sent reconciliation ")
        time.sleep(3.0)
    finally:
        ensure_running(monitor, "worker")

    result: AsyncResult[Any] = AsyncResult(task_id, app=monitor.celery_client())
    result.get(timeout=RUN_TIMEOUT, propagate=False)

    # celery-types lists no REVOKED among the states, hence the str().
    assert str(result.state) == "REVOKED"


@pytest.fixture
def reconciler_parts(unwatched: Monitor) -> Iterator[handling.Context]:
    """Clients of the module's stack for a reconciler run in this process."""
    api_client = kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=unwatched.env["KUBECONFIG"]
    )
    kafka = KafkaSettings(
        bootstrap_servers=unwatched.bootstrap_servers, topic=unwatched.topic
    )
    publisher = Publisher(kafka)
    store_client = redis.Redis.from_url(unwatched.redis_url)
    yield handling.Context(
        store=StateStore(store_client, retention_seconds=86400, lock_seconds=60),
        publisher=publisher,
        core_v1=kube_client.CoreV1Api(api_client),
        policy=Policy(pending_grace_seconds=PENDING_GRACE_SECONDS),
        kafka=kafka,
        logs=LogSettings(),
    )
    publisher.close()
    store_client.close()
    api_client.close()


def held_execution(monitor: Monitor, client: redis.Redis) -> Any:
    """Create a running pod that calls for events and hold its execution lock.

    A run that reaches it waits 5 s for the lock, as behind a pod-change
    task, and then counts an error. Returns the held lock.
    """
    execution_id = new_id("held")
    pod = monitor.create_pod(
        scripted_execution(execution_id, Script([Step.running(delay=0.1)]))
    )
    _wait_for_phase(monitor, pod, {"Running"})
    lock = client.lock(f"pod-monitor:lock:execution:{execution_id}", timeout=60)
    assert lock.acquire(blocking=False)
    return lock


def test_reconcile_stops_at_time_limit(
    unwatched: Monitor, reconciler_parts: handling.Context
) -> None:
    client = redis.Redis.from_url(unwatched.redis_url)
    held = [held_execution(unwatched, client) for _ in range(2)]
    reconciler = Reconciler(
        reconciler_parts,
        client,
        PodSelection(namespaces=[unwatched.namespace]),
        retention=timedelta(days=7),
        lock_seconds=60,
        time_limit_seconds=1,
    )
    try:
        summary = reconciler.run(trigger="time-limit")
        lock_after = client.get(LOCK_KEY)
    finally:
        for lock in held:
            lock.release()

    assert summary.status == "incomplete"
    assert summary.reason is not None
    assert "time limit of 1 s" in summary.reason
    assert summary.errors == 1
    assert lock_after is None
    assert reconcile(unwatched, "after-time-limit")["status"] == "completed"
    client.close()


def test_reconcile_aborts_when_lock_taken_over(
    unwatched: Monitor, reconciler_parts: handling.Context
) -> None:
    client = redis.Redis.from_url(unwatched.redis_url)
    held = held_execution(unwatched, client)
    # The run renews its lock every 0.2 s but waits 5 s on the held
    # execution, so the lock expires meanwhile and another run takes it.
    reconciler = Reconciler(
        reconciler_parts,
        client,
        PodSelection(namespaces=[unwatched.namespace]),
        retention=timedelta(days=7),
        lock_seconds=0.6,
    )
    takeover = threading.Timer(
        1.5, lambda: client.set(LOCK_KEY, "other run", px=30_000)
    )
    takeover.start()
    try:
        summary = reconciler.run(trigger="lock-lost")
        owner = client.get(LOCK_KEY)
    finally:
        takeover.cancel()
        held.release()
        client.delete(LOCK_KEY)

    assert summary.status == "aborted"
    assert summary.reason is not None
    assert "lock expired" in summary.reason
    # Releasing at the end must leave the other run's lock alone.
    assert owner == b"other run"
    client.close()
