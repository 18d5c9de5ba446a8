"""The group-commit batcher: who shares a batch, and what a failure or a cancel does."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from connector.store.batch import Batcher


class Recorder:
    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_on = fail_on

    async def run(self, items: Sequence[str]) -> list[str]:
        self.batches.append(list(items))
        await asyncio.sleep(0.01)  # the "round trip": later arrivals queue meanwhile
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError("store down")
        return [item.upper() for item in items]


async def test_calls_waiting_together_share_one_batch_and_get_their_own_result() -> None:
    recorder = Recorder()
    batcher: Batcher[str, str] = Batcher(recorder.run)
    first = asyncio.ensure_future(batcher.submit("a"))
    await asyncio.sleep(0)  # "a" is in flight alone
    rest = await asyncio.gather(*(batcher.submit(x) for x in ("b", "c", "d")))
    assert await first == "A" and rest == ["B", "C", "D"]
    assert recorder.batches == [["a"], ["b", "c", "d"]]


async def busy(batcher: Batcher[str, str]) -> asyncio.Future[str]:
    """A first call in flight, so the calls that follow queue behind it."""
    first = asyncio.ensure_future(batcher.submit("first"))
    await asyncio.sleep(0)
    return first


async def test_one_key_never_appears_twice_in_a_batch() -> None:
    recorder = Recorder()
    batcher: Batcher[str, str] = Batcher(recorder.run, key=lambda item: item[0])
    first = await busy(batcher)
    results = await asyncio.gather(*(batcher.submit(x) for x in ("x1", "y1", "x2", "x3")))
    assert results == ["X1", "Y1", "X2", "X3"] and await first == "FIRST"
    assert recorder.batches == [["first"], ["x1", "y1"], ["x2"], ["x3"]]


async def test_the_limit_splits_a_long_queue() -> None:
    recorder = Recorder()
    batcher: Batcher[str, str] = Batcher(recorder.run, limit=2)
    first = await busy(batcher)
    await asyncio.gather(first, *(batcher.submit(x) for x in "abcde"))
    assert [len(b) for b in recorder.batches] == [1, 2, 2, 1]


async def test_a_failed_batch_fails_its_callers_only() -> None:
    recorder = Recorder(fail_on="bad")
    batcher: Batcher[str, str] = Batcher(recorder.run, limit=2)
    first = await busy(batcher)
    results = await asyncio.gather(*(batcher.submit(x) for x in ("ok", "bad", "fine")),
                                   return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and isinstance(results[1], RuntimeError)
    assert results[2] == "FINE" and await first == "FIRST"


async def test_an_idle_batcher_runs_the_call_in_the_callers_own_task() -> None:
    ran_in: list[asyncio.Task[object] | None] = []

    async def run(items: Sequence[str]) -> list[str]:
        ran_in.append(asyncio.current_task())
        return [item.upper() for item in items]

    batcher: Batcher[str, str] = Batcher(run)

    async def caller() -> tuple[str, asyncio.Task[object] | None]:
        return await batcher.submit("a"), asyncio.current_task()

    answer, task = await caller()
    assert answer == "A" and ran_in == [task]
    assert await batcher.submit("b") == "B"  # idle again afterwards
    assert len(ran_in) == 2


async def test_a_failed_call_of_its_own_fails_only_its_caller() -> None:
    recorder = Recorder(fail_on="bad")
    batcher: Batcher[str, str] = Batcher(recorder.run)
    bad = asyncio.ensure_future(batcher.submit("bad"))
    await asyncio.sleep(0)
    queued = asyncio.ensure_future(batcher.submit("queued"))
    with pytest.raises(RuntimeError):
        await bad
    assert await queued == "QUEUED"
    assert recorder.batches == [["bad"], ["queued"]]


async def test_calls_queued_behind_a_cancelled_caller_still_go() -> None:
    recorder = Recorder()
    batcher: Batcher[str, str] = Batcher(recorder.run)
    first = await busy(batcher)
    queued = asyncio.ensure_future(batcher.submit("queued"))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await queued == "QUEUED"
    assert await batcher.submit("later") == "LATER"


async def test_a_caller_cancelled_while_queued_is_left_out() -> None:
    recorder = Recorder()
    batcher: Batcher[str, str] = Batcher(recorder.run)
    first = asyncio.ensure_future(batcher.submit("a"))
    await asyncio.sleep(0)
    gone = asyncio.ensure_future(batcher.submit("gone"))
    kept = asyncio.ensure_future(batcher.submit("kept"))
    await asyncio.sleep(0)
    gone.cancel()
    assert await kept == "KEPT" and await first == "A"
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert recorder.batches == [["a"], ["kept"]]
