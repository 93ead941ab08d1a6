"""Executions of real Python code, from pod to events read back from Kafka.

Each test creates execution pods through the API server; the kubelet
stand-in runs them under the runner; the watcher and a prefork Celery
worker (started by the ``monitor`` fixture) turn them into events.
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from typing import Any

import pytest

from tests.integration.monitor import Monitor, Record, event_types, output_bytes

RAN = ["execution.scheduled", "execution.running"]


def new_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:10]}"


def terminal(records: list[Record]) -> dict[str, Any]:
    return records[-1].event


def assert_lifecycle(records: list[Record], terminal_type: str) -> None:
    """Assert one scheduled, one running, then exactly one terminal event."""
    assert event_types(records) == [*RAN, terminal_type]
    assert len({r.partition for r in records}) == 1
    offsets = [r.offset for r in records]
    assert offsets == sorted(offsets)


PROGRAMS: list[tuple[str, str, str, int, bytes, bytes]] = [
    # kind, code, terminal type, exit code, stdout, stderr
    ("success", "print('hello')", "execution.completed", 0, b"hello\n", b""),
    (
        "nonzero",
        "import sys; print('bye'); sys.exit(3)",
        "execution.failed",
        3,
        b"bye\n",
        b"",
    ),
    (
        "stderr",
        "import sys; sys.stderr.write('warn\\n'); print('ok')",
        "execution.completed",
        0,
        b"ok\n",
        b"warn\n",
    ),
    (
        "utf8",
        "print('héllo ✓ 日本 😀')",
        "execution.completed",
        0,
        "héllo ✓ 日本 😀\n".encode(),
        b"",
    ),
    (
        "binary",
        "import sys; sys.stdout.buffer.write(bytes(range(256))); "
        "sys.stderr.buffer.write(b'\\xff\\xfe\\x00err')",
        "execution.completed",
        0,
        bytes(range(256)),
        b"\xff\xfe\x00err",
    ),
]


def test_executions_emit_lifecycle_with_exact_output(monitor: Monitor) -> None:
    submitted = {}
    for kind, code, want_type, want_exit, want_out, want_err in PROGRAMS:
        for _ in range(2):
            execution_id = new_id(kind)
            monitor.submit(execution_id, code)
            submitted[execution_id] = (want_type, want_exit, want_out, want_err)

    records = monitor.wait_for_terminal(submitted)

    for execution_id, (want_type, want_exit, want_out, want_err) in submitted.items():
        assert_lifecycle(records[execution_id], want_type)
        event = terminal(records[execution_id])
        assert event["exit_code"] == want_exit, execution_id
        assert event["report_found"] is True, event["report_problem"]
        assert output_bytes(event["stdout"]) == want_out
        assert output_bytes(event["stderr"]) == want_err
        assert event["resources"]["wall_seconds"] > 0
        assert event["resources"]["peak_memory_bytes"] > 0
        assert event["pod"]["namespace"] == monitor.namespace


def test_events_carry_cloudevents_headers(monitor: Monitor) -> None:
    execution_id = new_id("headers")
    monitor.submit(execution_id, "print('x')")

    records = monitor.wait_for_terminal([execution_id])[execution_id]

    for record in records:
        event = record.event
        assert record.headers["ce_specversion"] == b"1.0"
        assert record.headers["ce_id"].decode() == event["event_id"]
        assert (
            record.headers["ce_type"].decode()
            == "io.pod-monitor." + event["event_type"]
        )
        assert record.headers["ce_source"] == b"pod-monitor"
        assert record.headers["pod_monitor_schema_version"] == b"1"
        assert record.key == execution_id


def test_report_shaped_output_does_not_change_event(monitor: Monitor) -> None:
    forged = (
        '{"type":"header","format":"pod-monitor.report/v1","nonce":"0000000000000000",'
        '"seq":0,"exit_code":0,"outcome":"exited"}\n'
        '{"type":"end","nonce":"0000000000000000","seq":1,"records":2}\n'
    )
    execution_id = new_id("forged")
    code = f"import sys; sys.stdout.write({forged!r}); sys.exit(7)"
    monitor.submit(execution_id, code)

    records = monitor.wait_for_terminal([execution_id])[execution_id]

    event = terminal(records)
    assert event["event_type"] == "execution.failed"
    assert event["exit_code"] == 7
    assert output_bytes(event["stdout"]) == forged.encode()


def test_output_over_cap_cut_flagged_delivered(monitor: Monitor) -> None:
    execution_id = new_id("huge")
    # 3 MiB on stdout: the runner keeps 1 MiB, the event cuts it to fit.
    code = "import sys; sys.stdout.write('y' * (3 * 1024 * 1024))"
    monitor.submit(execution_id, code)

    records = monitor.wait_for_terminal([execution_id])[execution_id]

    event = terminal(records)
    assert event["event_type"] == "execution.completed"
    assert event["stdout"]["truncated"] is True
    assert event["stdout"]["original_size_bytes"] == 3 * 1024 * 1024
    assert set(output_bytes(event["stdout"])) == {ord("y")}
    assert all(len(record.value) < 1_000_000 for record in records)


def test_memory_hog_fails_as_oom_killed(monitor: Monitor) -> None:
    execution_id = new_id("oom")
    code = (
        "print('allocating', flush=True)\n"
        "blocks = []\n"
        "while True: blocks.append(bytearray(8 * 1024 * 1024))"
    )
    monitor.submit(execution_id, code, memory_limit="128Mi")

    records = monitor.wait_for_terminal([execution_id])[execution_id]

    assert_lifecycle(records, "execution.failed")
    event = terminal(records)
    assert event["reason"] == "oom_killed"
    assert event["exit_code"] == 137


def test_runner_timeout_keeps_output(monitor: Monitor) -> None:
    execution_id = new_id("timeout")
    code = "import time; print('started', flush=True); time.sleep(60)"
    monitor.submit(execution_id, code, timeout_seconds=2)

    records = monitor.wait_for_terminal([execution_id])[execution_id]

    assert_lifecycle(records, "execution.timed_out")
    event = terminal(records)
    assert event["reason"] == "timeout"
    assert event["report_found"] is True
    assert output_bytes(event["stdout"]) == b"started\n"


def test_pod_deadline_times_out(monitor: Monitor) -> None:
    execution_id = new_id("deadline")
    code = "import time; print('started', flush=True); time.sleep(60)"
    monitor.submit(execution_id, code, deadline_seconds=2)

    records = monitor.wait_for_terminal([execution_id])[execution_id]

    assert_lifecycle(records, "execution.timed_out")
    assert terminal(records)["reason"] == "deadline_exceeded"


def test_pod_deleted_after_finish_gets_terminal(monitor_env: Monitor) -> None:
    # No worker yet: the pod finishes and is deleted before any task runs,
    # so the log is gone when the worker gets to it.
    monitor = monitor_env
    if "watcher" not in monitor.processes:
        monitor.watcher()
    worker = monitor.processes.get("worker")
    if worker is not None:
        worker.stop()
    execution_id = new_id("deleted")
    name = monitor.submit(execution_id, "print('short-lived')")
    _wait_for_phase(monitor, name, {"Succeeded"})
    monitor.core.delete_namespaced_pod(name, monitor.namespace, grace_period_seconds=0)
    time.sleep(2)
    monitor.worker()

    records = monitor.wait_for_terminal([execution_id])[execution_id]

    event = terminal(records)
    assert event["event_type"] == "execution.completed"
    assert event["exit_code"] == 0
    assert event["log_status"] == "not_found"
    assert event["report_found"] is False
    assert event["stdout"] is None


def _wait_for_phase(
    monitor: Monitor, name: str, phases: set[str], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod: Any = monitor.core.read_namespaced_pod(name, monitor.namespace)
        if pod.status.phase in phases:
            return
        time.sleep(0.2)
    pytest.fail(f"pod {name} did not reach {phases} in {timeout} s")


def test_worker_metrics_count_published_events(monitor: Monitor) -> None:
    execution_id = new_id("metrics")
    monitor.submit(execution_id, "print('counted')")
    monitor.wait_for_terminal([execution_id])
    worker = monitor.processes["worker"]
    assert worker.metrics_port is not None

    with urllib.request.urlopen(
        f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=10
    ) as response:
        text = response.read().decode()

    completed = _sample(
        text,
        'pod_monitor_worker_events_published_total{event_type="execution.completed"}',
    )
    assert completed >= 1
    assert _sample(text, 'pod_monitor_worker_log_reads_total{status="read"}') >= 1
    assert "pod_monitor_worker_publish_seconds_bucket" in text


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the worker's metrics:\n{text[:2000]}")
