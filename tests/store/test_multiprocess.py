"""Several OS processes claiming the same request_ids on one store: one claim wins each."""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from connector.store.base import NewMessage, Store
from connector.store.postgres import PostgresStore
from connector.store.sqlite import SqliteStore

PROCESSES = 4
REQUESTS = 60
NOW = 1_800_000_000.0


def open_store(target: str) -> Store:
    if target.startswith("postgresql://"):
        return PostgresStore(target, min_size=1, max_size=4)
    return SqliteStore(Path(target))


async def claim_all(target: str, request_ids: list[str], start: Any) -> list[str]:
    store = open_store(target)
    await store.open()  # every process migrates at once too
    try:
        start.wait()  # then all claim together
        won: list[str] = []

        async def claim(request_id: str) -> None:
            message = NewMessage(
                id=uuid.uuid4().hex, request_id=request_id, vendor="twilio",
                sealed_settings=b"s", sender="MyBrand", to_number="+447911123456",
                custom_data="cd", callback_url="https://r", metadata=None, segments=1,
                encoding="gsm7", claimed_until=NOW + 15, claim_key=f"t|{request_id}")
            if (await store.claim(message, NOW)).claimed:
                won.append(request_id)

        # Several claims in flight per process as well, as a web worker would have.
        await asyncio.gather(*(claim(r) for r in request_ids))
        return won
    finally:
        await store.close()


def child(target: str, request_ids: list[str], start: Any, results: Any) -> None:
    results.put(asyncio.run(claim_all(target, request_ids, start)))


def run_processes(target: str) -> Counter[str]:
    ctx = multiprocessing.get_context("spawn")
    request_ids = [f"req-{i}" for i in range(REQUESTS)]
    start, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=child, args=(target, request_ids, start, results))
             for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    try:
        wins: Counter[str] = Counter()
        for _ in procs:
            wins.update(results.get(timeout=60))
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    return wins


def test_one_claim_wins_per_request_id_on_one_sqlite_file(tmp_path: Path) -> None:
    wins = run_processes(str(tmp_path / "connector.db"))
    assert wins == Counter({f"req-{i}": 1 for i in range(REQUESTS)})


def test_one_claim_wins_per_request_id_on_postgresql(pg_dsn: str) -> None:
    wins = run_processes(pg_dsn)
    assert wins == Counter({f"req-{i}": 1 for i in range(REQUESTS)})
