"""Token buckets per vendor account, with the exact wait in Retry-After, kept in this process,
in PostgreSQL or in Redis; the shared ones hold one budget for every replica."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from connector.errors import StoreUnavailable, VendorThrottled
from connector.services import Services
from connector.settings import Settings
from connector.store.postgres import PostgresStore
from connector.throttle import Buckets, Throttle, account_of
from connector.throttle.local import LocalBuckets
from connector.throttle.postgres import PgBuckets
from connector.throttle.redis import PAUSED_KEY, PREFIX, RedisBuckets
from tests.store.conftest import SERVER

REDIS_URL = os.environ.get("CONNECTOR_TEST_REDIS", "redis://127.0.0.1:6379/15")
SHARED = ["postgresql", "redis"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_bucket_allows_the_rate_then_says_how_long_to_wait() -> None:
    clock = Clock()
    throttle = Throttle({"twilio": 5}, clock=clock)
    for _ in range(5):
        await throttle.acquire("twilio:AC1")
    with pytest.raises(VendorThrottled) as caught:
        await throttle.acquire("twilio:AC1")
    assert caught.value.status == 429
    assert caught.value.retry_after == pytest.approx(0.2)
    assert caught.value.headers() == {"Retry-After": "1"}
    clock.now += 0.2
    await throttle.acquire("twilio:AC1")


async def test_accounts_have_their_own_buckets_and_specific_limits_win() -> None:
    clock = Clock()
    throttle = Throttle({"twilio": 2, "twilio:AC2": 1}, clock=clock)
    await throttle.acquire("twilio:AC1")
    await throttle.acquire("twilio:AC1")
    await throttle.acquire("twilio:AC2")
    with pytest.raises(VendorThrottled):
        await throttle.acquire("twilio:AC2")
    await throttle.acquire("twilio:AC3")  # untouched by the others


async def test_unlimited_accounts_pass() -> None:
    throttle = Throttle({"sinch": 1}, clock=Clock())
    for _ in range(100):
        await throttle.acquire("twilio:AC1")


async def test_segments_cost_more() -> None:
    clock = Clock()
    throttle = Throttle({"twilio": 10}, clock=clock)
    await throttle.acquire("twilio:AC1", cost=7)
    with pytest.raises(VendorThrottled) as caught:
        await throttle.acquire("twilio:AC1", cost=4)
    assert caught.value.retry_after == pytest.approx(0.1)


async def test_vendor_429_pauses_the_account() -> None:
    clock = Clock()
    throttle = Throttle({}, clock=clock)
    await throttle.pause("twilio:AC1", 3)
    with pytest.raises(VendorThrottled) as caught:
        await throttle.acquire("twilio:AC1")
    assert caught.value.retry_after == pytest.approx(3)
    await throttle.acquire("twilio:AC2")
    clock.now += 3.01
    await throttle.acquire("twilio:AC1")


def test_account_identity_never_holds_a_secret() -> None:
    assert account_of("twilio", {"account-sid": "AC1", "auth-token": "s3cret"}) == "twilio:AC1"
    hashed = account_of("other", {"token": "s3cret"})
    assert hashed.startswith("other:#") and "s3cret" not in hashed


# The contract every backend keeps. Server clocks run on, so waits are checked against the
# rate with a margin of half a token or more: only a stall of that long could move them.

Replicas = Callable[[Mapping[str, float]], Awaitable[Throttle]]


async def _migrated_database() -> str:
    """A new database with the connector's migrations; the suite's tables stay apart from
    whatever the shared `test` database holds."""
    name = f"connector_throttle_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(f"{SERVER}/postgres", timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    store = PostgresStore(f"{SERVER}/{name}", min_size=1, max_size=1)
    await store.open()
    await store.close()
    return name


async def _drop(name: str) -> None:
    admin = await asyncpg.connect(f"{SERVER}/postgres", timeout=5)
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    name = asyncio.run(_migrated_database())
    yield f"{SERVER}/{name}"
    asyncio.run(_drop(name))


async def open_buckets(backend: str, target: str, stack: contextlib.AsyncExitStack
                       ) -> Buckets | None:
    """The buckets one replica would use; None for this process's own."""
    if backend == "postgresql":
        store = PostgresStore(target, min_size=1, max_size=2)
        await store.open()
        stack.push_async_callback(store.close)
        return PgBuckets(store)
    if backend == "redis":
        return RedisBuckets(target)
    return None


@pytest.fixture(params=["local", *SHARED])
async def replicas(request: pytest.FixtureRequest, pg_url: str) -> AsyncIterator[Replicas]:
    """Makes throttles that share one backend, as separate replicas do."""
    backend: str = request.param
    target = pg_url if backend == "postgresql" else REDIS_URL
    async with contextlib.AsyncExitStack() as stack:

        async def make(limits: Mapping[str, float]) -> Throttle:
            throttle = Throttle(limits, await open_buckets(backend, target, stack))
            stack.push_async_callback(throttle.close)
            return throttle

        yield make


def new_account() -> str:
    return f"twilio:AC{uuid.uuid4().hex}"


async def refused(throttle: Throttle, account: str, cost: float = 1.0) -> VendorThrottled:
    with pytest.raises(VendorThrottled) as caught:
        await throttle.acquire(account, cost)
    return caught.value


async def test_rate_is_kept_and_retry_after_says_when_a_token_returns(replicas: Replicas
                                                                      ) -> None:
    account = new_account()
    throttle = await replicas({account: 4})
    for _ in range(4):
        await throttle.acquire(account)
    first = await refused(throttle, account)
    assert first.code == "throttled" and first.status == 429
    assert 0.125 < first.retry_after <= 0.25  # type: ignore[operator]
    assert first.headers() == {"Retry-After": "1"}
    await asyncio.sleep(first.retry_after + 0.05)  # type: ignore[operator]
    await throttle.acquire(account)
    await refused(throttle, account)


async def test_a_message_of_several_segments_takes_as_many_tokens(replicas: Replicas) -> None:
    account = new_account()
    throttle = await replicas({account: 1})
    await throttle.acquire(account, cost=3)  # larger than a second's worth: it still passes
    wait = (await refused(throttle, account, cost=2)).retry_after
    assert wait is not None and 1.5 < wait <= 2.0


async def test_a_vendor_pause_holds_the_account_and_no_other(replicas: Replicas) -> None:
    limited, unlimited, other = new_account(), new_account(), new_account()
    throttle = await replicas({limited: 100})
    await throttle.pause(limited, 30)
    await throttle.pause(unlimited, 30)
    for account in (limited, unlimited):
        wait = (await refused(throttle, account)).retry_after
        assert wait is not None and 29 < wait <= 30
    await throttle.acquire(other)


@pytest.mark.parametrize("replicas", SHARED, indirect=True)
async def test_replicas_share_one_budget(replicas: Replicas) -> None:
    account = new_account()
    one, two = await replicas({account: 2}), await replicas({account: 2})
    await one.acquire(account)
    await two.acquire(account)
    for throttle in (one, two):
        wait = (await refused(throttle, account)).retry_after
        assert wait is not None and 0.25 < wait <= 0.5


@pytest.mark.parametrize("replicas", SHARED, indirect=True)
async def test_a_pause_reaches_every_replica(replicas: Replicas) -> None:
    limited, unlimited = new_account(), new_account()
    one, two = await replicas({limited: 100}), await replicas({limited: 100})
    await one.pause(limited, 30)
    await one.pause(unlimited, 30)
    # A counted account sees the pause in the very statement that counts it.
    wait = (await refused(two, limited)).retry_after
    assert wait is not None and 29 < wait <= 30
    # Others learn of it from the poll every replica runs.
    await two.refresh_pauses()
    wait = (await refused(two, unlimited)).retry_after
    assert wait is not None and 29 < wait <= 30


async def test_a_pause_only_ever_lengthens(replicas: Replicas) -> None:
    account = new_account()
    throttle = await replicas({account: 100})
    await throttle.pause(account, 30)
    await throttle.pause(account, 2)
    wait = (await refused(throttle, account)).retry_after
    assert wait is not None and 29 < wait <= 30


async def test_redis_buckets_vanish_once_idle_long_enough_to_refill() -> None:
    account, paused = new_account(), new_account()
    buckets = RedisBuckets(REDIS_URL)
    throttle = Throttle({account: 2, paused: 2}, buckets)
    try:
        await throttle.acquire(account, cost=3)  # empty: 1.5 s to refill, plus a second
        assert 2000 < await buckets.client.pttl(PREFIX + account) <= 2500
        await throttle.pause(paused, 30)  # a pause keeps its bucket for as long as it holds
        assert 30_000 < await buckets.client.pttl(PREFIX + paused) <= 31_000
        assert 30_000 < await buckets.client.pttl(PAUSED_KEY) <= 31_000
    finally:
        await throttle.close()


async def test_redis_buckets_keep_the_server_clock_to_the_microsecond() -> None:
    """Each take refills from the time the last one stored: stored to the nearest 100 µs (Lua's
    tostring), that time moved by up to 50 µs per write, and bursts admitted more than the rate
    (bench/throttle.py's accuracy above 1.00)."""
    account = new_account()
    buckets = RedisBuckets(REDIS_URL)
    try:
        micros = []
        for _ in range(20):
            assert await buckets.take(account, 1e6, 1e6, 1) == (0.0, False)
            at = await buckets.client.hget(PREFIX + account, "at")
            micros.append(round(float(at) * 1e6))
        # 20 TIME readings all on whole 100 µs: one chance in 10^40 unless rounded.
        assert any(m % 100 for m in micros), micros
    finally:
        await buckets.close()


def unreachable(backend: str) -> Buckets:
    if backend == "postgresql":
        return PgBuckets(PostgresStore("postgresql://postgres@127.0.0.1:1/x"))  # never opened
    return RedisBuckets("redis://127.0.0.1:1/0")  # nothing listens on port 1


@pytest.mark.parametrize("backend", SHARED)
async def test_an_unreachable_store_refuses_counted_sends_with_a_retryable_503(
        backend: str) -> None:
    account, unlimited = new_account(), new_account()
    throttle = Throttle({account: 5}, unreachable(backend))
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await throttle.acquire(account)
        assert (caught.value.status, caught.value.code) == (503, "store_unavailable")
        assert caught.value.retryable and caught.value.headers() == {"Retry-After": "1"}
        # An account with no rate and no pause asks nothing of the store, so it still goes.
        await throttle.acquire(unlimited)
        # A pause the store cannot take still holds in this process.
        await throttle.pause(unlimited, 30)
        await refused(throttle, unlimited)
    finally:
        await throttle.close()


async def test_the_pause_poll_runs_from_start_to_close() -> None:
    account = new_account()
    one = Throttle({}, RedisBuckets(REDIS_URL))
    two = Throttle({}, RedisBuckets(REDIS_URL))
    await two.start()
    try:
        await one.pause(account, 30)
        for _ in range(100):  # the poll runs every PAUSE_POLL seconds; give it up to 5 s
            try:
                await two.acquire(account)
            except VendorThrottled:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the second replica never learnt of the pause")
    finally:
        await one.close()
        await two.close()


# Several OS processes, each with its own throttle, hammering one account at once.

PROCESSES = 2
RATE = 10.0
ATTEMPTS = 300


async def hammer(backend: str, target: str, account: str, start: Any
                 ) -> tuple[int, int, float, float]:
    async with contextlib.AsyncExitStack() as stack:
        throttle = Throttle({account: RATE}, await open_buckets(backend, target, stack))
        stack.push_async_callback(throttle.close)
        await throttle.acquire(new_account())  # connect before the start line
        admitted = refusals = 0

        async def worker() -> None:
            nonlocal admitted, refusals
            for _ in range(ATTEMPTS // 4):
                try:
                    await throttle.acquire(account)
                except VendorThrottled:
                    refusals += 1
                else:
                    admitted += 1

        start.wait()
        began = time.time()
        await asyncio.gather(*(worker() for _ in range(4)))
        return admitted, refusals, began, time.time()


def child(backend: str, target: str, account: str, start: Any, results: Any) -> None:
    results.put(asyncio.run(hammer(backend, target, account, start)))


@pytest.mark.parametrize("backend", SHARED)
def test_processes_together_admit_no_more_than_the_rate(backend: str, pg_url: str) -> None:
    target = pg_url if backend == "postgresql" else REDIS_URL
    account = new_account()
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=child, args=(backend, target, account, start, results))
             for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    try:
        outcomes = [results.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    admitted = sum(o[0] for o in outcomes)
    assert admitted + sum(o[1] for o in outcomes) == PROCESSES * ATTEMPTS
    window = max(o[3] for o in outcomes) - min(o[2] for o in outcomes)
    # One full bucket, then the rate for as long as anyone was asking: never more.
    assert RATE <= admitted <= RATE + RATE * window


@pytest.mark.parametrize(("env", "chosen"), [
    pytest.param({}, LocalBuckets, id="sqlite-per-process"),
    pytest.param({"CONNECTOR_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test"},
                 PgBuckets, id="postgresql-table"),
    pytest.param({"CONNECTOR_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test",
                  "CONNECTOR_REDIS_URL": REDIS_URL}, RedisBuckets, id="redis-wins"),
    pytest.param({"CONNECTOR_REDIS_URL": REDIS_URL}, RedisBuckets, id="redis-on-sqlite"),
])
async def test_services_pick_the_buckets_and_the_sender_uses_them(
        env: dict[str, str], chosen: type, tmp_path: Path) -> None:
    settings = Settings.from_env({"CONNECTOR_DATA_DIR": str(tmp_path), **env})
    services = Services.build(settings)  # builds only: nothing is connected yet
    assert isinstance(services.throttle.buckets, chosen)
    assert services.sender.throttle is services.throttle
    await services.throttle.close()


async def test_the_store_purge_forgets_idle_buckets_and_keeps_live_and_paused_ones(
        pg_url: str) -> None:
    store = PostgresStore(pg_url, min_size=1, max_size=2)
    await store.open()
    try:
        buckets = PgBuckets(store)
        tag = uuid.uuid4().hex
        idle, busy, paused = f"idle-{tag}", f"busy-{tag}", f"paused-{tag}"
        for account in (idle, busy, paused):
            assert await buckets.take(account, 1.0, 1.0, 1.0) == (0.0, False)
        await buckets.pause(paused, 3600)
        week = 7 * 86400.0
        async with store.connection() as conn:
            await conn.execute("UPDATE throttle_buckets SET updated_at = updated_at - $2 "
                               "WHERE account = ANY($1::text[])", [idle, paused], week)
        await store.purge(time.time() - week / 2)
        async with store.connection() as conn:
            kept = {r[0] for r in await conn.fetch(
                "SELECT account FROM throttle_buckets WHERE account LIKE $1", f"%-{tag}")}
        assert kept == {busy, paused}
        # Forgotten means full again, which is what a week's idling had made it.
        assert await buckets.take(idle, 1.0, 1.0, 1.0) == (0.0, False)
        wait, still_paused = await buckets.take(paused, 1.0, 1.0, 1.0)
        assert still_paused and wait > 3000
        wait, _ = await buckets.take(busy, 1.0, 1.0, 1.0)
        assert wait > 0, "the busy bucket kept its spent token"
    finally:
        await store.close()
