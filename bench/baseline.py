"""The yardstick: the least a send endpoint must do, hand-written on the connector's own stack.

msgspec decode, one durable SQLite insert (WAL, synchronous=NORMAL: the connector's default),
one form POST to the vendor over a pooled aiohttp.ClientSession, answer. No dedupe, no
validation beyond the decode, no logging, no metrics. Served by uvicorn with the connector's
flags (httptools, uvloop, no access log). Run: `python bench/baseline.py --port P --workers W
--db PATH`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DB_ENV = "BENCH_BASELINE_DB"
URL_ENV = "BENCH_BASELINE_URL"
SCHEMA = ("CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, request_id TEXT UNIQUE, "
          "sender TEXT, recipient TEXT, custom_data TEXT, callback_url TEXT, created_at REAL)")


class SendBody(msgspec.Struct):
    sender: str
    recipient: str
    message: str
    custom_data: str
    request_id: str | None = None
    callback_url: str | None = None
    metadata: dict[str, Any] | None = None


class Sent(msgspec.Struct):
    sid: str


_body = msgspec.json.Decoder(SendBody)
_sent = msgspec.json.Decoder(Sent)
_json = msgspec.json.Encoder()


def create_app() -> Starlette:
    state: dict[str, Any] = {}
    callbacks = f"{os.environ[URL_ENV]}/callbacks/twilio/status?m="

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db = sqlite3.connect(os.environ[DB_ENV], isolation_level=None, check_same_thread=False,
                             timeout=5.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(SCHEMA)
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256),
                                        auto_decompress=False,
                                        timeout=aiohttp.ClientTimeout(total=10))
        state.update(db=db, session=session)
        try:
            yield
        finally:
            await session.close()
            db.close()

    async def send(request: Request) -> Response:
        try:
            body = _body.decode(await request.body())
        except msgspec.DecodeError:
            return Response(b'{"error":"bad body"}', 400, media_type="application/json")
        headers = request.headers
        sid, token = headers["chan-account-sid"], headers["chan-auth-token"]
        message_id = uuid.uuid4().hex
        state["db"].execute(
            "INSERT INTO messages (id, request_id, sender, recipient, custom_data, callback_url, "
            "created_at) VALUES (?,?,?,?,?,?,?)",
            (message_id, body.request_id, body.sender, body.recipient, body.custom_data,
             body.callback_url, time.time()))
        form = urlencode({"To": "+" + body.recipient.removeprefix("00"), "From": body.sender,
                          "Body": body.message,
                          "StatusCallback": callbacks + message_id})
        auth = aiohttp.BasicAuth(sid, token).encode()
        async with state["session"].post(
            f"{headers['chan-base-url']}/2010-04-01/Accounts/{sid}/Messages.json",
            data=form.encode(),
            headers={"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"},
        ) as reply:
            answer = await reply.read()
        if reply.status != 201:
            return Response(b'{"error":"vendor"}', 502, media_type="application/json")
        return Response(_json.encode({"message_id": message_id, "request_id": body.request_id,
                                      "vendor_message_id": _sent.decode(answer).sid,
                                      "status": "accepted"}),
                        media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(routes=[Route("/sms/send", send, methods=["POST"]),
                             Route("/healthz", healthz)], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--db", required=True)
    args = parser.parse_args()
    # uvicorn's spawned workers read these back
    os.environ[DB_ENV] = args.db
    os.environ[URL_ENV] = f"http://127.0.0.1:{args.port}"
    # Exactly how `connector serve` calls uvicorn, so only the application differs.
    uvicorn.run("baseline:create_app", factory=True, host="127.0.0.1", port=args.port,
                workers=args.workers,
                access_log=False, log_level="warning", loop="uvloop", http="httptools",
                lifespan="on", timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
