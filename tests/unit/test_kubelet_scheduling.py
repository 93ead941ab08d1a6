"""Per-pod task order and timers of the kubelet stand-in."""

from __future__ import annotations

import functools
import threading
import time

from local_stack.kubelet.scheduling import KeyedExecutor, Timers


def _wait(event: threading.Event) -> None:
    assert event.wait(5), "task did not run within 5 s"


def test_tasks_of_one_key_run_in_order() -> None:
    executor = KeyedExecutor(workers=4)
    seen: list[int] = []
    done = threading.Event()

    def record(value: int) -> None:
        time.sleep(0.001)
        seen.append(value)
        if value == 99:
            done.set()

    for value in range(100):
        executor.submit("pod", functools.partial(record, value))
    _wait(done)
    executor.shutdown()
    assert seen == list(range(100))


def test_keys_run_in_parallel() -> None:
    executor = KeyedExecutor(workers=2)
    release = threading.Event()
    other_ran = threading.Event()

    def block() -> None:
        release.wait(5)

    executor.submit("slow", block)
    executor.submit("fast", other_ran.set)
    _wait(other_ran)
    release.set()
    executor.shutdown()


def test_failing_task_does_not_stop_key() -> None:
    executor = KeyedExecutor(workers=1)
    after = threading.Event()

    def fail() -> None:
        raise RuntimeError("task failure for the test")

    executor.submit("pod", fail)
    executor.submit("pod", after.set)
    _wait(after)
    executor.shutdown()


def test_timer_runs_after_delay() -> None:
    executor = KeyedExecutor(workers=1)
    timers = Timers(executor)
    ran = threading.Event()
    started = time.monotonic()
    timers.call_later(0.2, "pod", ran.set)
    _wait(ran)
    assert time.monotonic() - started >= 0.2
    timers.stop()
    executor.shutdown()


def test_cancelled_timer_never_runs() -> None:
    executor = KeyedExecutor(workers=1)
    timers = Timers(executor)
    cancelled_ran = threading.Event()
    later = threading.Event()
    timer = timers.call_later(0.1, "pod", cancelled_ran.set)
    timer.cancel()
    timers.call_later(0.3, "pod", later.set)
    _wait(later)
    assert not cancelled_ran.is_set()
    timers.stop()
    executor.shutdown()
