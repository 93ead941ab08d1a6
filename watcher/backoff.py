"""Exponential backoff with jitter that resets after a healthy period.

The reconnect values follow client-go's reflector. The first retry waits
about 0.8 s, so a short API server restart costs little. The wait doubles
up to 30 s, so thousands of watchers do not flood a recovering API server.
It resets after 2 min without a retry, so one failure after hours of
health waits 0.8 s again.
"""

from __future__ import annotations

import random

from watcher.clock import Clock

#: First reconnect delay in seconds.
RECONNECT_INITIAL_SECONDS = 0.8
#: Upper bound of any reconnect delay in seconds.
RECONNECT_MAX_SECONDS = 30.0
#: Seconds without a retry after which the delay starts again from the first.
RECONNECT_RESET_AFTER_SECONDS = 120.0
#: Each delay is the base delay times a random factor in [1, 1 + JITTER],
#: capped at the maximum, so replicas that failed together spread out.
JITTER = 1.0


class Backoff:
    """Delays of successive retries: ``next_delay()`` once per failure.

    The base delay doubles on each call from ``initial`` to ``maximum``. It
    starts again from ``initial`` when more than ``reset_after`` seconds
    passed since the end of the previous delay, or after ``reset()``.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        initial: float = RECONNECT_INITIAL_SECONDS,
        maximum: float = RECONNECT_MAX_SECONDS,
        reset_after: float = RECONNECT_RESET_AFTER_SECONDS,
        jitter: float = JITTER,
        rng: random.Random | None = None,
    ) -> None:
        self._clock = clock
        self._initial = initial
        self._maximum = maximum
        self._reset_after = reset_after
        self._jitter = jitter
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._base = initial
        self._delay_ends_at: float | None = None
        #: Failures since the last reset, for logs.
        self.attempt = 0

    def next_delay(self) -> float:
        """Return the seconds to wait before the next retry."""
        now = self._clock.monotonic()
        if (
            self._delay_ends_at is not None
            and now - self._delay_ends_at > self._reset_after
        ):
            self.reset()
        delay = min(self._maximum, self._base * (1 + self._jitter * self._rng.random()))
        self._base = min(self._maximum, self._base * 2)
        self._delay_ends_at = now + delay
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start the next delay again from the initial one."""
        self._base = self._initial
        self._delay_ends_at = None
        self.attempt = 0
