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


async def test_one_key_never_appears_twice_in_a_batch() -> None:
    recorder = Recorder()
    batcher: Batcher[str, str] = Batcher(recorder.run, key=lambda item: item[0])
    results = await asyncio.gather(*(batcher.submit(x) for x in ("x1", "y1", "x2", "x3")))
    assert results == ["X1", "Y1", "X2", "X3"]
    assert recorder.batches == [["x1", "y1"], ["x2"], ["x3"]]


async def test_the_limit_splits_a_long_queue() -> None:
    recorder = Recorder()
    batcher: Batcher[str, str] = Batcher(recorder.run, limit=2)
    await asyncio.gather(*(batcher.submit(x) for x in "abcde"))
    assert [len(b) for b in recorder.batches] == [2, 2, 1]


async def test_a_failed_batch_fails_its_callers_only() -> None:
    recorder = Recorder(fail_on="bad")
    batcher: Batcher[str, str] = Batcher(recorder.run, limit=2)
    results = await asyncio.gather(*(batcher.submit(x) for x in ("ok", "bad", "fine")),
                                   return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and isinstance(results[1], RuntimeError)
    assert results[2] == "FINE"


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
