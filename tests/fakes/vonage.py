"""Fake Vonage SMS API (send, account balance) and its per-part delivery receipts, signed on request."""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hashlib
import hmac
import json
import re
import threading
import uuid
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .server import Canned, CannedAnswers, LocalHostOnly, ServedApp, sleep_unless_gone
from .twilio import GSM7_BASIC, GSM7_EXT, num_segments
from .vonage_messages import MESSAGES_PATH, VonageMessages

FORM = "application/x-www-form-urlencoded"
DIGITS = re.compile(r"\d{7,15}")  # spec: `to` pattern
TYPES = frozenset({"text", "binary", "wappush", "unicode", "vcal", "vcard"})
MAX_CALLBACK = 100
MAX_CLIENT_REF = 40  # spec NewMessage.client-ref
TTL_RANGE = (20000, 604800000)  # spec NewMessage.ttl: integer milliseconds, min and max
DlrMethod = Literal["POST", "GET", "JSON"]  # the account's "HTTP method" for receipts


def vonage_signature(params: Mapping[str, str], secret: str, method: str = "md5hash") -> str:
    """`sig` as Vonage computes it (upper-case hex, as in its spec examples): sorted
    `&name=value` with `&`/`=` in values turned into `_`; md5hash appends the secret, the
    others are HMACs keyed with it."""
    text = "".join(f"&{k}=" + params[k].replace("&", "_").replace("=", "_") for k in sorted(params))
    if method == "md5hash":
        return hashlib.md5((text + secret).encode()).hexdigest().upper()
    return hmac.new(secret.encode(), text.encode(), method).hexdigest().upper()


class Hold:
    """Holds the fake's answers to sends: `arrived` is set once a send has been taken (the
    message exists at the fake), and its answer waits until the test sets `release`."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()


def refusal(code: int | str, text: str) -> dict[str, Any]:
    """A send answer carrying one refused part, as Vonage answers errors (always HTTP 200)."""
    return {"message-count": "1", "messages": [{"status": str(code), "error-text": text}]}


class FakeVonage(VonageMessages, CannedAnswers, ServedApp):
    """Starlette fake of rest.nexmo.com: POST /sms/json and GET /account/get-balance; and of
    the Messages API's MMS channel (api.nexmo.com POST /v1/messages: vonage_messages)."""

    contract_vendor = "vonage"

    def __init__(self, accounts: Mapping[str, str], *,
                 signing: Mapping[str, tuple[str, str]] | None = None,
                 dlr_method: DlrMethod = "POST", balance: float = 10.28) -> None:
        super().__init__()
        self.accounts = dict(accounts)  # api key -> api secret
        self.signing = dict(signing or {})  # api key -> (signature secret, method)
        self.dlr_method: DlrMethod = dlr_method
        self.balance = balance
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self._violations: list[str] = []
        self._canned: deque[Canned] = deque()
        self._send_calls = 0
        self._hold: Hold | None = None
        self.mms_sent = []
        self._asgi = LocalHostOnly(Starlette(routes=[
            Route("/sms/json", self._send, methods=["POST"]),
            Route(MESSAGES_PATH, self._messages_send, methods=["POST"]),
            Route("/account/get-balance", self._balance, methods=["GET"]),
        ]))

    # ---- test-side API ----

    def hold_answers(self) -> Hold:
        """Take every later send at once but answer it only when the test releases it."""
        self._hold = Hold()
        return self._hold

    def queue_refusal(self, code: int | str, text: str) -> None:
        self.queue(200, refusal(code, text))

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Accepted sends: id (first part), part_ids, api_key, params, parts {id: status}."""
        with self._lock:
            return copy.deepcopy(self._messages)

    @property
    def violations(self) -> list[str]:
        """Requests Vonage would take but mangle (e.g. non-GSM text sent as type=text)."""
        with self._lock:
            return list(self._violations)

    @property
    def send_calls(self) -> int:
        with self._lock:
            return self._send_calls

    def send_status(self, part_id: str, status: str, err_code: int | str = 0, *,
                    extra: Mapping[str, str | None] | None = None,
                    signature_override: str | None = None, timestamp: float | None = None,
                    url_override: str | None = None, method: DlrMethod | None = None,
                    timeout: float = 10.0) -> httpx.Response:
        """Deliver one part's receipt to the message's `callback` as Vonage would (blocking)."""
        with self._lock:
            msg = self._owner(part_id)
            fields = self._receipt(msg, part_id, status, str(err_code))
            signing = self.signing.get(msg["api_key"])
            url = url_override or msg["params"].get("callback", "")
        if signing is not None:
            now = datetime.now(UTC).timestamp() if timestamp is None else timestamp
            fields.update(timestamp=str(int(now)), nonce=str(uuid.uuid4()))
            fields["sig"] = vonage_signature(fields, *signing)
        if signature_override is not None:
            fields["sig"] = signature_override
        # The document gives the receipt's fields as a JSON body; form and GET receipts (a
        # dashboard choice) carry the same fields, so each is checked as that object.
        if not extra:
            self.contract.webhook("vonage", "delivery-receipt", "application/json",
                                  json.dumps(fields).encode())
        # After signing, so a test can tamper with a signed receipt (None drops a field).
        for key, value in (extra or {}).items():
            if value is None:
                fields.pop(key, None)
            else:
                fields[key] = value
        how = method or self.dlr_method
        # trust_env=False: never route loopback callbacks through an ambient HTTP(S)_PROXY.
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            if how == "GET":
                answer = client.get(url + ("&" if "?" in url else "?") + urlencode(fields))
            elif how == "JSON":
                answer = client.post(url, json=fields)
            else:
                answer = client.post(url, data=fields)
        with self._lock:
            self._owner(part_id)["parts"][part_id] = status
        return answer

    def send_statuses(self, message_id: str, status: str, err_code: int | str = 0,
                      **kwargs: Any) -> list[httpx.Response]:
        """One receipt per part, as Vonage reports a concatenated message."""
        return [self.send_status(part, status, err_code, **kwargs)
                for part in self.message(message_id)["part_ids"]]

    def message(self, part_id: str) -> dict[str, Any]:
        """The message one of whose parts is `part_id` (KeyError if none)."""
        with self._lock:
            return copy.deepcopy(self._owner(part_id))

    # ---- internals ----

    def _owner(self, part_id: str) -> dict[str, Any]:
        for msg in self._messages:
            if part_id in msg["part_ids"]:
                return msg
        raise KeyError(f"no message part {part_id}")

    @staticmethod
    def _receipt(msg: dict[str, Any], part_id: str, status: str, err_code: str) -> dict[str, str]:
        now = datetime.now(UTC)
        fields = {
            "msisdn": msg["params"]["to"], "to": msg["params"]["from"], "network-code": "23410",
            "messageId": part_id, "price": "0.03330000", "status": status,
            "scts": now.strftime("%y%m%d%H%M"), "err-code": err_code, "api-key": msg["api_key"],
            "message-timestamp": now.strftime("%Y-%m-%d %H:%M:%S"),
        }
        if "client-ref" in msg["params"]:
            fields["client-ref"] = msg["params"]["client-ref"]
        return fields

    def _credentials(self, request: Request, params: Mapping[str, str]) -> tuple[str, str] | None:
        """(key, secret) from Basic auth or api_key/api_secret parameters, both documented."""
        scheme, _, blob = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                key, _, secret = base64.b64decode(blob, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            return key, secret
        if "api_key" in params and "api_secret" in params:
            return params["api_key"], params["api_secret"]
        return None

    def _authentic(self, creds: tuple[str, str] | None) -> bool:
        known = self.accounts.get(creds[0]) if creds else None
        return creds is not None and known is not None and hmac.compare_digest(
            known.encode(), creds[1].encode())

    async def _balance(self, request: Request) -> Response:
        if not self._authentic(self._credentials(request, request.query_params)):
            body = {"error-code": "401", "error-code-label": "authentication failed"}
            return JSONResponse(body, status_code=401)
        return JSONResponse({"value": self.balance, "autoReload": False})

    async def _send(self, request: Request) -> Response:
        raw = await request.body()
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM:
            with self._lock:
                self._violations.append(f"Content-Type {request.headers.get('content-type')!r}")
            return JSONResponse(refusal(2, "Missing api_key"))
        params = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        if "sig" in params and "api_secret" in params:
            return JSONResponse(refusal(32, "Signature and api secret disallowed"))
        creds = self._credentials(request, params)
        if creds is None:
            return JSONResponse(refusal(2, "Missing api_key"))
        if not self._authentic(creds):
            return JSONResponse(refusal(4, "Bad Credentials"))
        with self._lock:
            self._send_calls += 1
            canned = self._canned.popleft() if self._canned else None
        if canned is not None and not (canned.body is None and 200 <= canned.status < 300):
            await sleep_unless_gone(request, canned.delay, self.closing)
            if isinstance(canned.body, bytes):
                return Response(canned.body, status_code=canned.status, headers=canned.headers)
            return JSONResponse(canned.body, status_code=canned.status, headers=canned.headers)
        answer = self._accept(creds[0], params)
        hold = self._hold
        if hold is not None:
            hold.arrived.set()
            for _ in range(3000):  # at most 30 s: a forgotten release must not hang the suite
                if hold.release.is_set() or self.closing.is_set():
                    break
                await asyncio.sleep(0.01)
        if canned is not None:
            await sleep_unless_gone(request, canned.delay, self.closing)
        return JSONResponse(answer)

    def _problem(self, p: Mapping[str, str]) -> dict[str, Any] | None:
        """Vonage's documented checks on the send parameters, in the order we apply them."""
        for name in ("from", "to", "text"):
            if not p.get(name):
                return refusal(2, f"Missing {name} param")
        if not DIGITS.fullmatch(p["to"]):
            return refusal(3, "Invalid to param: digits only, no + or 00")
        if p["from"].startswith(("+", "00")):
            return refusal(3, "Invalid from param: numbers without a leading + or 00")
        if p.get("type", "text") not in TYPES or len(p.get("client-ref", "")) > MAX_CLIENT_REF:
            return refusal(3, "Invalid type or client-ref param")
        if p.get("status-report-req", "1") not in ("0", "1", "true", "false"):
            return refusal(3, "Invalid status-report-req param")
        ttl = p.get("ttl")
        if ttl is not None and not (ttl.isdigit() and TTL_RANGE[0] <= int(ttl) <= TTL_RANGE[1]):
            return refusal(3, "Invalid ttl param: 20000-604800000 milliseconds")
        callback = urlsplit(p.get("callback", "https://x"))
        # The documented limit (SDKs check it too): 100 characters.
        if len(p.get("callback", "")) > MAX_CALLBACK or callback.scheme not in (
                "http", "https") or not callback.hostname:
            return refusal(23, "Invalid callback url")
        return None

    def _accept(self, api_key: str, p: dict[str, str]) -> dict[str, Any]:
        problem = self._problem(p)
        if problem is not None:
            return problem
        text = p["text"]
        if p.get("type", "text") == "text" and not set(text) <= GSM7_BASIC | GSM7_EXT:
            with self._lock:
                self._violations.append(f"non-GSM text sent as type=text: {text!r}")
        ids = [uuid.uuid4().hex[:16].upper() for _ in range(max(1, num_segments(text)))]
        with self._lock:
            self._messages.append({"id": ids[0], "part_ids": ids, "api_key": api_key,
                                   "params": p, "parts": dict.fromkeys(ids, "submitted")})
        parts = [{"to": p["to"], "message-id": part, "status": "0",
                  "remaining-balance": f"{self.balance:.8f}", "message-price": "0.03330000",
                  "network": "23410", **({"client-ref": p["client-ref"]}
                                         if "client-ref" in p else {})} for part in ids]
        return {"message-count": str(len(ids)), "messages": parts}
