"""Benchmark the throttle's buckets: processes hammering one shared limit on every backend.

    .venv/bin/python bench/throttle.py    # about 70 s; --runs 1 --seconds 1 for a smoke run

Each variant runs PROCESSES OS processes (as replicas), each with its own Throttle and
--concurrency tasks calling acquire() on one account as fast as they can. Reported per
variant: acquires/s (admitted or not: each costs the same round trip), client CPU µs per
acquire (all processes' CPU over all acquires), server CPU µs per acquire, p50/p99 latency,
and accuracy: tokens admitted over what the limit allows in the run's window (one full bucket
plus rate x seconds); above 1.00 means the limit was exceeded. Ratios are against the
in-process variant of the same run; each figure is the median of --runs, interleaved so that
drift on shared cores hits every variant alike. Loopback servers only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import re
import statistics
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
import uvloop
from common import percentiles

from connector.errors import VendorThrottled
from connector.store.postgres import PostgresStore
from connector.throttle import Buckets, Throttle
from connector.throttle.postgres import PgBuckets
from connector.throttle.redis import RedisBuckets, client_for

# name -> (backend, option): the PostgreSQL table as migrated (UNLOGGED) and made LOGGED; Redis
# with redis-py's hiredis reply parser and with its pure-Python one.
VARIANTS: dict[str, tuple[str, str]] = {
    "in-process": ("local", ""),
    "postgresql": ("postgresql", "unlogged"),
    "postgresql, logged table": ("postgresql", "logged"),
    "redis (hiredis parser)": ("redis", "hiredis"),
    "redis (python parser)": ("redis", "python"),
}
LOOPBACK = re.compile(r"^(postgres(ql)?|redis)://([^@/]*@)?(127\.0\.0\.1|localhost|\[::1\])"
                      r"(:\d+)?(/\d*)?$")
WARM = "twilio:ACwarm"


async def open_buckets(backend: str, option: str, target: str,
                       stack: contextlib.AsyncExitStack) -> Buckets | None:
    if backend == "postgresql":
        store = PostgresStore(target, min_size=10, max_size=10)  # the default pool
        await store.open()
        stack.push_async_callback(store.close)
        return PgBuckets(store)
    if backend == "redis":
        from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser

        parser = _AsyncHiredisParser if option == "hiredis" else _AsyncRESP2Parser
        return RedisBuckets(client_for(target, parser_class=parser))
    return None


async def hammer(backend: str, option: str, target: str, account: str, rate: float,
                 seconds: float, concurrency: int, start: Any, results: Any) -> None:
    async with contextlib.AsyncExitStack() as stack:
        throttle = Throttle({account: rate, WARM: 1e9},
                            await open_buckets(backend, option, target, stack))
        stack.push_async_callback(throttle.close)
        await asyncio.gather(*(throttle.acquire(WARM) for _ in range(concurrency)))
        admitted, refused, latencies = 0, 0, []

        async def worker(deadline: float) -> None:
            nonlocal admitted, refused
            clock = time.perf_counter
            while (began := clock()) < deadline:
                try:
                    await throttle.acquire(account)
                    admitted += 1
                except VendorThrottled:
                    refused += 1
                latencies.append(clock() - began)

        start.wait()
        cpu0, wall0 = time.process_time(), time.time()
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(worker(deadline) for _ in range(concurrency)))
        results.put({"admitted": admitted, "refused": refused, "began": wall0,
                     "ended": time.time(), "cpu_s": time.process_time() - cpu0,
                     "latencies": latencies})
        start.wait()  # connections stay open until the server's CPU has been read


def child(args: tuple[Any, ...], start: Any, results: Any) -> None:
    uvloop.run(hammer(*args, start, results))


def server_cpu(pids: list[int]) -> float:
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def server_pids(backend: str, pg: str, redis_url: str) -> list[int]:
    if backend == "postgresql":
        conn = await asyncpg.connect(pg, timeout=5)
        try:
            rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = "
                                    "current_database() AND pid <> pg_backend_pid()")
        finally:
            await conn.close()
        return [r["pid"] for r in rows]
    if backend == "redis":
        client = client_for(redis_url)
        try:
            return [int((await client.info("server"))["process_id"])]
        finally:
            await client.aclose()
    return []


def run_variant(name: str, pg: str, redis_url: str, args: argparse.Namespace
                ) -> dict[str, Any]:
    backend, option = VARIANTS[name]
    target = pg if backend == "postgresql" else redis_url
    if backend == "postgresql":
        asyncio.run(_alter(pg, option))
    account = f"twilio:ACbench{uuid.uuid4().hex}"
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(args.processes + 1), ctx.Queue()
    task = (backend, option, target, account, args.rate, args.seconds, args.concurrency)
    procs = [ctx.Process(target=child, args=(task, start, results), daemon=True)
             for _ in range(args.processes)]
    for p in procs:
        p.start()
    start.wait(timeout=60)  # every process connected and warm
    pids = asyncio.run(server_pids(backend, pg, redis_url))
    server0 = server_cpu(pids)
    outs = [results.get(timeout=args.seconds + 60) for _ in procs]
    server = server_cpu(pids) - server0
    start.wait(timeout=60)
    for p in procs:
        p.join(10)
    acquires = sum(o["admitted"] + o["refused"] for o in outs)
    admitted = sum(o["admitted"] for o in outs)
    window = max(o["ended"] for o in outs) - min(o["began"] for o in outs)
    allowed = args.rate + args.rate * window  # one full bucket, then the rate
    return {
        "acquires": acquires, "admitted": admitted, "window_s": round(window, 3),
        "acquires_per_s": round(acquires / window), "accuracy": round(admitted / allowed, 3),
        "overshoot": admitted - allowed,
        "client_cpu_us": round(sum(o["cpu_s"] for o in outs) / acquires * 1e6, 1),
        "server_cpu_us": round(server / acquires * 1e6, 1),
        **percentiles([x for o in outs for x in o["latencies"]]),
    }


async def _alter(pg: str, option: str) -> None:
    conn = await asyncpg.connect(pg, timeout=5)
    try:
        await conn.execute(f"ALTER TABLE throttle_buckets SET {option.upper()}")
    finally:
        await conn.close()


async def _database(server: str, name: str, create: bool) -> None:
    admin = await asyncpg.connect(f"{server}/postgres", timeout=5)
    try:
        if create:
            await admin.execute(f'CREATE DATABASE "{name}"')
        else:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    if create:
        store = PostgresStore(f"{server}/{name}", min_size=1, max_size=1)
        await store.open()  # the store's migrations make the table
        await store.close()


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    p.add_argument("--seconds", type=float, default=3.0, help="measured time per variant")
    p.add_argument("--runs", type=int, default=3, help="runs of every variant (median kept)")
    p.add_argument("--processes", type=int, default=2, help="replicas (this machine: 2 cores)")
    p.add_argument("--concurrency", type=int, default=16, help="acquiring tasks per process")
    p.add_argument("--rate", type=float, default=500.0, help="the shared limit, per second")
    p.add_argument("--json", help="write the results here too")
    args = p.parse_args()
    for url in (args.postgres, args.redis):
        if not LOOPBACK.match(url):
            raise SystemExit(f"loopback servers only, not {url.split('@')[-1]}")
    server, name = args.postgres.rstrip("/"), f"bench_throttle_{uuid.uuid4().hex[:12]}"
    asyncio.run(_database(server, name, create=True))
    load = os.getloadavg()
    try:
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        for n in range(args.runs):
            for variant in VARIANTS:
                runs[variant].append(run_variant(variant, f"{server}/{name}", args.redis, args))
                print(f"run {n + 1} {variant}: {runs[variant][-1]}", file=sys.stderr)
    finally:
        asyncio.run(_database(server, name, create=False))
    results = {v: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
               for v, rs in runs.items()}
    base = results["in-process"]
    print(f"{args.processes} processes x {args.concurrency} tasks, one account limited to "
          f"{args.rate:g}/s, median of {args.runs} runs of {args.seconds:g} s; load average "
          f"{load[0]:.1f} before, {os.getloadavg()[0]:.1f} after\n")
    print("| buckets | acquires/s | x in-process | client CPU µs/acquire | x in-process "
          "| server CPU µs/acquire | p50 ms | p99 ms | accuracy |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for variant, r in results.items():
        print(f"| {variant} | {r['acquires_per_s']:,} | "
              f"{r['acquires_per_s'] / base['acquires_per_s']:.3f} | {r['client_cpu_us']:.1f} | "
              f"{r['client_cpu_us'] / base['client_cpu_us']:.0f} | {r['server_cpu_us']:.1f} | "
              f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['accuracy']:.2f} |")
    if args.json:
        machine = {"nproc": os.cpu_count(), "python": platform.python_version(),
                   "loadavg_before": load, "loadavg_after": os.getloadavg(),
                   "packages": {k: version(k) for k in ("redis", "hiredis", "asyncpg", "uvloop")}}
        Path(args.json).write_text(json.dumps(
            {"machine": machine, "params": vars(args) | {"postgres": None, "redis": None},
             "median": results, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
