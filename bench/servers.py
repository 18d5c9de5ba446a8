"""Which HTTP server stack costs least per request: the floor under every inbound call.

    .venv/bin/python bench/servers.py [--seconds S]
    .venv/bin/python bench/servers.py --instructions [--requests N]

Each candidate serves one endpoint that does the same small work (read a ~400-byte JSON body,
decode it with msgspec, answer a short JSON 200) in one process on 127.0.0.1, loaded by
bench/load.py at saturation. Prints requests per second and the server's CPU µs per request,
as ratios to the stack the connector used before this measurement (uvicorn + Starlette with
its exception middlewares and one pass-through middleware).

--instructions counts instead, under valgrind's callgrind, the CPU instructions the server
process spends per keep-alive POST (a vendor-callback-like request on one connection) with
the bare app: uvicorn's httptools protocol, the connector's own (connector/server.py), and a
floor, a minimal httptools protocol that makes one task per request and writes a fixed answer.
Deterministic within about 1%, unlike the wall-clock figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec

HERE = Path(__file__).resolve().parent
CANDIDATES = ("uvicorn+starlette", "uvicorn+router", "uvicorn+asgi",
              "granian+asgi", "granian+rsgi", "aiohttp.web")
PROTOCOLS = ("uvicorn+asgi", "connector+asgi", "floor")
_decode = msgspec.json.Decoder()
_ANSWER = b'{"status":"accepted","message_id":"0123456789abcdef0123456789abcdef"}'
_HEADERS = [(b"content-type", b"application/json"),
            (b"content-length", str(len(_ANSWER)).encode())]


async def _read(receive: Any) -> bytes:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


async def bare(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        return
    body = await _read(receive)
    if scope["path"] == "/sms/send":
        _decode.decode(body)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _ANSWER})


async def bare_rsgi(scope: Any, protocol: Any) -> None:
    """The same work over granian's own interface (RSGI): no ASGI message dicts."""
    body = await protocol()
    if scope.path == "/sms/send":
        _decode.decode(body)
    protocol.response_bytes(200, [("content-type", "application/json")], _ANSWER)


def starlette_app(full: bool) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route, Router

    async def endpoint(request: Request) -> Response:
        _decode.decode(await request.body())
        return Response(_ANSWER, media_type="application/json")

    async def other(request: Request) -> Response:
        return Response(_ANSWER, media_type="application/json")

    routes = [Route("/sms/send", endpoint, methods=["POST"]),
              Route("/{path:path}", other, methods=["GET", "POST"])]
    if not full:
        return Router(routes)

    class PassThrough:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)

    async def failed(request: Request, exc: Exception) -> Response:
        return Response(b"{}", status_code=500)

    app = Starlette(routes=routes, exception_handlers={ValueError: failed, Exception: failed})
    app.add_middleware(PassThrough)
    return app


def aiohttp_main(port: int) -> None:
    from aiohttp import web

    async def endpoint(request: web.Request) -> web.Response:
        if request.path == "/sms/send":
            _decode.decode(await request.read())
        return web.Response(body=_ANSWER, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", endpoint)
    import uvloop
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


class Floor(asyncio.Protocol):
    """The least an httptools server can do per request: parse, one task, a fixed answer."""

    def connection_made(self, transport: Any) -> None:
        import httptools
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.headers: list[tuple[bytes, bytes]] = []

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body = body

    def on_message_complete(self) -> None:
        self.headers = []
        asyncio.get_running_loop().create_task(self.answer())

    async def answer(self) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%b" % (len(_ANSWER), _ANSWER))


def floor_main(port: int) -> None:
    import uvloop

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Floor, "127.0.0.1", port)
        await server.serve_forever()
    uvloop.run(main())


def serve(kind: str, port: int) -> None:
    server, _, app_kind = kind.partition("+")
    if kind == "aiohttp.web":
        aiohttp_main(port)
        return
    if kind == "floor":
        floor_main(port)
        return
    target = {"starlette": "servers:full_app", "router": "servers:router_app",
              "asgi": "servers:bare", "rsgi": "servers:bare_rsgi"}[app_kind]
    if server in ("uvicorn", "connector"):
        import uvicorn

        from connector.server import HttpProtocol
        uvicorn.run(target, host="127.0.0.1", port=port, loop="uvloop",
                    http="httptools" if server == "uvicorn" else HttpProtocol,
                    access_log=False, log_level="warning", app_dir=str(HERE),
                    proxy_headers=False)  # as `connector serve` runs it
    else:
        from granian import Granian
        from granian.constants import Interfaces, Loops
        sys.path.insert(0, str(HERE))
        interface = Interfaces.RSGI if app_kind == "rsgi" else Interfaces.ASGI
        Granian(target, address="127.0.0.1", port=port, interface=interface,
                loop=Loops.uvloop, workers=1, log_access=False, log_enabled=False).serve()


def full_app() -> Any:
    return starlette_app(True)


def router_app() -> Any:
    return starlette_app(False)


def measure(seconds: int) -> list[dict[str, Any]]:
    import procs
    from stage import PY, Stage

    stage = Stage(Path(tempfile.mkdtemp(prefix="servers-")), 64)
    rows = []
    try:
        for kind in CANDIDATES:
            port = procs.free_port()
            process = stage.start_server([PY, __file__, "serve", kind, str(port)], None, port, 1,
                                         "/healthz", stage.tmp / f"{kind}.log")
            if process is None:
                print(f"  {kind}: did not start", flush=True)
                continue
            try:
                url = f"http://127.0.0.1:{port}/sms/send"
                stage.load(f"{kind} warm-up", url, seconds=5, count=3000)
                pids = procs.tree(process.pid)
                meter = procs.CpuMeter({"server": pids})
                result = stage.load(kind, url, seconds=seconds, count=seconds * 50_000,
                                    meter=meter)
                cpu = meter.stop()["server"]["cpu_s"]
                rows.append({"stack": kind, "rps": result["rps"],
                             "cpu_us": round(cpu / max(1, result["ok"]) * 1e6, 1),
                             "ok": result["ok"]})
                print(f"  {kind:<20} {result['rps']:>8,.0f} req/s "
                      f"{rows[-1]['cpu_us']:>7,.1f} µs/request", flush=True)
            finally:
                procs.stop(process)
    finally:
        stage.close()
        procs.stop_all()
    return rows


def _post(port: int, requests: int) -> None:
    """Keep-alive POSTs shaped like a vendor's status callback, one after another, each
    written at once as bench/wire.py's client (the load generator, the fakes) writes them."""
    body = json.dumps({"MessageSid": "SM" + "0" * 32, "MessageStatus": "b" * 180}).encode()
    request = (b"POST /callbacks/twilio/status?m=abc HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Content-Type: application/x-www-form-urlencoded\r\n"
               b"X-Twilio-Signature: " + b"x" * 28 + b"\r\nUser-Agent: TwilioProxy/1.1\r\n"
               b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        for _ in range(requests):
            sock.sendall(request)
            answer = b""
            while not answer.endswith(_ANSWER):
                chunk = sock.recv(65536)
                if not chunk:
                    raise SystemExit("the server closed the connection")
                answer += chunk
            if not answer.startswith(b"HTTP/1.1 200 "):
                raise SystemExit(f"unexpected answer {answer[:40]!r}")


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def count_instructions(kind: str, requests: int) -> int:
    """The server's instructions per request while one connection sends `requests` POSTs."""
    import procs
    from instructions import _control, _instructions
    from stage import PY

    tmp = Path(tempfile.mkdtemp(prefix="servers-instr-"))
    port = procs.free_port()
    process = procs.spawn(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                           f"--callgrind-out-file={tmp / 'callgrind.out'}", PY, __file__,
                           "serve", kind, str(port)], log=tmp / "server.log")
    try:
        if not procs.wait_until(lambda: _accepts(port) or process.poll() is not None, 120):
            raise SystemExit(f"{kind} did not start")
        _post(port, 50)  # warm-up, not counted: imports, caches, the first connection
        _control(process.pid, "--instr=on")
        _post(port, requests)
        _control(process.pid, "--instr=off")
        _control(process.pid, "--dump")
        return round(_instructions(tmp) / requests)
    finally:
        procs.stop(process, timeout=20.0)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
        return
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=6)
    p.add_argument("--instructions", action="store_true",
                   help="count instructions per request under callgrind (protocols only)")
    p.add_argument("--requests", type=int, default=500)
    args = p.parse_args()
    if args.instructions:
        print("| HTTP protocol (bare app) | instructions per request |\n|---|---:|")
        for kind in PROTOCOLS:
            print(f"| {kind} | {count_instructions(kind, args.requests):,} |", flush=True)
        return
    rows = measure(args.seconds)
    if not rows:
        return
    base = rows[0]
    print("\n| stack | req/s | server CPU µs/request | x throughput | x CPU |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['stack']} | {r['rps']:,.0f} | {r['cpu_us']:,.1f} | "
              f"{r['rps'] / base['rps']:.2f}x | {r['cpu_us'] / base['cpu_us']:.2f}x |")


if __name__ == "__main__":
    main()
