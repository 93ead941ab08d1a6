"""Work queues: per-pod serial execution on a shared thread pool, and timers.

Every change to one pod (watch events, process exits, script steps, deadlines)
runs as a task keyed by the pod's UID. Tasks of one key run one at a time in
submission order, and tasks of different keys run in parallel on the pool.
So a pod's state needs no lock of its own, and one slow pod does not hold up
the others.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger(__name__)

Task = Callable[[], None]


class KeyedExecutor:
    """Runs tasks of one key in order, and tasks of different keys in parallel."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="pod-worker"
        )
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Task]] = {}

    def submit(self, key: str, task: Task) -> None:
        with self._lock:
            queue = self._queues.get(key)
            if queue is not None:
                queue.append(task)
                return
            self._queues[key] = deque([task])
        try:
            self._pool.submit(self._drain, key)
        except RuntimeError:
            # After shutdown() the stand-in is exiting: dropping the task is
            # what a stopped kubelet does too.
            logger.debug("task dropped after shutdown", extra={"uid": key})

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _drain(self, key: str) -> None:
        while True:
            with self._lock:
                queue = self._queues[key]
                if not queue:
                    del self._queues[key]
                    return
                task = queue.popleft()
            try:
                task()
            except Exception:
                # A failing task must not stop the pod's later tasks, so
                # the error is logged here with the pod's UID.
                logger.exception("pod task failed", extra={"uid": key})


class Timer:
    """Handle of a scheduled task. ``cancel()`` stops it if it has not started,
    including when it is already queued behind other tasks of its key."""

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """Submits tasks to a KeyedExecutor at a given monotonic time."""

    def __init__(self, executor: KeyedExecutor) -> None:
        self._executor = executor
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int, str, Task, Timer]] = []
        self._sequence = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="timers", daemon=True)
        self._thread.start()

    def call_later(self, delay: float, key: str, task: Task) -> Timer:
        """Submit ``task`` under ``key`` after ``delay`` seconds."""
        timer = Timer()
        with self._condition:
            entry = (time.monotonic() + delay, next(self._sequence), key, task, timer)
            heapq.heappush(self._heap, entry)
            self._condition.notify()
        return timer

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._stopped:
                    if self._heap and self._heap[0][0] <= time.monotonic():
                        break
                    timeout = (
                        self._heap[0][0] - time.monotonic() if self._heap else None
                    )
                    self._condition.wait(timeout)
                if self._stopped:
                    return
                _, _, key, task, timer = heapq.heappop(self._heap)
            if not timer.cancelled:
                self._executor.submit(key, _unless_cancelled(timer, task))


def _unless_cancelled(timer: Timer, task: Task) -> Task:
    # Checked again when the task runs: a cancel() from a task of the same key
    # that ran in between must still win.
    def run() -> None:
        if not timer.cancelled:
            task()

    return run
