"""Per vendor-account send rates: a token bucket per account, and pauses a vendor asks for."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from connector.errors import VendorThrottled

# The setting that names the vendor account (never a secret: it may appear in configuration).
ACCOUNT_SETTING: Final = {
    "twilio": "account-sid",
    "bird": "workspace-id",
    "sinch": "service-plan-id",
    "infobip": "base-url",
    "vonage": "api-key",
}


def account_of(vendor: str, settings: Mapping[str, str]) -> str:
    """The account a send is charged to; unknown vendors fall back to a hash of settings."""
    name = ACCOUNT_SETTING.get(vendor)
    if name is not None and settings.get(name):
        return f"{vendor}:{settings[name]}"
    digest = hashlib.sha256(repr(sorted(settings.items())).encode()).hexdigest()[:16]
    return f"{vendor}:#{digest}"


@dataclass
class _Bucket:
    rate: float  # tokens per second
    tokens: float
    at: float
    paused_until: float = 0.0


class Throttle:
    """In-process token buckets keyed by account.

    `limits` maps `vendor` or `vendor:account` to a rate per second; the most specific wins,
    and an account with neither is not limited. Capacity is one second's worth of tokens.
    """

    def __init__(self, limits: Mapping[str, float], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = dict(limits)
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def rate_for(self, account: str) -> float | None:
        return self.limits.get(account, self.limits.get(account.split(":", 1)[0]))

    def acquire(self, account: str, cost: float = 1.0) -> None:
        """Take `cost` tokens now, or raise VendorThrottled with the exact wait."""
        now = self.clock()
        bucket = self._buckets.get(account)
        if bucket is not None and bucket.paused_until > now:
            raise VendorThrottled("the vendor asked this account to slow down",
                                  code="throttled", retry_after=bucket.paused_until - now)
        rate = self.rate_for(account)
        if rate is None:
            return
        if bucket is None:
            bucket = self._buckets[account] = _Bucket(rate=rate, tokens=max(rate, cost), at=now)
        capacity = max(rate, cost)  # a message larger than a second's worth can still pass
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens < cost:
            wait = (cost - bucket.tokens) / rate
            raise VendorThrottled(f"this account's rate of {rate:g}/s is used up",
                                  code="throttled", retry_after=max(0.001, wait))
        bucket.tokens -= cost

    def pause(self, account: str, seconds: float) -> None:
        """The vendor said 429: hold every send for this account until it may go again."""
        now = self.clock()
        bucket = self._buckets.setdefault(
            account, _Bucket(rate=self.rate_for(account) or math.inf, tokens=0.0, at=now))
        bucket.paused_until = max(bucket.paused_until, now + seconds)
