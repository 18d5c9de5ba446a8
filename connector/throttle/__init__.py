"""Per vendor-account send rates: a token bucket per account, and pauses a vendor asks for.

The limits and the pauses this process knows of are checked here first, so an account with
no configured rate and no pause costs no round trip. The buckets themselves live in one of:

    LocalBuckets   this process only (SQLite deployments)
    PgBuckets      a table in the PostgreSQL store, shared by every replica
    RedisBuckets   Redis (CONNECTOR_REDIS_URL), shared by every replica
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Final, Protocol

import structlog

from connector.errors import StoreUnavailable, VendorThrottled
from connector.settings import Settings
from connector.store.base import Store
from connector.tenants import ACCOUNT_SETTING, account_of
from connector.throttle.local import LocalBuckets

__all__ = ["ACCOUNT_SETTING", "Buckets", "Throttle", "account_of", "open_throttle"]
log = structlog.get_logger("connector.throttle")

# A shared bucket that does not answer in this time counts as unavailable: a send waits no
# longer than this for its permission.
SHARED_TIMEOUT: Final = 2.0
# How often each process reads which accounts other replicas paused, so that accounts it does
# not count (no configured rate) still hold while a vendor asked them to.
PAUSE_POLL: Final = 1.0


class Buckets(Protocol):
    """Where the token buckets are kept. `shared` ones are seen by every replica."""

    shared: bool

    async def take(self, account: str, rate: float, capacity: float,
                   cost: float) -> tuple[float, bool]:
        """Take `cost` tokens. Returns (0, False) when taken, else the seconds to wait and
        whether that is because the account is paused. Raises StoreUnavailable."""

    async def pause(self, account: str, seconds: float) -> None: ...

    async def paused(self) -> dict[str, float]:
        """Accounts paused now, with the seconds each pause has left."""

    async def close(self) -> None: ...


class Throttle:
    """Token buckets keyed by account, and the vendor's pauses.

    `limits` maps `vendor` or `vendor:account` to a rate per second; the most specific wins,
    and an account with neither is not limited. Capacity is one second's worth of tokens.
    `bucket` names where an account's tokens and pauses are kept (its tenant key, see
    connector/tenants.py): callers naming an account with a wrong secret count apart from
    its owner. Without it the account itself is the bucket.
    """

    def __init__(self, limits: Mapping[str, float], buckets: Buckets | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = dict(limits)
        self.clock = clock
        self.buckets: Buckets = buckets or LocalBuckets(clock)
        self._paused: dict[str, float] = {}  # account -> clock() when its pause ends
        self._watcher: asyncio.Task[None] | None = None

    def rate_for(self, account: str) -> float | None:
        return self.limits.get(account, self.limits.get(account.split(":", 1)[0]))

    async def acquire(self, account: str, cost: float = 1.0, *,
                      bucket: str | None = None) -> None:
        """Take `cost` tokens now, or raise VendorThrottled with the exact wait.

        Raises StoreUnavailable (retryable 503) when shared buckets cannot be reached.
        """
        rate = self.rate_for(account)
        account = bucket or account
        until = self._paused.get(account)
        if until is not None:
            left = until - self.clock()
            if left > 0:
                raise _paused(left)
            del self._paused[account]
        if rate is None:
            return
        capacity = max(rate, cost)  # a message larger than a second's worth can still pass
        if not self.buckets.shared:
            wait, paused = await self.buckets.take(account, rate, capacity, cost)
        else:
            try:
                async with asyncio.timeout(SHARED_TIMEOUT):
                    wait, paused = await self.buckets.take(account, rate, capacity, cost)
            except (StoreUnavailable, TimeoutError) as exc:
                # Closed, not open: sending anyway would multiply the vendor's limit by the
                # number of replicas exactly when something is already wrong.
                log.warning("throttle_unavailable", error=_describe(exc))
                raise StoreUnavailable("the shared rate limit cannot be reached; retry",
                                       retry_after=1.0) from exc
        if wait <= 0:
            return
        if paused:
            self._remember(account, wait)
            raise _paused(wait)
        raise VendorThrottled(f"this account's rate of {rate:g}/s is used up",
                              code="throttled", retry_after=max(0.001, wait))

    async def pause(self, account: str, seconds: float, *, bucket: str | None = None) -> None:
        """The vendor said 429: hold every send for this account until it may go again.

        Never raises: this process holds the pause whatever happens, and a store that cannot
        take it only means other replicas learn of it from the vendor themselves.
        """
        account = bucket or account
        self._remember(account, seconds)
        if not self.buckets.shared:
            return
        try:
            async with asyncio.timeout(SHARED_TIMEOUT):
                await self.buckets.pause(account, seconds)
        except (StoreUnavailable, TimeoutError) as exc:
            log.warning("throttle_pause_not_shared", error=_describe(exc))

    def _remember(self, account: str, seconds: float) -> None:
        until = self.clock() + seconds
        if until > self._paused.get(account, 0.0):
            self._paused[account] = until

    async def start(self) -> None:
        if self.buckets.shared and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch_pauses())

    async def close(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await self.buckets.close()

    async def refresh_pauses(self) -> None:
        """Copy here the pauses other replicas recorded. Raises StoreUnavailable."""
        try:
            async with asyncio.timeout(SHARED_TIMEOUT):
                paused = await self.buckets.paused()
        except TimeoutError as exc:
            raise StoreUnavailable("the shared rate limit cannot be reached") from exc
        for account, seconds in paused.items():
            self._remember(account, seconds)

    async def _watch_pauses(self) -> None:
        failing = False
        while True:
            try:
                await self.refresh_pauses()
            except StoreUnavailable as exc:
                if not failing:  # one line per outage, not one per poll
                    log.warning("throttle_pauses_unreadable", error=exc.message)
                failing = True
            else:
                failing = False
            await asyncio.sleep(PAUSE_POLL)


def _paused(seconds: float) -> VendorThrottled:
    return VendorThrottled("the vendor asked this account to slow down", code="throttled",
                           retry_after=max(0.001, seconds))


def _describe(exc: BaseException) -> str:
    return exc.message if isinstance(exc, StoreUnavailable) else "no answer in time"


def open_throttle(settings: Settings, store: Store) -> Throttle:
    """Redis when CONNECTOR_REDIS_URL is set, else the PostgreSQL store's table when the store
    is PostgreSQL, else this process's own buckets."""
    if settings.redis_url:
        # Imported here: deployments without Redis never load its client.
        from connector.throttle.redis import RedisBuckets

        return Throttle(settings.rate_limits, RedisBuckets(settings.redis_url))
    if settings.database_url.startswith(("postgresql://", "postgres://")):
        from connector.store.postgres import PostgresStore
        from connector.throttle.postgres import PgBuckets

        if isinstance(store, PostgresStore):
            return Throttle(settings.rate_limits, PgBuckets(store))
    return Throttle(settings.rate_limits)
