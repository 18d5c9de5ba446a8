"""The load generator: one process, uvloop and bench/wire.py's keep-alive client, bounded by
count and time.

Closed loop (`rate` null: `concurrency` requests always in flight) measures saturation; open
loop (`rate` per second) sends on a fixed schedule and times each request from when it was
due, so a stalled server shows up as latency rather than as fewer requests. The parent passes
a JSON spec as the only argument, reads `ready`, writes a line to start, and reads one JSON
line of results.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import sys
import time
from array import array
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import common
import uvloop
import wire

FAILED_KEPT = 10_000  # failed sequence numbers returned to the parent
GRACE = 30.0  # a request still running this long after the deadline is abandoned


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    rate: float | None = spec.get("rate")
    conc = int(spec["concurrency"])
    count = int(spec["count"])
    if rate:
        count = min(count, math.ceil(rate * spec["seconds"]))
    prefix, url, kind = spec["prefix"], spec["url"], spec["kind"]
    headers = dict(spec["headers"])
    callback_url = spec["callback_url"]
    expected = 200 if kind == "send" else 201
    form = common.vendor_form(callback_url)
    client = wire.Client(url, headers, timeout=GRACE)
    target = urlsplit(url).path
    lat, lag = array("d"), array("d")
    statuses: Counter[str] = Counter()
    failed: list[int] = []
    errors: list[str] = []
    next_seq = 0
    first_ts = last_ts = 0.0

    # Connect up front, so sending starts on warm connections.
    await asyncio.gather(*(client.request(client.encode("GET", "/_none", b""))
                           for _ in range(min(conc, 256))), return_exceptions=True)
    try:
        print("ready", flush=True)
        sys.stdin.readline()  # the parent's go: it reads the servers' CPU counters first
        gc.collect()
        cpu0, t0, wall0 = time.process_time(), time.perf_counter(), time.time()
        deadline = t0 + spec["seconds"]

        async def worker() -> None:
            nonlocal next_seq, last_ts
            while next_seq < count:
                if rate is None and time.perf_counter() >= deadline:
                    return
                seq, next_seq = next_seq, next_seq + 1
                due = t0 + seq / rate if rate else time.perf_counter()
                if (delay := due - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                start = time.perf_counter()
                if kind == "send":
                    rid = common.request_id(prefix, seq, int(time.time() * 1e6))
                    body = common.send_body(rid, seq, callback_url)
                else:
                    body = form
                try:
                    status = str((await client.request(client.encode("POST", target, body)))[0])
                except (OSError, TimeoutError) as exc:
                    status = type(exc).__name__
                    if len(errors) < 5:
                        errors.append(f"{status}: {exc}")
                end = time.perf_counter()
                statuses[status] += 1
                if status != str(expected) and len(failed) < FAILED_KEPT:
                    failed.append(seq)
                lat.append(end - due)
                lag.append(start - due)
                last_ts = time.time()

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(conc))),
                               spec["seconds"] + GRACE * 2)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        first_ts = wall0
    finally:
        client.close()
    ok = statuses[str(expected)]
    return {
        "sent": next_seq, "ok": ok, "statuses": dict(statuses), "errors": errors,
        "failed": failed,
        "failed_truncated": next_seq - ok > len(failed), "wall_s": round(wall, 4),
        "rps": round(ok / wall, 1) if wall else 0.0,
        "latency": common.percentiles(list(lat)),
        "schedule_lag": common.percentiles(list(lag)),
        "client_cpu_s": round(cpu, 4),
        "client_cpu_us_per_req": round(cpu / max(1, next_seq) * 1e6, 1),
        "client_cores": round(cpu / wall, 3) if wall else 0.0,
        "first_send_ts": first_ts, "last_done_ts": last_ts,
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = uvloop.run(run(spec))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
