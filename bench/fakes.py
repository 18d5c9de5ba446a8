"""The benchmark's stand-ins, each in its own process: a fast Twilio (instant 201s, then signed
`sent` and `delivered` callbacks) and a report receiver that checks every custom_data.

Both serve with bench/wire.py (httptools on uvloop, synchronous handlers) and the vendor
calls back with its keep-alive client, so neither fake is what the benchmark measures. Run:
`python bench/fakes.py vendor|receiver --fd N` with a listening socket from the parent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import time
from array import array
from collections import Counter
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, quote_plus, unquote_plus, urlsplit

import common
import jwt
import msgspec
import uvloop
import wire

from connector.vendors.twilio import signature

Answer = tuple[int, bytes]
_json = msgspec.json.Encoder()
CALLBACK_WORKERS = 64  # callbacks in flight at once, over keep-alive connections
_CALLBACK_HEADERS = {"Content-Type": "application/x-www-form-urlencoded",
                     "User-Agent": "TwilioProxy/1.1"}
EXAMPLES = 5
_MESSAGES = common.MESSAGES_PATH.encode()
_READ = frozenset({b"To", b"From", b"MessagingServiceSid", b"StatusCallback"})


def _fields(body: bytes) -> dict[str, str]:
    """The form fields the fake reads (urllib's parse_qsl costs ~60 µs on this body)."""
    out = {}
    for pair in body.split(b"&"):
        name, _, value = pair.partition(b"=")
        if name in _READ:
            out[name.decode()] = unquote_plus(value.decode())
    return out


class Vendor:
    """Twilio's Messages API, as fast as it can be: 201 at once, callbacks from a worker pool."""

    def __init__(self) -> None:
        self.callbacks = True
        self.queue: asyncio.Queue[tuple[str, str, str, str]] = asyncio.Queue()
        self.stats: Counter[str] = Counter()
        self.callback_status: Counter[str] = Counter()
        self.clients: dict[str, wire.Client] = {}  # by host:port
        self.date = formatdate(usegmt=True)

    async def start(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._worker()) for _ in range(CALLBACK_WORKERS)]

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def handle(self, method: bytes, url: bytes, headers: dict[bytes, bytes], body: bytes
               ) -> Answer:
        path, _, query = url.partition(b"?")
        if path == _MESSAGES and method == b"POST":
            return self._create(headers, body)
        if path == b"/_stats":
            return 200, _json.encode(self.snapshot())
        if path == b"/_control":
            self.callbacks = parse_qs(query.decode()).get("callbacks", ["1"])[0] == "1"
            return 200, _json.encode(self.snapshot())
        return 404, b'{"code":20404,"message":"not found","status":404}'

    def _create(self, headers: dict[bytes, bytes], body: bytes) -> Answer:
        if headers.get(b"authorization", b"").decode() != common.BASIC:
            self.stats["refused"] += 1
            return 401, b'{"code":20003,"message":"Authenticate","status":401}'
        form = _fields(body)
        self.stats["sends"] += 1
        sid = f"SM{self.stats['sends']:032x}"
        sender = form.get("From") or form.get("MessagingServiceSid", "")
        callback = form.get("StatusCallback")
        if self.callbacks and callback:
            self.stats["queued"] += 1
            self.queue.put_nowait((callback, sid, form.get("To", ""), sender))
        return 201, _json.encode({
            "sid": sid, "account_sid": common.SID, "status": "queued", "to": form.get("To"),
            "from": sender, "num_segments": "1",
            "direction": "outbound-api", "api_version": "2010-04-01", "date_created": self.date,
            "error_code": None, "error_message": None, "price": None,
            "uri": f"{common.MESSAGES_PATH[:-5]}/{sid}.json",
        })

    async def _worker(self) -> None:
        while True:
            url, sid, to, sender = await self.queue.get()
            parts = urlsplit(url)
            if parts.hostname != "127.0.0.1":  # the benchmark never leaves loopback
                self.callback_status["not_loopback"] += 1
                self.stats["called_back"] += 1
                continue
            client = self.clients.get(parts.netloc)
            if client is None:
                client = self.clients[parts.netloc] = wire.Client(url, _CALLBACK_HEADERS)
            target = f"{parts.path}?{parts.query}" if parts.query else parts.path
            quoted = f"From={quote_plus(sender)}&MessageSid={sid}&SmsSid={sid}&To={quote_plus(to)}"
            for status in ("sent", "delivered"):
                params = [("AccountSid", common.SID), ("ApiVersion", "2010-04-01"),
                          ("From", sender), ("MessageSid", sid), ("MessageStatus", status),
                          ("SmsSid", sid), ("SmsStatus", status), ("To", to)]
                form = (f"AccountSid={common.SID}&ApiVersion=2010-04-01&{quoted}"
                        f"&MessageStatus={status}&SmsStatus={status}").encode()
                signed = {"X-Twilio-Signature": signature(common.TOKEN, url, params)}
                raw = client.encode("POST", target, form, signed)
                try:
                    self.callback_status[str((await client.request(raw))[0])] += 1
                except (OSError, TimeoutError) as exc:
                    self.callback_status[type(exc).__name__] += 1
            self.stats["called_back"] += 1

    def snapshot(self) -> dict[str, Any]:
        return {"callbacks": self.callbacks, **self.stats,
                "pending": self.stats["queued"] - self.stats["called_back"],
                "callback_status": dict(self.callback_status),
                "callback_connections": sum(c.connections for c in self.clients.values())}


class Event(msgspec.Struct):
    event_id: str
    message_id: str
    custom_data: str
    status: str
    request_id: str | None = None


class Track:
    """What came back for one phase's request ids (`prefix`)."""

    def __init__(self) -> None:
        self.delivered: set[int] = set()
        self.by_status: Counter[str] = Counter()
        self.duplicates = 0
        self.mismatches: list[dict[str, str | None]] = []
        self.mismatch_count = 0
        self.latency = array("d")  # send -> delivered report received, seconds
        self.first = self.last = 0.0


class Receiver:
    """`POST /reports/{name}`: JWT checked (each new token), every custom_data checked."""

    def __init__(self) -> None:
        self.tracks: dict[str, Track] = {}
        self.stats: Counter[str] = Counter()
        self._accepted_token = ""
        self._events = msgspec.json.Decoder(list[Event])

    def handle(self, method: bytes, url: bytes, headers: dict[bytes, bytes], body: bytes
               ) -> Answer:
        path = url.partition(b"?")[0]
        if path.startswith(b"/reports/") and method == b"POST":
            if not self._authorised(headers.get(b"authorization", b"").decode()):
                return 401, b""
            return self._record(body), b""
        if path == b"/_stats":
            return 200, _json.encode(self.snapshot())
        if path == b"/_check":
            return 200, _json.encode(self.check(msgspec.json.decode(body)))
        return 404, b""

    def _authorised(self, header: str) -> bool:
        self.stats["posts"] += 1
        if header and header == self._accepted_token:
            return True  # the connector reuses one token per second; it was checked already
        try:
            claims = jwt.decode(header, common.REPORT_SECRET, algorithms=["HS256"],
                                options={"require": ["iat"]})
        except jwt.PyJWTError:
            self.stats["auth_failures"] += 1
            return False
        if abs(time.time() - float(claims["iat"])) > 60:
            self.stats["auth_failures"] += 1
            return False
        self.stats["jwt_checked"] += 1
        self._accepted_token = header
        return True

    def _record(self, body: bytes) -> int:
        try:
            events = self._events.decode(body)
        except msgspec.DecodeError:
            self.stats["bad_bodies"] += 1
            return 400
        now = time.time()
        for event in events:
            self.stats["events"] += 1
            parsed = common.parse_request_id(event.request_id or "")
            if parsed is None:
                self.stats["foreign_events"] += 1
                continue
            prefix, seq, sent_us = parsed
            track = self.tracks.get(prefix)
            if track is None:
                track = self.tracks[prefix] = Track()
                track.first = now
            track.last = now
            track.by_status[event.status] += 1
            if event.custom_data != common.custom_data(event.request_id or ""):
                track.mismatch_count += 1
                if len(track.mismatches) < EXAMPLES:
                    track.mismatches.append({"request_id": event.request_id,
                                             "custom_data": event.custom_data})
            if event.status == "delivered":
                if seq in track.delivered:
                    track.duplicates += 1
                else:
                    track.delivered.add(seq)
                    track.latency.append(now - sent_us / 1e6)
        return 200

    def snapshot(self) -> dict[str, Any]:
        tracks = {p: {"delivered": len(t.delivered), "last": t.last} for p, t in self.tracks.items()}
        return {**self.stats, "tracks": tracks}

    def check(self, ask: dict[str, Any]) -> dict[str, Any]:
        """Did every accepted send of a phase come back, once, with its own custom_data?"""
        track = self.tracks.get(ask["prefix"], Track())
        accepted = set(range(ask["sent"])) - set(ask["failed"])
        missing = accepted - track.delivered
        return {"delivered": len(track.delivered), "accepted": len(accepted),
                "missing": len(missing), "missing_examples": sorted(missing)[:EXAMPLES],
                "unexpected": len(track.delivered - accepted), "duplicates": track.duplicates,
                "custom_data_mismatches": track.mismatch_count,
                "mismatch_examples": track.mismatches, "by_status": dict(track.by_status),
                "first_report": track.first, "last_report": track.last,
                "latency": common.percentiles(list(track.latency)),
                "auth_failures": self.stats["auth_failures"],
                "jwt_checked": self.stats["jwt_checked"]}


async def serve(role: str, fd: int) -> None:
    sock = socket.socket(fileno=fd)
    if role == "receiver":
        await wire.serve(Receiver().handle, sock)
        return
    vendor = Vendor()
    tasks = await vendor.start()
    try:
        await wire.serve(vendor.handle, sock)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks)
        vendor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=("vendor", "receiver"))
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.role, args.fd))


if __name__ == "__main__":
    main()
