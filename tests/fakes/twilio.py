"""Fake Twilio Messages API (create/fetch message, fetch account) plus signed status callbacks."""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .server import Canned, CannedAnswers, LocalHostOnly, ServedApp, sleep_unless_gone
from .twilio_schema import FORM, validate_create_form

API_VERSION = "2010-04-01"
ACCOUNTS = f"/{API_VERSION}/Accounts"
E164 = re.compile(r"\+[1-9]\d{1,14}")
ALPHA_SENDER = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
SHORT_CODE = re.compile(r"\d{3,8}")
MAX_BODY = 1600
DLR_STATUSES = frozenset({"delivered", "undelivered"})

Params = Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]]


def twilio_signature(token: str, url: str, params: Params) -> str:
    """X-Twilio-Signature: b64 HMAC-SHA1(token, url + sorted(name + value)); values sorted
    and de-duplicated per name."""
    grouped: dict[str, set[str]] = {}
    items = params.items() if isinstance(params, Mapping) else params
    for key, value in items:
        values = [value] if isinstance(value, str) else list(value)
        grouped.setdefault(key, set()).update(values)
    # twilio-python's RequestValidator dedupes repeated values (sorted(set(...))); we match the SDK.
    payload = url + "".join(k + v for k in sorted(grouped) for v in sorted(grouped[k]))
    digest = hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXT = set("^{}\\[~]|€\f")


def num_segments(body: str) -> int:
    """SMS segment count: GSM-7 160/153 septets, else UCS-2 70/67 UTF-16 units."""
    if not body:
        return 0
    if all(c in GSM7_BASIC or c in GSM7_EXT for c in body):
        units, single, multi = sum(2 if c in GSM7_EXT else 1 for c in body), 160, 153
    else:
        units, single, multi = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else math.ceil(units / multi)


def error_body(status: int, code: int, message: str) -> dict[str, Any]:
    """Twilio's legacy error JSON."""
    more = f"https://www.twilio.com/docs/errors/{code}"
    return {"code": code, "message": message, "more_info": more, "status": status}


def twilio_error(
    status: int, code: int, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """JSON error response in Twilio's shape."""
    return JSONResponse(
        error_body(status, code, message), status_code=status, headers=dict(headers or {})
    )


def default_error(status: int) -> dict[str, Any]:
    """Body for a canned error without an explicit body; 20xxx mirrors Twilio's 20404/20429/20500/20503."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return error_body(status, 20000 + status, phrase)


def rfc2822_now() -> str:
    """Current time as Twilio formats dates, e.g. 'Thu, 24 Aug 2023 05:01:45 +0000'."""
    return format_datetime(datetime.now(UTC).replace(microsecond=0))


class FakeTwilio(CannedAnswers, ServedApp):
    """Starlette fake of Twilio's 2010-04-01 Messages API, validating requests against the official spec."""

    contract_vendor = "twilio"

    def __init__(self, accounts: Mapping[str, str], *, service_from: str = "+15005550006") -> None:
        super().__init__()
        self.accounts = dict(accounts)
        self.service_from = service_from  # sender Twilio "picks" from a Messaging Service pool
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self._requests: list[dict[str, Any]] = []
        self._violations: list[dict[str, Any]] = []
        self._canned: deque[Canned] = deque()
        self._create_calls = 0
        base = ACCOUNTS + "/{AccountSid}"
        routes = [
            Route(base + ".json", self._fetch_account, methods=["GET"]),
            Route(base + "/Messages.json", self._create, methods=["POST"]),
            Route(base + "/Messages/{Sid}.json", self._fetch_message, methods=["GET"]),
        ]
        self._asgi = LocalHostOnly(Starlette(routes=routes))

    # ---- test-side API (main thread) ----

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Created messages in arrival order: sid, account_sid, params, status_callback, status, resource."""
        with self._lock:
            return copy.deepcopy(self._messages)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every authenticated, schema-valid create call: params, status returned, canned flag, time."""
        with self._lock:
            return copy.deepcopy(self._requests)

    @property
    def schema_violations(self) -> list[dict[str, Any]]:
        """Create requests that broke the OpenAPI request schema (should stay empty)."""
        with self._lock:
            return copy.deepcopy(self._violations)

    @property
    def create_calls(self) -> int:
        """Number of authenticated create calls (including schema-invalid and canned ones)."""
        with self._lock:
            return self._create_calls

    def message(self, sid: str) -> dict[str, Any]:
        """One recorded message by sid (KeyError if unknown)."""
        with self._lock:
            return copy.deepcopy(self._find(sid))

    def send_status(
        self,
        sid: str,
        status: str,
        error_code: int | str | None = None,
        extra: Mapping[str, str | None] | None = None,
        signature_override: str | None = None,
        url_override: str | None = None,
        timeout: float = 10.0,
    ) -> httpx.Response:
        """POST a signed status callback for message `sid` as Twilio would (blocking)."""
        with self._lock:
            msg = self._find(sid)
            url = url_override or msg["status_callback"]
            params = self._callback_params(msg, status, error_code)
            token = self.accounts[msg["account_sid"]]
        for key, value in (extra or {}).items():
            if value is None:
                params.pop(key, None)  # lets a test drop a parameter Twilio normally sends
            else:
                params[key] = value
        if not url:
            raise ValueError(f"message {sid} has no StatusCallback; pass url_override")
        signature = (
            twilio_signature(token, url, params)
            if signature_override is None
            else signature_override
        )
        headers = {
            "X-Twilio-Signature": signature,
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        }
        # trust_env=False: never route loopback callbacks through an ambient HTTP(S)_PROXY.
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            response = client.post(url, data=params, headers=headers)
        with self._lock:
            self._apply_status(self._find(sid), status, error_code)
        return response

    # ---- internals ----

    def _find(self, sid: str) -> dict[str, Any]:
        for msg in self._messages:
            if msg["sid"] == sid:
                return msg
        raise KeyError(f"no message {sid}")

    @staticmethod
    def _callback_params(
        msg: dict[str, Any], status: str, error_code: int | str | None
    ) -> dict[str, str]:
        res = msg["resource"]
        params = {
            "MessageSid": msg["sid"],
            "SmsSid": msg["sid"],
            "MessageStatus": status,
            "SmsStatus": status,
            "AccountSid": msg["account_sid"],
            "From": msg["sender"],
            "To": res["to"],
            "ApiVersion": API_VERSION,
        }
        if res["messaging_service_sid"]:
            params["MessagingServiceSid"] = res["messaging_service_sid"]
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        if status in DLR_STATUSES:
            params["RawDlrDoneDate"] = datetime.now(UTC).strftime("%y%m%d%H%M")
        return params

    @staticmethod
    def _apply_status(msg: dict[str, Any], status: str, error_code: int | str | None) -> None:
        res = msg["resource"]
        msg["status"] = res["status"] = status
        res["date_updated"] = rfc2822_now()
        if status not in ("accepted", "queued", "scheduled") and res["date_sent"] is None:
            res["date_sent"] = res["date_updated"]
        if res["from"] is None:
            res["from"] = msg["sender"]
        if error_code is not None:
            res["error_code"] = int(error_code)

    def _authenticate(self, request: Request) -> str | None:
        """Account SID when Basic credentials match an account and the URL's AccountSid."""
        scheme, _, blob = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(blob, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        token = self.accounts.get(user)
        if not sep or token is None or not hmac.compare_digest(token.encode(), password.encode()):
            return None
        return user if request.path_params["AccountSid"] == user else None

    @staticmethod
    def _unauthorized() -> Response:
        headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'}
        return twilio_error(401, 20003, "Authenticate", headers)

    async def _fetch_account(self, request: Request) -> Response:
        sid = self._authenticate(request)
        if sid is None:
            return self._unauthorized()
        now = rfc2822_now()
        # The real resource exposes auth_token too, which lets e2e tests catch token leaks in logs.
        return JSONResponse(
            {
                "sid": sid,
                "owner_account_sid": sid,
                "friendly_name": "Fake Twilio account",
                "status": "active",
                "type": "Full",
                "auth_token": self.accounts[sid],
                "date_created": now,
                "date_updated": now,
                "uri": f"{ACCOUNTS}/{sid}.json",
                "subresource_uris": {"messages": f"{ACCOUNTS}/{sid}/Messages.json"},
            }
        )

    async def _fetch_message(self, request: Request) -> Response:
        account = self._authenticate(request)
        if account is None:
            return self._unauthorized()
        sid = request.path_params["Sid"]
        with self._lock:
            found = [
                m["resource"]
                for m in self._messages
                if m["sid"] == sid and m["account_sid"] == account
            ]
            body = copy.deepcopy(found[0]) if found else None
        if body is None:
            return twilio_error(
                404, 20404, f"The requested resource {request.url.path} was not found"
            )
        return JSONResponse(body)

    async def _create(self, request: Request) -> Response:
        account = self._authenticate(request)
        if account is None:
            return self._unauthorized()
        raw = await request.body()
        pairs, problems = self._parse_form(request.headers.get("content-type", ""), raw)
        with self._lock:
            self._create_calls += 1
            if problems:
                self._violations.append(
                    {"account_sid": account, "body": raw.decode("latin-1"), "errors": problems}
                )
                return twilio_error(400, 20001, "Invalid request: " + "; ".join(problems))
            canned = self._canned.popleft() if self._canned else None
        params = self._params_dict(pairs)
        if canned is not None and not (canned.body is None and 200 <= canned.status < 300):
            await sleep_unless_gone(request, canned.delay, self.closing)
            self._record_request(params, canned.status, canned=True)
            if isinstance(canned.body, bytes):  # e.g. an HTML 502 page from a proxy
                return Response(canned.body, status_code=canned.status, headers=canned.headers)
            body = default_error(canned.status) if canned.body is None else canned.body
            return JSONResponse(body, status_code=canned.status, headers=canned.headers)
        response = self._create_message(account, params)
        self._record_request(params, response.status_code, canned=canned is not None)
        if canned is not None:
            # The message exists already: a client timing out here sees "unknown outcome", like production.
            await sleep_unless_gone(request, canned.delay, self.closing)
            response.headers.update(canned.headers)
        return response

    @staticmethod
    def _parse_form(content_type: str, raw: bytes) -> tuple[list[tuple[str, str]], list[str]]:
        if content_type.split(";")[0].strip().lower() != FORM:
            return [], [f"Content-Type must be {FORM}, got {content_type!r}"]
        try:
            pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, errors="strict")
        except UnicodeError as exc:
            return [], [f"body is not valid urlencoded UTF-8: {exc}"]
        return pairs, validate_create_form(pairs)

    @staticmethod
    def _params_dict(pairs: list[tuple[str, str]]) -> dict[str, Any]:
        """Form pairs as a dict; array parameters (MediaUrl, PersistentAction) keep every value."""
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in ("MediaUrl", "PersistentAction"):
                out.setdefault(key, []).append(value)
            else:
                out[key] = value
        return out

    def _record_request(self, params: dict[str, Any], status: int, *, canned: bool) -> None:
        with self._lock:
            self._requests.append(
                {"params": params, "status": status, "canned": canned, "time": time.time()}
            )

    def _semantic_error(self, p: dict[str, Any]) -> Response | None:
        """Twilio's own checks beyond the schema, in the order we apply them."""
        to, sender, service = p.get("To", ""), p.get("From"), p.get("MessagingServiceSid")
        if not E164.fullmatch(to):
            return twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not sender and not service:
            return twilio_error(400, 21603, "A 'From' phone number is required.")
        if sender and not any(r.fullmatch(sender) for r in (E164, ALPHA_SENDER, SHORT_CODE)):
            msg = (f"The 'From' number {sender} is not a valid phone number, shortcode, "
                   "or alphanumeric sender ID.")
            return twilio_error(400, 21212, msg)
        # The spec makes Body conditional with MediaUrl/ContentSid (x-twilio.conditional).
        if not p.get("Body") and not p.get("MediaUrl") and not p.get("ContentSid"):
            return twilio_error(400, 21602, "Message body is required.")
        if len(p.get("Body", "")) > MAX_BODY:
            return twilio_error(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        # The schema makes it an integer; the range is in its description (1-36000) and
        # twilio.com/docs/api/errors/90007 names the error.
        validity = p.get("ValidityPeriod")
        if validity is not None and not 1 <= int(validity) <= 36000:
            return twilio_error(400, 90007, "Validity period can only be set to integers "
                                            "between 1 and 36,000 seconds (10 hours max).")
        callback = p.get("StatusCallback")
        if callback is not None:
            parts = urlsplit(callback)
            if parts.scheme not in ("http", "https") or not parts.hostname or "_" in parts.hostname:
                return twilio_error(
                    400, 21609, f"The StatusCallback URL {callback} is not a valid URL."
                )
        return None

    def _create_message(self, account: str, p: dict[str, Any]) -> Response:
        error = self._semantic_error(p)
        if error is not None:
            return error
        service = p.get("MessagingServiceSid")
        media = p.get("MediaUrl", [])
        sid = ("MM" if media else "SM") + uuid.uuid4().hex
        now = rfc2822_now()
        body = p.get("Body", "")
        resource = {
            "account_sid": account,
            "api_version": API_VERSION,
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": p.get("From"),
            "messaging_service_sid": service,
            "num_media": str(len(media)),
            # Twilio reports 0 segments until a Messaging Service has picked a sender.
            "num_segments": "0" if service else str(num_segments(body)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if service else "queued",
            "subresource_uris": {"media": f"{ACCOUNTS}/{account}/Messages/{sid}/Media.json"},
            "to": p["To"],
            "uri": f"{ACCOUNTS}/{account}/Messages/{sid}.json",
        }
        record = {
            "sid": sid,
            "account_sid": account,
            "params": p,
            "status_callback": p.get("StatusCallback"),
            "status": resource["status"],
            "sender": p.get("From") or self.service_from,
            "resource": resource,
        }
        with self._lock:
            self._messages.append(record)
        headers = {"Twilio-Request-Id": "RQ" + uuid.uuid4().hex}
        return JSONResponse(copy.deepcopy(resource), status_code=201, headers=headers)
