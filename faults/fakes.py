"""The fault suite's stand-ins, in one process of their own: a Twilio Messages API that counts
every create call per request_id and injects faults on demand, then fires signed `sent` and
`delivered` callbacks (retrying them while the connector cannot take them); and a report
receiver that records every POST (also the ones it refuses) and can answer 503 or stop
listening altogether.

    python faults/fakes.py

prints one JSON line with its three ports (vendor, receiver, control) and serves until SIGTERM.
The control port answers `GET /_stats`, `GET /_state` and takes `POST /_vendor`,
`POST /_receiver` (JSON) to change behaviour; see `Vendor.configure`, `Receiver.configure`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import aiohttp
import httptools
import jwt
import uvloop

sys.path.insert(0, os.environ.get("FAULTS_CONNECTOR_DIR") or str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import shared

from connector.tokens import CallbackTokens
from connector.vendors.twilio import signature

HOST = "127.0.0.1"


class Reply:
    def __init__(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
                 ) -> None:
        self.status, self.body, self.headers = status, body, headers or {}


RESET = None  # a handler returning this aborts the connection (TCP RST, no answer)
Handler = Callable[[str, str, str, dict[str, str], bytes], Awaitable[Reply | None]]


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(body).encode(), headers)


class _Conn(asyncio.Protocol):
    """HTTP/1.1 keep-alive, one request at a time, async handlers (they may sleep or reset)."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.queue: asyncio.Queue[tuple[str, str, dict[str, str], bytes, bool]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.listener.conns.add(self)
        self.task = asyncio.get_running_loop().create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.conns.discard(self)
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.abort()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        self.queue.put_nowait((method, self.url.decode("latin-1"), self.headers,
                               b"".join(self.body), self.parser.should_keep_alive()))
        self.url, self.headers, self.body = b"", {}, []

    async def _serve(self) -> None:
        while True:
            method, url, headers, body, keep = await self.queue.get()
            path, _, query = url.partition("?")
            try:
                reply = await self.listener.handler(method, path, query, headers, body)
            except Exception as exc:  # a fake's bug must show, not hang the client
                reply = _json(500, {"fake_error": repr(exc)})
            if self.transport is None or self.transport.is_closing():
                return
            if reply is RESET:
                self.abort()
                return
            extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
            self.transport.write(
                f"HTTP/1.1 {reply.status} X\r\nContent-Type: application/json\r\n{extra}"
                f"Content-Length: {len(reply.body)}\r\n\r\n".encode("latin-1") + reply.body)
            if not keep:
                self.transport.close()
                return

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class Listener:
    """One listening port that can stop listening (connection refused) and come back on it."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.port = 0
        self.server: asyncio.Server | None = None
        self.conns: set[_Conn] = set()

    async def open(self) -> None:
        if self.server is not None:
            return
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Conn(self), HOST, self.port,
                                               reuse_address=True, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Refuse new connections and drop the open ones (keep-alive clients see a reset)."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for conn in list(self.conns):
            conn.abort()


# ---------------------------------------------------------------- vendor


class Vendor:
    """Twilio's create-message call with faults per request_id, and signed callbacks."""

    FAULTS = ("slow", "500", "502", "503", "429", "timeout_before", "timeout_after",
              "reset_before", "reset_after")

    def __init__(self) -> None:
        self.listener = Listener(self.handle)
        self.tokens = CallbackTokens(shared.SECRET_KEY)
        self.calls: list[dict[str, Any]] = []  # every authenticated create call
        self.plan: dict[str, list[str]] = {}  # rid -> faults for its 1st, 2nd, ... call
        self.seen: Counter[str] = Counter()  # create calls per rid
        self.delay = 0.0  # every normal create waits this long before answering
        self.slow = 0.3
        self.hold = 2.0  # how long a "timeout" holds the request (above the vendor timeout)
        self.retry_after = "1"
        self.callback_delay = 0.0
        self.callback_retry_for = 180.0
        self.sids = 0
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.cb: Counter[str] = Counter()  # callback attempts by result
        self.cb_pending = 0
        self.cb_given_up: list[dict[str, Any]] = []
        self.session: aiohttp.ClientSession | None = None

    def configure(self, ask: dict[str, Any]) -> None:
        if ask.get("reset"):
            self.calls.clear()
            self.plan.clear()
            self.seen.clear()
            self.cb.clear()
            self.cb_given_up.clear()
        for rid, faults in ask.get("plan", {}).items():
            unknown = set(faults) - set(self.FAULTS)
            if unknown:
                raise ValueError(f"unknown faults {unknown}")
            self.plan[rid] = list(faults)
        for name in ("delay", "slow", "hold", "callback_delay", "callback_retry_for"):
            if name in ask:
                setattr(self, name, float(ask[name]))
        if "retry_after" in ask:
            self.retry_after = str(ask["retry_after"])

    async def handle(self, method: str, path: str, query: str, headers: dict[str, str],
                     body: bytes) -> Reply | None:
        if method != "POST" or path != shared.MESSAGES_PATH:
            return _json(404, {"code": 20404, "message": "not found", "status": 404})
        if headers.get("authorization") != shared.BASIC:
            return _json(401, {"code": 20003, "message": "Authenticate", "status": 401})
        form = dict(parse_qsl(body.decode(), keep_blank_values=True))
        rid = shared.rid_of(form.get("Body", "")) or "-"
        callback = form.get("StatusCallback", "")
        token = unquote(dict(parse_qsl(urlsplit(callback).query)).get("m", ""))
        message_id = self.tokens.unsign(token) if token else None
        n = self.seen[rid]
        self.seen[rid] += 1
        faults = self.plan.get(rid, [])
        fault = faults[n] if n < len(faults) else "none"
        call = {"rid": rid, "message_id": message_id, "t": time.time(), "fault": fault,
                "created": False, "sid": None, "to": form.get("To")}
        self.calls.append(call)
        if fault in ("500", "502", "503"):
            code = {"500": 20500, "502": 20500, "503": 20503}[fault]
            return _json(int(fault), {"code": code, "message": "Service unavailable",
                                      "more_info": "", "status": int(fault)})
        if fault == "429":
            return _json(429, {"code": 20429, "message": "Too Many Requests", "more_info": "",
                               "status": 429}, {"Retry-After": self.retry_after})
        if fault == "reset_before":
            return RESET
        if fault == "timeout_before":
            await asyncio.sleep(self.hold)
            return RESET
        if fault == "slow":
            await asyncio.sleep(self.slow)
        elif fault == "none" and self.delay:
            await asyncio.sleep(self.delay)
        reply = self._create(call, form, callback)
        if fault == "reset_after":
            return RESET
        if fault == "timeout_after":
            await asyncio.sleep(self.hold)
            return RESET
        return reply

    def _create(self, call: dict[str, Any], form: dict[str, str], callback: str) -> Reply:
        self.sids += 1
        sid = f"SM{self.sids:08d}{uuid.uuid4().hex[:24]}"
        call["created"], call["sid"] = True, sid
        sender = form.get("From") or form.get("MessagingServiceSid", "")
        if callback:
            self.cb_pending += 1
            self.queue.put_nowait({"url": callback, "sid": sid, "to": form.get("To", ""),
                                   "from": sender, "rid": call["rid"]})
        now = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
        return _json(201, {
            "sid": sid, "account_sid": shared.SID, "status": "queued", "to": form.get("To"),
            "from": sender, "body": form.get("Body"), "num_segments": "1",
            "direction": "outbound-api", "api_version": "2010-04-01", "date_created": now,
            "error_code": None, "error_message": None, "price": None,
            "uri": f"{shared.MESSAGES_PATH[:-5]}/{sid}.json"})

    async def callbacks(self) -> None:
        while True:
            job = await self.queue.get()
            try:
                if self.callback_delay:
                    await asyncio.sleep(self.callback_delay)
                for status in ("sent", "delivered"):
                    if not await self._callback(job, status):
                        break
            finally:
                self.cb_pending -= 1

    async def _callback(self, job: dict[str, Any], status: str) -> bool:
        """POST one signed status callback; retried on 5xx and network errors (the message's
        callback URL names one connector process, which may be down for a moment)."""
        assert self.session is not None
        params = [("AccountSid", shared.SID), ("ApiVersion", "2010-04-01"),
                  ("From", job["from"]), ("MessageSid", job["sid"]),
                  ("MessageStatus", status), ("SmsSid", job["sid"]), ("SmsStatus", status),
                  ("To", job["to"])]
        headers = {"X-Twilio-Signature": signature(shared.TOKEN, job["url"], params),
                   "User-Agent": "TwilioProxy/1.1"}
        deadline = time.monotonic() + self.callback_retry_for
        pause = 0.1
        while True:
            try:
                async with self.session.post(job["url"], data=params, headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=5)) as answer:
                    await answer.read()
                    result = str(answer.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                result = type(exc).__name__
            self.cb[f"{status}:{result}"] += 1
            if result.startswith("2"):
                return True
            if result in ("403", "400", "404"):  # refused for good: the connector's verdict
                self.cb_given_up.append({**job, "status": status, "result": result})
                return False
            if time.monotonic() > deadline:
                self.cb_given_up.append({**job, "status": status, "result": result})
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    def stats(self) -> dict[str, Any]:
        return {"calls": len(self.calls), "created": sum(c["created"] for c in self.calls),
                "callbacks_pending": self.cb_pending, "callback_results": dict(self.cb),
                "callbacks_given_up": len(self.cb_given_up),
                "listening": self.listener.server is not None}


# ---------------------------------------------------------------- receiver


class Receiver:
    """`POST /reports/{name}`: every POST recorded with what it was answered."""

    def __init__(self) -> None:
        self.listener = Listener(self.handle)
        self.mode = "ok"  # ok | 503 | refuse
        self.names: dict[str, str] = {}  # per report name: ok | 503 (wins over the mode)
        self.retry_after: str | None = None
        self.posts: list[dict[str, Any]] = []
        self.stats_: Counter[str] = Counter()
        self._good_token = ""

    async def configure(self, ask: dict[str, Any]) -> None:
        if ask.get("reset"):
            self.posts.clear()
            self.stats_.clear()
        if "names" in ask:
            self.names.update(ask["names"])
        if "retry_after" in ask:
            self.retry_after = ask["retry_after"]
        mode = ask.get("mode")
        if mode is not None:
            self.mode = mode
            if mode == "refuse":
                await self.listener.close()
            else:
                await self.listener.open()

    def _authorised(self, header: str) -> bool:
        if header and header == self._good_token:
            return True
        try:
            claims = jwt.decode(header, shared.REPORT_SECRET, algorithms=["HS256"],
                                options={"require": ["iat"]})
        except jwt.PyJWTError:
            return False
        if abs(time.time() - float(claims["iat"])) > 120:
            return False
        self._good_token = header
        return True

    async def handle(self, method: str, path: str, query: str, headers: dict[str, str],
                     body: bytes) -> Reply | None:
        if method != "POST" or not path.startswith("/reports/"):
            return _json(404, {})
        name = path[len("/reports/"):]
        self.stats_["posts"] += 1
        if not self._authorised(headers.get("authorization", "")):
            self.stats_["auth_failures"] += 1
            return _json(401, {"error": "unauthorized"})
        try:
            events = json.loads(body)
            assert isinstance(events, list) and all(isinstance(e, dict) for e in events)
        except (ValueError, AssertionError):
            self.stats_["bad_bodies"] += 1
            return _json(400, {"error": "not a JSON array of objects"})
        mode = self.names.get(name, self.mode)
        status = 503 if mode == "503" else 200
        record = []
        for e in events:
            rid = e.get("request_id") or ""
            ok = e.get("custom_data") == shared.custom_data(rid)
            if not ok:
                self.stats_["custom_data_mismatches"] += 1
            record.append([e.get("event_id"), rid, e.get("message_id"), e.get("status"),
                           e.get("error_code"), ok])
        self.posts.append({"t": time.time(), "name": name, "status": status, "events": record})
        self.stats_["events_200" if status == 200 else "events_refused"] += len(events)
        if status == 503:
            extra = {"Retry-After": self.retry_after} if self.retry_after else {}
            return _json(503, {"error": "scripted outage"}, extra)
        return _json(200, {"accepted": len(events)})

    def stats(self) -> dict[str, Any]:
        return {"mode": self.mode, "names": self.names, **self.stats_}


# ---------------------------------------------------------------- control


class Control:
    def __init__(self, vendor: Vendor, receiver: Receiver) -> None:
        self.vendor, self.receiver = vendor, receiver
        self.listener = Listener(self.handle)

    async def handle(self, method: str, path: str, query: str, headers: dict[str, str],
                     body: bytes) -> Reply | None:
        try:
            if path == "/_stats":
                return _json(200, {"vendor": self.vendor.stats(),
                                   "receiver": self.receiver.stats()})
            if path == "/_state":
                return _json(200, {"calls": self.vendor.calls, "posts": self.receiver.posts,
                                   "callbacks_given_up": self.vendor.cb_given_up,
                                   "vendor": self.vendor.stats(),
                                   "receiver": self.receiver.stats()})
            if path == "/_vendor" and method == "POST":
                ask = json.loads(body or b"{}")
                self.vendor.configure(ask)
                if "listening" in ask:
                    if ask["listening"]:
                        await self.vendor.listener.open()
                    else:
                        await self.vendor.listener.close()
                return _json(200, self.vendor.stats())
            if path == "/_receiver" and method == "POST":
                await self.receiver.configure(json.loads(body or b"{}"))
                return _json(200, self.receiver.stats())
        except ValueError as exc:
            return _json(400, {"error": str(exc)})
        return _json(404, {})


async def main() -> None:
    vendor, receiver = Vendor(), Receiver()
    control = Control(vendor, receiver)
    for listener in (vendor.listener, receiver.listener, control.listener):
        await listener.open()
    vendor.session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256), trust_env=False,
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    workers = [asyncio.create_task(vendor.callbacks()) for _ in range(48)]
    print(json.dumps({"vendor": vendor.listener.port, "receiver": receiver.listener.port,
                      "control": control.listener.port}), flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    for task in workers:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*workers)
    await vendor.session.close()


if __name__ == "__main__":
    uvloop.run(main())
