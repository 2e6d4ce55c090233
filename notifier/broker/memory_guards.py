"""The embedded (single process) ``TicketStore`` and ``RateLimiter``."""

from __future__ import annotations

import time
from collections.abc import Callable

# Expired tickets nobody redeemed are swept when this many are kept.
SWEEP_AT = 1024


class MemoryTickets:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._items: dict[str, tuple[float, str]] = {}

    def put(self, key: str, value: str, ttl_seconds: float) -> None:
        now = self._clock()
        if len(self._items) >= SWEEP_AT:
            self._items = {k: item for k, item in self._items.items() if item[0] > now}
        self._items[key] = (now + ttl_seconds, value)

    def take(self, key: str) -> str | None:
        item = self._items.pop(key, None)
        if item is None or item[0] <= self._clock():
            return None
        return item[1]


class MemoryRateLimiter:
    """A token bucket per key: ``rate`` tokens a second, at most ``burst``."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire(self, key: str) -> float:
        now = self._clock()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self.rate
