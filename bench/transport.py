"""Benchmark outbound HTTP transports for the vendor call against a local vendor stand-in."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import metadata
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
import httpx
import uvloop
from httpx_aiohttp import AiohttpTransport

Send = Callable[[], Awaitable[int]]
VARIANTS = ("httpx", "httpx+aiohttp-transport", "aiohttp", "aiohttp+httpx-adapter",
            "connector.http", "pyreqwest", "rnet", "pyqwest", "curl_cffi")
# Clients with compiled cores (Rust or libcurl) that issue #11 asks to weigh against aiohttp;
# each is measured only when installed (`pip install pyreqwest rnet pyqwest curl_cffi`).
COMPILED = ("pyreqwest", "rnet", "pyqwest", "curl_cffi")
WARMUP = 2000
# One pool size for all: httpx's default keeps only 20 idle connections, so with 64 in
# flight (a)/(b) would keep reconnecting and we'd measure TCP setup, not the client.
POOL = 100
LIMITS = httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL)
# Body and auth header are built once and shared, so they cost every variant the same.
BODY = urlencode({"To": "+420777123456", "From": "Bloomreach", "Reference": "msg-0001",
                  "Body": "Your verification code is 482913. " * 2,
                  "StatusCallback": "https://connector.example.com/dlr/abc123"}).encode()
AUTH = "Basic " + base64.b64encode(b"ACxxxxxxxxxxxxxxxx:secret-token-123").decode()
HEADERS = {"Authorization": AUTH, "Content-Type": "application/x-www-form-urlencoded"}
REPLY = json.dumps({"sid": "SM" + "0" * 32, "status": "queued", "to": "+420777123456",
                    "from": "Bloomreach", "date_created": "2025-01-01T00:00:00Z",
                    "error_code": None, "num_segments": "1", "api_version": "2010-04-01",
                    "uri": "/2010-04-01/Accounts/AC0/Messages/SM0.json",
                    "body": "Your verification code is 482913."}).encode()


async def vendor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    # Raw ASGI, no framework: the stand-in must be cheap so the client is what we measure.
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": REPLY})


def serve(fd: int) -> None:
    import uvicorn  # only the server child needs it

    config = uvicorn.Config(vendor_app, loop="uvloop", http="httptools", lifespan="off",
                            access_log=False, log_level="warning")
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


class AiohttpAdapter:
    """Variant (d): httpx.Request in, httpx.Response out, aiohttp on the wire."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def send(self, request: httpx.Request) -> httpx.Response:
        async with self.session.request(request.method, str(request.url),
                                        headers=request.headers.multi_items(),
                                        data=request.content, allow_redirects=False) as r:
            body = await r.read()
        # The session has auto_decompress=False: httpx decodes Content-Encoding exactly once.
        return httpx.Response(r.status, headers=r.raw_headers, content=body, request=request)


@contextlib.asynccontextmanager
async def client_for(name: str, url: str) -> AsyncIterator[Send]:
    if name == "connector.http":
        # (e) what the connector runs: http.request() builds the seam's Request from the form
        # (body encoded up front), HttpClient sends it over pyreqwest.
        from connector import http
        form = dict(parse_qsl(BODY.decode()))
        client = http.HttpClient(limit=POOL)
        await client.start()
        try:
            async def send_connector() -> int:
                request = http.request("POST", url, {"Authorization": AUTH}, form=form)
                return (await client.send(request, 10.0, what="bench")).status_code
            yield send_connector
        finally:
            await client.close()
        return
    if name in COMPILED:
        async with compiled_client(name, url) as send:
            yield send
        return
    if name.startswith("httpx"):
        tr = AiohttpTransport(limits=LIMITS) if name == "httpx+aiohttp-transport" else None
        async with httpx.AsyncClient(limits=LIMITS, transport=tr, timeout=10.0) as client:
            async def send_httpx() -> int:
                return (await client.post(url, content=BODY, headers=HEADERS)).status_code
            yield send_httpx
        return
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=POOL),
                                     auto_decompress=False,
                                     timeout=aiohttp.ClientTimeout(total=10)) as session:
        adapter = AiohttpAdapter(session)

        async def send_aiohttp() -> int:
            async with session.post(url, data=BODY, headers=HEADERS) as r:
                await r.read()
                return r.status

        async def send_adapter() -> int:
            request = httpx.Request("POST", url, content=BODY, headers=HEADERS)
            return (await adapter.send(request)).status_code
        yield send_aiohttp if name == "aiohttp" else send_adapter


@contextlib.asynccontextmanager
async def compiled_client(name: str, url: str) -> AsyncIterator[Send]:
    # The same form body and headers as the others, one pooled client, no redirects.
    if name == "pyreqwest":
        from pyreqwest.client import ClientBuilder

        async with ClientBuilder().max_connections(POOL).follow_redirects(False).build() as c:
            async def send_pyreqwest() -> int:
                response = await c.post(url).headers(HEADERS).body_bytes(BODY).build().send()
                await response.bytes()
                return int(response.status)
            yield send_pyreqwest
    elif name == "rnet":
        import rnet

        client = rnet.Client(allow_redirects=False)

        async def send_rnet() -> int:
            response = await client.post(url, body=BODY, headers=HEADERS)
            await response.bytes()
            return int(response.status_code.as_int())
        yield send_rnet
    elif name == "pyqwest":
        import pyqwest

        qclient = pyqwest.Client()

        async def send_pyqwest() -> int:
            response = await qclient.post(url, headers=HEADERS, content=BODY)
            return int(response.status)
        yield send_pyqwest
    else:
        from curl_cffi.requests import AsyncSession

        async with AsyncSession(max_clients=POOL) as session:
            async def send_curl() -> int:
                response = await session.post(url, data=BODY, headers=HEADERS,
                                              allow_redirects=False)
                return int(response.status_code)
            yield send_curl


def installed(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


async def drive(send: Send, count: int, seconds: float, conc: int) -> dict[str, float]:
    # `conc` long-lived workers == a semaphore of `conc`, minus per-request task creation.
    lat: list[float] = []
    left, deadline = count, time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal left
        while left > 0 and time.perf_counter() < deadline:
            left -= 1
            t0 = time.perf_counter()
            if (status := await send()) != 201:
                raise RuntimeError(f"unexpected status {status}")
            lat.append(time.perf_counter() - t0)

    gc.collect()  # every run starts from the same heap state
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(conc))), seconds + 30)
    cpu, wall, n = time.process_time() - cpu0, time.perf_counter() - wall0, len(lat)
    lat.sort()
    return {"requests": n, "rps": n / wall, "cpu_us_per_req": cpu / n * 1e6,
            "client_core_util": cpu / wall, "p50_ms": lat[n // 2] * 1e3,
            "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1e3}


async def bench(url: str, args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    variants = [v for v in args.variants if v not in COMPILED or installed(v)]
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for i in range(args.runs):  # interleave variants so drift hits all of them alike
        for name in variants:
            async with client_for(name, url) as send:
                await drive(send, WARMUP, args.seconds, args.concurrency)  # fill pool, warm up
                res = await drive(send, args.requests, args.seconds, args.concurrency)
            runs[name].append(res)
            print(f"run {i + 1} {name:24} {res['rps']:7.0f} req/s "
                  f"{res['cpu_us_per_req']:7.1f} us/req", file=sys.stderr)
    return runs


async def wait_ready(url: str) -> None:
    async with httpx.AsyncClient(timeout=1.0) as client:
        for _ in range(100):
            with contextlib.suppress(httpx.HTTPError):
                if (await client.post(url, content=b"x")).status_code == 201:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("vendor stand-in did not come up")


def version(pkg: str) -> str:
    # sniffio is no longer pulled in by anyio, yet httpcore tries to import it on every lock
    # it creates; whether it is installed changes httpx's numbers a lot, so record it.
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "absent"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--json", help="write JSON here instead of stdout")
    p.add_argument("--variants", type=lambda raw: raw.split(","), default=list(VARIANTS),
                   help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--serve-fd", type=int, help=argparse.SUPPRESS)  # internal: server child
    args = p.parse_args()
    if args.serve_fd is not None:
        return serve(args.serve_fd)
    # The parent binds and hands the socket over: no free-port race, early connects just queue.
    sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/2010-04-01/Accounts/AC0/Messages.json"
    server = subprocess.Popen([sys.executable, __file__, "--serve-fd", str(sock.fileno())],
                              pass_fds=[sock.fileno()])
    sock.close()
    load_before = os.getloadavg()  # others share these 2 cores: record how busy they were
    try:
        uvloop.run(wait_ready(url))
        runs = uvloop.run(bench(url, args))
    finally:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    med = {v: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for v, rs in runs.items()}
    print("| variant | req/s | client CPU µs/req | client core util | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for v, m in med.items():
        print(f"| {v} | {m['rps']:.0f} | {m['cpu_us_per_req']:.1f} | "
              f"{m['client_core_util']:.2f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} |")
    pkgs = ("httpx", "httpcore", "anyio", "sniffio", "httpx-aiohttp", "aiohttp", "yarl",
            "uvicorn", "httptools", "uvloop")
    machine = {"nproc": os.cpu_count(), "python": platform.python_version(),
               "packages": {k: version(k) for k in pkgs},
               "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    params = {k: getattr(args, k) for k in ("requests", "seconds", "runs", "concurrency")}
    params |= {"warmup": WARMUP, "pool": POOL, "body_bytes": len(BODY), "reply_bytes": len(REPLY)}
    out = json.dumps({"machine": machine, "params": params, "median": med, "runs": runs}, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(out + "\n")
    else:
        print(out)


if __name__ == "__main__":
    main()
