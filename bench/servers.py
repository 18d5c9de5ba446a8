"""Which HTTP server stack costs least per request: the floor under every inbound call.

    .venv/bin/python bench/servers.py [--seconds S]

Each candidate serves one endpoint that does the same small work (read a ~400-byte JSON body,
decode it with msgspec, answer a short JSON 200) in one process on 127.0.0.1, loaded by
bench/load.py at saturation. Prints requests per second and the server's CPU µs per request,
as ratios to the stack the connector used before this measurement (uvicorn + Starlette with
its exception middlewares and one pass-through middleware).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec

HERE = Path(__file__).resolve().parent
CANDIDATES = ("uvicorn+starlette", "uvicorn+router", "uvicorn+asgi",
              "granian+asgi", "granian+rsgi", "aiohttp.web")
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


def serve(kind: str, port: int) -> None:
    server, _, app_kind = kind.partition("+")
    if kind == "aiohttp.web":
        aiohttp_main(port)
        return
    target = {"starlette": "servers:full_app", "router": "servers:router_app",
              "asgi": "servers:bare", "rsgi": "servers:bare_rsgi"}[app_kind]
    if server == "uvicorn":
        import uvicorn
        uvicorn.run(target, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                    access_log=False, log_level="warning", app_dir=str(HERE))
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


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
        return
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=6)
    args = p.parse_args()
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
