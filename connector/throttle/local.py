"""Token buckets in this process's memory: exact, free, and blind to other processes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

# Buckets kept at most. Names come from callers (any account id with any secret makes one),
# so the table must not grow with what they invent: past this size full buckets are dropped
# (a missing bucket starts full, so that loses nothing), then the least recently used.
MAX_BUCKETS: Final = 10_000


@dataclass
class _Bucket:
    tokens: float
    at: float
    capacity: float
    rate: float


class LocalBuckets:
    shared = False

    def __init__(self, clock: Callable[[], float], *, limit: int = MAX_BUCKETS) -> None:
        self.clock = clock
        self.limit = limit
        self._buckets: dict[str, _Bucket] = {}  # least recently used first

    def __len__(self) -> int:
        return len(self._buckets)

    async def take(self, account: str, rate: float, capacity: float,
                   cost: float) -> tuple[float, bool]:
        now = self.clock()
        bucket = self._buckets.pop(account, None)
        if bucket is None:
            bucket = _Bucket(tokens=capacity, at=now, capacity=capacity, rate=rate)
            if len(self._buckets) >= self.limit:
                self._shrink(now)
        self._buckets[account] = bucket  # now the most recently used
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.at) * rate)
        bucket.at, bucket.capacity, bucket.rate = now, capacity, rate
        if bucket.tokens < cost:
            return (cost - bucket.tokens) / rate, False
        bucket.tokens -= cost
        return 0.0, False

    def _shrink(self, now: float) -> None:
        """Make room: drop every bucket that has refilled, else the least recently used."""
        full = [name for name, b in self._buckets.items()
                if b.tokens + (now - b.at) * b.rate >= b.capacity]
        for name in full:
            del self._buckets[name]
        # Forgetting a bucket refills it: at worst one second's worth of tokens more. A tenth
        # goes at once, so the scan above runs once per many new buckets, not once each.
        if len(self._buckets) >= self.limit:
            while len(self._buckets) > self.limit - max(1, self.limit // 10):
                del self._buckets[next(iter(self._buckets))]

    async def pause(self, account: str, seconds: float) -> None:
        """Nothing to share: the Throttle in front holds this process's pauses."""

    async def paused(self) -> dict[str, float]:
        return {}

    async def close(self) -> None:
        pass
