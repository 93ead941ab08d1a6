"""Celery Beat with celery-redbeat sending the reconciliation on schedule.

Beat runs as ``celery -A tasks.app beat`` with the module's Redis database
and a short interval; a real prefork worker runs what it sends. A run is
seen through its summary in the result backend: ``trigger`` is ``beat``
for runs Beat sent, and ``started_at`` is when the worker began it, a few
milliseconds after Beat sent it.
"""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime

import pytest
import redis

from tests.integration.monitor import Monitor, Process

RECONCILE_TASK = "pod_monitor.reconcile"
#: Seconds between two runs. Beat starts in about a second here, so a
#: restart fits well inside one interval.
INTERVAL = 5.0
#: Seconds the redbeat lock of a killed Beat lives on.
BEAT_LOCK_SECONDS = 6.0
#: Beat's loop interval under these settings: min(5, INTERVAL / 4,
#: BEAT_LOCK_SECONDS / 3), as tasks/app.py derives it.
LOOP_SECONDS = min(5.0, INTERVAL / 4, BEAT_LOCK_SECONDS / 3)
#: Minimum gap between two runs that is not a doubled run.
MIN_GAP = INTERVAL * 0.8
#: Maximum gap between two runs that skipped nothing. A run is sent at most
#: one loop late, and the worker needs a moment to start it.
MAX_GAP = INTERVAL + LOOP_SECONDS + 0.5
#: Seconds to wait for the runs a test expects.
RUNS_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def beat_monitor(monitor_env: Monitor) -> Monitor:
    """The module's monitor with a short interval and a warm worker running.

    The worker has one process, warmed up by one run, because a process
    builds its clients on its first run, and that delay would shift the
    first run's start time and make its gap to the next one look short.
    """
    monitor_env.env.update(
        {
            "POD_MONITOR_RECONCILE_INTERVAL_SECONDS": f"{INTERVAL:g}",
            "POD_MONITOR_BEAT_LOCK_SECONDS": f"{BEAT_LOCK_SECONDS:g}",
        }
    )
    monitor_env.worker(concurrency=1)
    warm_up = monitor_env.celery_client().send_task(
        RECONCILE_TASK, kwargs={"trigger": "warm-up"}
    )
    warm_up.get(timeout=RUNS_TIMEOUT)
    return monitor_env


def beat_runs(monitor: Monitor, since: datetime) -> list[datetime]:
    """Return the start times of the runs Beat sent since ``since``, in order."""
    client = redis.Redis.from_url(monitor.redis_url)
    times = []
    try:
        for key in client.scan_iter("celery-task-meta-*", count=1000):
            raw = client.get(key)
            if raw is None:
                continue
            meta = json.loads(raw)
            # A run that has started but not finished has no summary yet.
            if meta.get("name") != RECONCILE_TASK or meta["status"] != "SUCCESS":
                continue
            result = meta["result"]
            started = datetime.fromisoformat(result["started_at"])
            if result["trigger"] == "beat" and started >= since:
                times.append(started)
    finally:
        client.close()
    return sorted(times)


def wait_for_runs(monitor: Monitor, since: datetime, count: int) -> list[datetime]:
    """Wait until Beat has sent ``count`` runs since ``since``; return them."""
    deadline = time.monotonic() + RUNS_TIMEOUT
    runs = beat_runs(monitor, since)
    while len(runs) < count:
        if time.monotonic() > deadline:
            pytest.fail(
                f"{len(runs)} of {count} runs after {RUNS_TIMEOUT:g} s: {runs}\n"
                + monitor.diagnostics()
            )
        time.sleep(0.2)
        runs = beat_runs(monitor, since)
    return runs


def gaps(runs: list[datetime]) -> list[float]:
    return [
        (later - earlier).total_seconds() for earlier, later in itertools.pairwise(runs)
    ]


def wait_for_log(process: Process, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in process.log_path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            pytest.fail(f"{process.name} did not log {text!r}\n{process.log_tail()}")
        time.sleep(0.1)


def test_beat_sends_reconciliation_each_interval(beat_monitor: Monitor) -> None:
    since = datetime.now(UTC)
    beat = beat_monitor.beat()
    try:
        runs = wait_for_runs(beat_monitor, since, 4)
    finally:
        beat.stop()

    first_gap = (runs[0] - since).total_seconds()
    assert len(runs) == 4
    # A new schedule entry counts from Beat's start, not from a run at once.
    assert MIN_GAP <= first_gap <= MAX_GAP + 2.0
    assert all(MIN_GAP <= gap <= MAX_GAP for gap in gaps(runs)), gaps(runs)


def test_restarted_beat_neither_skips_nor_doubles(beat_monitor: Monitor) -> None:
    since = datetime.now(UTC)
    beat = beat_monitor.beat()
    last = wait_for_runs(beat_monitor, since, 1)[-1]
    beat.stop()
    # Beat released its lock on SIGTERM; the replacement starts well
    # inside the interval, so the next run is due after it is up.
    time.sleep(1.5)
    restarted = beat_monitor.beat()
    try:
        runs = wait_for_runs(beat_monitor, last, 3)
    finally:
        restarted.stop()

    assert runs[0] == last
    # Sooner means the new Beat ran at once (a double); later means it lost
    # the last run time and started the interval over (a skip).
    assert MIN_GAP <= gaps(runs)[0] <= MAX_GAP
    assert MIN_GAP <= gaps(runs)[1] <= MAX_GAP


def test_killed_beat_replaced_after_lock_expires(beat_monitor: Monitor) -> None:
    since = datetime.now(UTC)
    beat = beat_monitor.beat()
    last = wait_for_runs(beat_monitor, since, 1)[-1]
    beat.kill()
    restarted = beat_monitor.beat()
    try:
        runs = wait_for_runs(beat_monitor, last, 3)
    finally:
        restarted.stop()

    # The killed Beat's lock lives up to BEAT_LOCK_SECONDS after its last
    # renewal. The runs missed meanwhile become one run, sent as soon as the
    # new Beat has the lock, and the schedule goes on from there.
    assert MIN_GAP <= gaps(runs)[0] <= BEAT_LOCK_SECONDS + 2 * LOOP_SECONDS + 1.0
    assert MIN_GAP <= gaps(runs)[1] <= MAX_GAP


def test_second_beat_does_not_double_schedule(beat_monitor: Monitor) -> None:
    since = datetime.now(UTC)
    first = beat_monitor.beat(name="beat-a")
    second = beat_monitor.beat(name="beat-b")
    try:
        runs = wait_for_runs(beat_monitor, since, 4)
        both = [first, second]
        holders = [
            beat for beat in both if "beat: Acquired lock" in beat.log_path.read_text()
        ]
        assert len(holders) == 1, [beat.log_tail() for beat in both]
        holder = holders[0]
        standby = second if holder is first else first

        # The standby takes over the schedule as soon as the holder lets go.
        last = runs[-1]
        holder.stop()
        wait_for_log(standby, "beat: Acquired lock")
        later = wait_for_runs(beat_monitor, last, 3)
    finally:
        first.stop()
        second.stop()

    assert len(runs) == 4
    assert all(MIN_GAP <= gap <= MAX_GAP for gap in gaps(runs)), gaps(runs)
    assert all(MIN_GAP <= gap <= MAX_GAP for gap in gaps(later)), gaps(later)
