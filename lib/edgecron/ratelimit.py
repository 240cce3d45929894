"""One token bucket for every pace edgecron keeps: warm request starts and Cloudflare's purge limits.

Reservation style: `reserve(cost)` takes the tokens at once and says how long the caller waits
before using them, so threads queue in order without holding the lock while they sleep. A rate
of 0 (or less) is unlimited. The clock (monotonic seconds) and the sleep are injected, so tests
run on fake time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens a second, at most `capacity` banked; the bucket starts full."""

    def __init__(
        self,
        rate: float,
        capacity: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.capacity = capacity
        self.clock = clock
        self.sleep = sleep
        self.tokens = float(capacity)
        self.updated = clock()
        self._lock = threading.Lock()

    def reserve(self, cost: float = 1.0) -> float:
        """Take `cost` tokens now; the seconds to wait before spending them (0.0: go)."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            self.tokens -= cost
            return max(0.0, -self.tokens / self.rate)

    def wait(self, cost: float = 1.0) -> None:
        """`reserve`, then sleep as long as it says."""
        delay = self.reserve(cost)
        if delay:
            self.sleep(delay)

    def drain(self) -> None:
        """The server says the bucket is empty (a 429): believe it."""
        self.reserve(0)
        with self._lock:
            self.tokens = min(self.tokens, 0.0)


class RateLimiter(TokenBucket):
    """Request starts spaced to `rate` per second across threads: a bucket holding one token, so
    idle time banks no burst (0 = unlimited)."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(rate, 1, clock=clock, sleep=sleep)
