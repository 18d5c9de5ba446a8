"""Token buckets in this process's memory: exact, free, and blind to other processes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class LocalBuckets:
    shared = False

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    async def take(self, account: str, rate: float, capacity: float,
                   cost: float) -> tuple[float, bool]:
        now = self.clock()
        bucket = self._buckets.get(account)
        if bucket is None:
            bucket = self._buckets[account] = _Bucket(tokens=capacity, at=now)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens < cost:
            return (cost - bucket.tokens) / rate, False
        bucket.tokens -= cost
        return 0.0, False

    async def pause(self, account: str, seconds: float) -> None:
        """Nothing to share: the Throttle in front holds this process's pauses."""

    async def paused(self) -> dict[str, float]:
        return {}

    async def close(self) -> None:
        pass
