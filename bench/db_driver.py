"""Benchmark PostgreSQL drivers (asyncpg, psycopg 3) on the store's claim + outcome hot path."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import re
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import metadata
from typing import Any

import asyncpg
import uvloop
from psycopg_pool import AsyncConnectionPool

from connector.model import Status
from connector.store.base import NewMessage, SendOutcome, StoredResponse, no_report
from connector.store.postgres import PostgresStore

# One message: claim it, then record the vendor's answer (what a /sms/send costs the store).
Op = Callable[[int], Awaitable[None]]
# "store": the same two calls through PostgresStore (asyncpg), to show what it adds on top.
VARIANTS = ("asyncpg", "psycopg", "store")
APP_NAME = {"asyncpg": "bench-asyncpg", "psycopg": "bench-psycopg", "store": "connector"}
WARMUP = 500
LOOPBACK = re.compile(r"postgres(ql)?://([^@/]*@)?(127\.0\.0\.1|localhost|\[::1\])(:\d+)?/?$")
# The store's two hot-path statements, parameters each used once and in order so the same
# text serves psycopg once $n becomes %s.
CLAIM = (
    "INSERT INTO messages (id, request_id, claim_key, vendor, sealed_settings, sender, "
    "to_number, custom_data, callback_url, metadata, status, segments, encoding, claimed_until, "
    "created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,'pending',$11,$12,$13,$14,$15) "
    "ON CONFLICT (claim_key) DO NOTHING"
)
OUTCOME = (
    "UPDATE messages SET response_status = $1, response_body = $2, response_retry_after = $3, "
    "claimed_until = 0, ambiguous = $4, parts = $5, "
    "status = CASE WHEN status = 'pending' THEN $6 ELSE status END, "
    "vendor_message_id = COALESCE(vendor_message_id, $7), segments = COALESCE($8, segments), "
    "from_number = COALESCE(from_number, $9), error_code = COALESCE($10, error_code), "
    "error_message = COALESCE($11, error_message), errored_at = COALESCE(errored_at, $12), "
    "claim_key = CASE WHEN $13 THEN NULL ELSE claim_key END, updated_at = $14 WHERE id = $15"
)
SEALED = os.urandom(120)
BODY = json.dumps({"message_id": "0" * 32, "request_id": "r", "vendor": "twilio",
                   "vendor_message_id": "SM" + "0" * 32, "status": "accepted", "segments": 1,
                   "encoding": "gsm7"}).encode()


def claim_args(run: str, i: int) -> tuple[Any, ...]:
    now = time.time()
    mid, rid = f"{run}-{i:06d}", f"req-{run}-{i:06d}"
    return (mid, rid, rid, "twilio", SEALED, "MyBrand", "+447911123456", "cd" * 20,
            "https://platform.example.com/reports", None, 1, "gsm7", now + 15, now, now)


def outcome_args(run: str, i: int) -> tuple[Any, ...]:
    return (200, BODY, None, False, 1, "accepted", f"SM{i:032d}", 1, None, None, None, None,
            False, time.time(), f"{run}-{i:06d}")


@contextlib.asynccontextmanager
async def driver(name: str, dsn: str, pool: int) -> AsyncIterator[Op]:
    run = uuid.uuid4().hex[:8]
    if name == "asyncpg":
        async def no_reset(conn: asyncpg.Connection) -> None:
            pass  # as the store does: it leaves no session state to clear

        async with asyncpg.create_pool(dsn, min_size=pool, max_size=pool, reset=no_reset,
                                       server_settings={"application_name": f"bench-{name}"},
                                       ) as p:
            async def op_asyncpg(i: int) -> None:
                async with p.acquire(timeout=5) as conn:
                    await conn.execute(CLAIM, *claim_args(run, i))
                    await conn.execute(OUTCOME, *outcome_args(run, i))

            yield op_asyncpg
        return
    if name == "store":
        store = PostgresStore(dsn, min_size=pool, max_size=pool)
        await store.open()
        accepted = SendOutcome(response=StoredResponse(status=200, body=BODY),
                              status=Status.ACCEPTED, vendor_message_id="SM" + "0" * 32,
                              segments=1)

        async def op_store(i: int) -> None:
            now = time.time()
            mid, rid = f"{run}-{i:06d}", f"req-{run}-{i:06d}"
            message = NewMessage(id=mid, request_id=rid, vendor="twilio", sealed_settings=SEALED,
                                 sender="MyBrand", to_number="+447911123456",
                                 custom_data="cd" * 20,
                                 callback_url="https://platform.example.com/reports",
                                 metadata=None, segments=1, encoding="gsm7",
                                 claimed_until=now + 15, claim_key=f"bench|{rid}")
            if not (await store.claim(message, now)).claimed:
                raise RuntimeError("claim lost on a fresh request_id")
            await store.record_outcome(mid, accepted, time.time(), no_report)

        try:
            yield op_store
        finally:
            await store.close()
        return
    claim, outcome = (re.sub(r"\$\d+", "%s", q) for q in (CLAIM, OUTCOME))
    # autocommit: one statement is its own transaction, as with asyncpg; prepare_threshold=0
    # prepares on first use, as asyncpg's statement cache does.
    kwargs = {"autocommit": True, "prepare_threshold": 0, "application_name": f"bench-{name}"}
    async with AsyncConnectionPool(dsn, min_size=pool, max_size=pool, kwargs=kwargs,
                                   open=False, timeout=5) as pp:
        await pp.wait()

        async def op_psycopg(i: int) -> None:
            async with pp.connection() as conn:
                await conn.execute(claim, claim_args(run, i))
                await conn.execute(outcome, outcome_args(run, i))

        yield op_psycopg


def backend_cpu(pids: list[int]) -> float:
    """CPU seconds the server's backends for these pids have used (Linux /proc)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def drive(op: Op, count: int, seconds: float, conc: int, start: int = 0
                ) -> dict[str, float]:
    lat: list[float] = []
    counter, deadline = iter(range(start, start + count)), time.perf_counter() + seconds

    async def worker() -> None:
        for i in counter:
            if time.perf_counter() > deadline:
                return
            t0 = time.perf_counter()
            await op(i)
            lat.append(time.perf_counter() - t0)

    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(conc))), seconds + 30)
    cpu, wall, n = time.process_time() - cpu0, time.perf_counter() - wall0, len(lat)
    lat.sort()
    return {"ops": n, "ops_per_s": n / wall, "client_cpu_us_per_op": cpu / n * 1e6,
            "client_core_util": cpu / wall, "p50_ms": lat[n // 2] * 1e3,
            "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1e3}


async def bench(dsn: str, admin: asyncpg.Connection, args: argparse.Namespace
                ) -> dict[str, list[dict[str, float]]]:
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for r in range(args.runs):  # interleaved, so drift on the shared cores hits both alike
        for name in VARIANTS:
            await admin.execute("TRUNCATE messages")
            async with driver(name, dsn, args.pool) as op:
                await drive(op, WARMUP, args.seconds, args.concurrency, start=10**6)
                pids = [row["pid"] for row in await admin.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
                    "AND datname = current_database()", APP_NAME[name])]
                server0 = backend_cpu(pids)
                res = await drive(op, args.count, args.seconds, args.concurrency)
                res["server_cpu_us_per_op"] = (backend_cpu(pids) - server0) / res["ops"] * 1e6
            runs[name].append(res)
            print(f"run {r + 1} {name:8} {res['ops_per_s']:7.0f} ops/s "
                  f"{res['client_cpu_us_per_op']:6.1f} client us/op "
                  f"{res['server_cpu_us_per_op']:6.1f} server us/op", file=sys.stderr)
    return runs


def version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "absent"


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    if not LOOPBACK.match(args.server):
        raise SystemExit("loopback servers only: --server postgresql://127.0.0.1:5432")
    name = f"bench_driver_{uuid.uuid4().hex[:12]}"
    server = args.server.rstrip("/")
    admin = await asyncpg.connect(f"{server}/postgres", timeout=5)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        migrate = PostgresStore(f"{server}/{name}", min_size=1, max_size=1)
        await migrate.open()  # the store's own migrations make the schema
        await migrate.close()
        db = await asyncpg.connect(f"{server}/{name}", timeout=5)
        try:
            load_before = os.getloadavg()  # others share these 2 cores: say how busy they were
            settings = {r["name"]: r["setting"] for r in await db.fetch(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('synchronous_commit', 'fsync', 'shared_buffers', 'server_version')")}
            runs = await bench(f"{server}/{name}", db, args)
        finally:
            await db.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    med = {v: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for v, rs in runs.items()}
    machine = {"nproc": os.cpu_count(), "python": platform.python_version(),
               "packages": {k: version(k) for k in ("asyncpg", "psycopg", "psycopg-binary",
                                                    "psycopg-pool", "uvloop")},
               "server": settings, "loadavg_before": load_before,
               "loadavg_after": os.getloadavg()}
    params = {k: getattr(args, k) for k in ("count", "seconds", "runs", "concurrency", "pool")}
    return {"machine": machine, "params": params | {"warmup": WARMUP}, "median": med,
            "runs": runs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    p.add_argument("--count", type=int, default=5000, help="messages per measured run")
    p.add_argument("--seconds", type=float, default=30.0, help="cap on one measured run")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--pool", type=int, default=10, help="connections (CONNECTOR_DB_POOL_MAX)")
    p.add_argument("--json", help="write JSON here instead of stdout")
    args = p.parse_args()
    result = uvloop.run(amain(args))
    print("| driver | ops/s | client CPU µs/op | server CPU µs/op | client core util "
          "| p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for v, m in result["median"].items():
        print(f"| {v} | {m['ops_per_s']:.0f} | {m['client_cpu_us_per_op']:.1f} | "
              f"{m['server_cpu_us_per_op']:.1f} | {m['client_core_util']:.2f} | "
              f"{m['p50_ms']:.2f} | {m['p99_ms']:.2f} |")
    out = json.dumps(result, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(out + "\n")
    else:
        print(out)


if __name__ == "__main__":
    main()
