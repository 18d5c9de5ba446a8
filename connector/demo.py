"""`connector demo`: the whole round trip on loopback, no account needed.

Starts the connector, a stand-in for Twilio's Messages API that calls back with signed
statuses, and a report receiver that checks the JWT; sends one message and prints its life.
"""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

import httpx
import jwt
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connector.app import create_app
from connector.settings import Settings
from connector.vendors.twilio import signature

SID = "AC" + "d" * 32
TOKEN = "demo-auth-token"
REPORT_SECRET = "demo-report-secret-" + "0" * 24


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Demo:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.started = time.monotonic()
        self.report = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    def log(self, who: str, what: str) -> None:
        self.say(f"{time.monotonic() - self.started:6.3f}s  {who:<9} {what}")

    def vendor(self) -> Starlette:
        """Twilio's create call, then `sent` and `delivered` callbacks signed as Twilio does."""

        async def create(request: Request) -> Response:
            form = dict(parse_qsl((await request.body()).decode()))
            sid = "SM" + uuid.uuid4().hex
            self.log("twilio", f"message {sid} created for {form['To']}")
            task = asyncio.create_task(self._callbacks(sid, form["StatusCallback"], form["To"]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return JSONResponse({"sid": sid, "status": "queued", "num_segments": "1",
                                 "to": form["To"], "from": form.get("From")}, status_code=201)

        return Starlette(routes=[Route(f"/2010-04-01/Accounts/{SID}/Messages.json", create,
                                       methods=["POST"])])

    async def _callbacks(self, sid: str, url: str, to: str) -> None:
        async with httpx.AsyncClient() as client:
            for status in ("sent", "delivered"):
                await asyncio.sleep(0.3)
                params = [("MessageSid", sid), ("MessageStatus", status),
                          ("AccountSid", SID), ("To", to)]
                answer = await client.post(url, data=dict(params), headers={
                    "X-Twilio-Signature": signature(TOKEN, url, params)})
                self.log("twilio", f"status callback '{status}' -> HTTP {answer.status_code}")

    def receiver(self) -> Starlette:
        async def reports(request: Request) -> Response:
            claims = jwt.decode(request.headers["authorization"], REPORT_SECRET,
                                algorithms=["HS256"])
            events = json.loads(await request.body())
            self.log("platform", f"report received (JWT ok, iat={claims['iat']}):")
            self.say(json.dumps(events, indent=2))
            self.report.set()
            return Response(status_code=200)

        return Starlette(routes=[Route("/reports", reports, methods=["POST"])])


async def _serve(app: Callable[..., Awaitable[None]], port: int
                 ) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           access_log=False, lifespan="on"))
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises why it could not start
        await asyncio.sleep(0.01)
    return server, task


async def run(say: Callable[[str], None] = print, wait: float = 10.0) -> bool:
    demo = Demo(say)
    ports = {name: _port() for name in ("connector", "vendor", "receiver")}
    with tempfile.TemporaryDirectory() as data:
        settings = Settings.from_env({
            "CONNECTOR_DATA_DIR": data, "CONNECTOR_PORT": str(ports["connector"]),
            "CONNECTOR_REPORT_SECRET": REPORT_SECRET, "CONNECTOR_ALLOW_PRIVATE_NETWORKS": "1",
            "CONNECTOR_ALLOW_HTTP": "1", "CONNECTOR_VENDOR_HOSTS": "127.0.0.1",
            "CONNECTOR_LOG_LEVEL": "warning", "CONNECTOR_REPORT_LINGER": "0",
        })
        servers = [await _serve(demo.vendor(), ports["vendor"]),
                   await _serve(demo.receiver(), ports["receiver"]),
                   await _serve(create_app(settings), ports["connector"])]
        connector = f"http://127.0.0.1:{ports['connector']}"
        body = {"sender": "DemoBrand", "recipient": "00447911123456",
                "message": "Hello from the Channel API connector demo",
                "request_id": f"demo-{uuid.uuid4().hex[:8]}", "custom_data": "campaign=42",
                "callback_url": f"http://127.0.0.1:{ports['receiver']}/reports"}
        demo.log("platform", f"POST {connector}/sms/send {json.dumps(body)}")
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"{connector}/sms/send", json=body, headers={
                "Chan-Account-Sid": SID, "Chan-Auth-Token": TOKEN,
                "Chan-Base-Url": f"http://127.0.0.1:{ports['vendor']}"})
        demo.log("connector", f"answered {answer.status_code} {answer.text}")
        try:
            await asyncio.wait_for(demo.report.wait(), wait)
            delivered = True
        except TimeoutError:
            demo.log("demo", "no report arrived in time")
            delivered = False
        for server, _ in reversed(servers):
            server.should_exit = True
        await asyncio.gather(*(task for _, task in servers))
    return delivered
