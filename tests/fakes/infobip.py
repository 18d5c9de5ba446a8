"""Fake Infobip SMS API v3 (send, logs, account balance) plus JSON delivery reports."""

from __future__ import annotations

import copy
import hmac
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .infobip_mms import MMS_LOGS_PATH, MMS_SEND_PATH, InfobipMms, mms_report
from .server import Canned, CannedAnswers, LocalHostOnly, ServedApp, sleep_unless_gone
from .twilio import num_segments

SEND_PATH = "/sms/3/messages"
LOGS_PATH = "/sms/3/logs"
BALANCE_PATH = "/account/1/balance"
DIGITS = re.compile(r"[1-9]\d{6,14}")  # international format without "+" or "00"
MAX_PARTS, MAX_BYTES = 25, 4000
CONTENT_TYPES = ("application/json", "application/xml")
TIME_UNITS = {"SECONDS": 1, "MINUTES": 60, "HOURS": 3600}  # validityPeriod.timeUnit
MAX_VALIDITY = 48 * 3600  # "longer than 48h is not supported ... automatically set to 48h"

# name -> (groupId, groupName, id, description); infobip.com response-status-and-error-codes.
STATUSES: dict[str, tuple[int, str, int, str]] = {
    "PENDING_ACCEPTED": (1, "PENDING", 26, "Message sent to next instance"),
    "PENDING_WAITING_DELIVERY": (1, "PENDING", 3, "Message sent, waiting for delivery report"),
    "PENDING_ENROUTE": (1, "PENDING", 7, "Message sent to next instance"),
    "DELIVERED_TO_OPERATOR": (3, "DELIVERED", 2, "Message delivered to operator"),
    "DELIVERED_TO_HANDSET": (3, "DELIVERED", 5, "Message delivered to handset"),
    "UNDELIVERABLE_REJECTED_OPERATOR": (2, "UNDELIVERABLE", 4, "Message rejected by operator"),
    "UNDELIVERABLE_NOT_DELIVERED": (2, "UNDELIVERABLE", 9, "Message sent not delivered"),
    "EXPIRED_EXPIRED": (4, "EXPIRED", 15, "Message expired"),
    "EXPIRED_DLR_UNKNOWN": (4, "EXPIRED", 29, "Message expired, delivery status unknown"),
    "REJECTED_NETWORK": (5, "REJECTED", 6, "Network is forbidden"),
    "REJECTED_PREFIX_MISSING": (5, "REJECTED", 8, "Number prefix missing"),
    "REJECTED_DND": (5, "REJECTED", 10, "Destination on DND list"),
    "REJECTED_SOURCE": (5, "REJECTED", 11, "Invalid source address"),
    "REJECTED_NOT_ENOUGH_CREDITS": (5, "REJECTED", 12, "Not enough credits"),
    "REJECTED_SENDER": (5, "REJECTED", 13, "Sender blocklisted"),
    "REJECTED_DESTINATION_BLOCKLISTED": (5, "REJECTED", 14, "Destination blocklisted"),
    "REJECTED_SYSTEM_ERROR": (5, "REJECTED", 21, "System error"),
    "REJECTED_DUPLICATE_MESSAGE_ID": (5, "REJECTED", 23, "Duplicate message ID"),
    "REJECTED_MESSAGE_TOO_LONG": (5, "REJECTED", 25, "Message too long"),
    "MISSING_TO": (5, "REJECTED", 51, "Missing destination"),
    "REJECTED_DESTINATION": (5, "REJECTED", 52, "Invalid destination address"),
}
BY_ID = {value[2]: name for name, value in STATUSES.items()}
# name -> (groupId, groupName, id, permanent)
ERRORS: dict[str, tuple[int, str, int, bool]] = {
    "NO_ERROR": (0, "OK", 0, False),
    "EC_UNKNOWN_SUBSCRIBER": (1, "HANDSET_ERRORS", 1, True),
    "EC_ABSENT_SUBSCRIBER_SM": (1, "HANDSET_ERRORS", 6, False),
    "EC_CALL_BARRED": (1, "HANDSET_ERRORS", 13, False),
    "EC_ABSENT_SUBSCRIBER": (1, "HANDSET_ERRORS", 27, False),
    "EC_SM_DELIVERY_FAILURE": (1, "HANDSET_ERRORS", 32, False),
}
INTERMEDIATE = frozenset({"PENDING_ENROUTE", "PENDING_WAITING_DELIVERY", "DELIVERED_TO_OPERATOR"})


def status_object(name: str) -> dict[str, Any]:
    group_id, group_name, status_id, description = STATUSES[name]
    return {"groupId": group_id, "groupName": group_name, "id": status_id, "name": name,
            "description": description}


def error_object(name: str) -> dict[str, Any]:
    group_id, group_name, error_id, permanent = ERRORS[name]
    return {"groupId": group_id, "groupName": group_name, "id": error_id, "name": name,
            "description": name.replace("_", " ").capitalize(), "permanent": permanent}


def api_error(status: int, description: str, violations: Iterable[tuple[str, str]] = (),
              headers: Mapping[str, str] | None = None) -> Response:
    """Infobip's v3 ApiError body."""
    body = {"errorCode": f"E{status}", "description": description,
            "action": "Check the request.", "resources": [],
            "violations": [{"property": p, "violation": v} for p, v in violations]}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def infobip_time(when: float) -> str:
    """yyyy-MM-dd'T'HH:mm:ss.SSSZ, as Infobip writes sentAt/doneAt."""
    stamp = datetime.fromtimestamp(when, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}+0000"


def _validity_problems(at: str, options: Any) -> list[tuple[str, str]]:
    """messages[].options.validityPeriod: {amount (required integer), timeUnit}."""
    if not isinstance(options, dict):
        return [(f"{at}.options", "must be an object")]
    validity = options.get("validityPeriod")
    if validity is None:
        return []
    where = f"{at}.options.validityPeriod"
    if not isinstance(validity, dict) or set(validity) - {"amount", "timeUnit"}:
        return [(where, "must be an object of amount and timeUnit")]
    amount = validity.get("amount")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 1:  # >= 1 [inferred]
        return [(f"{where}.amount", "must be a positive integer")]
    if validity.get("timeUnit", "MINUTES") not in TIME_UNITS:
        return [(f"{where}.timeUnit", f"must be one of {', '.join(TIME_UNITS)}")]
    return []


def validity_seconds(msg: dict[str, Any]) -> int | None:
    """The validity Infobip applies to a (valid) message: capped at 48 h, None = default."""
    validity = msg.get("options", {}).get("validityPeriod")
    if validity is None:
        return None
    seconds = validity["amount"] * TIME_UNITS[validity.get("timeUnit", "MINUTES")]
    return int(min(seconds, MAX_VALIDITY))


# The delivery report of /sms/3/messages, as Infobip's document publishes it.
REPORT_WEBHOOK = "receive-outbound-sms-message-reports-v3"
# ... and of /mms/1/advanced (MmsReportRequest, "Send MMS message" in its description).
MMS_REPORT_WEBHOOK = "receive-outbound-mms-message-reports"


class FakeInfobip(InfobipMms, CannedAnswers, ServedApp):
    """Starlette fake of Infobip's SMS API as its v3 documentation describes it (and its MMS
    API: infobip_mms)."""

    contract_vendor = "infobip"

    def __init__(self, api_keys: Iterable[str], *, send_only: Iterable[str] = (),
                 balance: float = 47.79, currency: str = "EUR") -> None:
        super().__init__()
        # send_only keys lack the account-management and logs scopes: those answer 403.
        self.send_only = frozenset(send_only)
        self.api_keys = frozenset(api_keys) | self.send_only
        self.balance, self.currency = balance, currency
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self._violations: list[dict[str, Any]] = []
        self._canned: deque[Canned] = deque()
        self._send_calls = 0
        self.lookups: list[dict[str, list[str]]] = []
        routes = [Route(SEND_PATH, self._send, methods=["POST"]),
                  Route(LOGS_PATH, self._logs, methods=["GET"]),
                  Route(BALANCE_PATH, self._balance, methods=["GET"]),
                  Route(MMS_SEND_PATH, self._mms_send, methods=["POST"]),
                  Route(MMS_LOGS_PATH, self._mms_logs, methods=["GET"])]
        self._asgi = LocalHostOnly(Starlette(routes=routes))

    # ---- test-side API ----

    def queue(self, status: int, json_body: Any = None, headers: Mapping[str, str] | None = None,
              delay: float = 0.0, reject: int | None = None) -> None:
        """Queue the answer to the next valid send (FIFO); see Canned (`reject` too)."""
        self._enqueue(Canned(status, json_body, dict(headers or {}), delay, reject))

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every destination taken or refused, in order: message_id, to, sender, text, status..."""
        with self._lock:
            return copy.deepcopy(self._messages)

    @property
    def schema_violations(self) -> list[dict[str, Any]]:
        """Send requests the documented request schema forbids (should stay empty)."""
        with self._lock:
            return copy.deepcopy(self._violations)

    @property
    def send_calls(self) -> int:
        with self._lock:
            return self._send_calls

    def message(self, message_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._find(message_id))

    def send_status(self, message_id: str, status: str = "DELIVERED_TO_HANDSET",
                    error: str = "NO_ERROR", *, auth: tuple[str, str] | None = None,
                    url_override: str | None = None, extra: Mapping[str, Any] | None = None,
                    timeout: float = 10.0) -> httpx.Response:
        """POST a delivery report for one message to its webhooks.delivery.url (blocking)."""
        with self._lock:
            msg = self._find(message_id)
            url = url_override or msg["callback_url"]
            if status in INTERMEDIATE and not msg["intermediate"] and url_override is None:
                raise ValueError(f"{message_id} did not ask for intermediate reports")
            now = time.time()
            report = {
                "bulkId": msg["bulk_id"], "messageId": message_id, "to": msg["to"],
                "sender": msg["sender"], "sentAt": infobip_time(msg["sent_at"]),
                "doneAt": infobip_time(now), "messageCount": msg["message_count"],
                "mccMnc": "23410", "price": {"pricePerMessage": 0.0075, "currency": "EUR"},
                "status": status_object(status), "error": error_object(error),
                **({"callbackData": msg["callback_data"]} if msg["callback_data"] else {}),
                **(extra or {}),
            }
            msg["status"], msg["error"], msg["done_at"] = status, error, now
            if msg.get("kind") == "mms":
                report = mms_report(report)
        if not url:
            raise ValueError(f"{message_id} has no webhooks.delivery.url; pass url_override")
        if not extra:  # a test's deliberate additions are not the fake's to answer for
            webhook = MMS_REPORT_WEBHOOK if msg.get("kind") == "mms" else REPORT_WEBHOOK
            self.contract.webhook("infobip", webhook, "application/json",
                                  json.dumps({"results": [report]}).encode())
        with httpx.Client(timeout=timeout, trust_env=False, auth=auth) as client:
            return client.post(url, json={"results": [report]},
                               headers={"User-Agent": "Infobip-DLR"})

    # ---- internals ----

    def _find(self, message_id: str) -> dict[str, Any]:
        for msg in self._messages:
            if msg["message_id"] == message_id:
                return msg
        raise KeyError(f"no message {message_id}")

    def _key(self, request: Request) -> str | None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "app":
            return None
        ok = any(hmac.compare_digest(key.encode(), known.encode()) for known in self.api_keys)
        return key if ok else None

    @staticmethod
    def _unauthorized() -> Response:
        return api_error(401, "The request lacks valid authentication credentials for the "
                              "requested resource.")

    async def _balance(self, request: Request) -> Response:
        key = self._key(request)
        if key is None:
            return self._unauthorized()
        if key in self.send_only:
            return api_error(403, "Insufficient permissions to access the requested resource.")
        return JSONResponse({"balance": self.balance, "currency": self.currency})

    async def _logs(self, request: Request) -> Response:
        key = self._key(request)
        if key is None:
            return self._unauthorized()
        if key in self.send_only:
            return api_error(403, "Insufficient permissions to access the requested resource.")
        wanted = {i for v in request.query_params.getlist("messageId") for i in v.split(",")}
        bulks = {i for v in request.query_params.getlist("bulkId") for i in v.split(",")}
        limit = min(int(request.query_params.get("limit", "50")), 1000)
        with self._lock:
            self.lookups.append({k: request.query_params.getlist(k)
                                 for k in request.query_params})
            found = [m for m in reversed(self._messages) if m["api_key"] == key
                     and (not wanted or m["message_id"] in wanted)
                     and (not bulks or m["bulk_id"] in bulks)][:limit]
            results = [self._log(m) for m in found]
        return JSONResponse({"results": results})

    @staticmethod
    def _log(msg: dict[str, Any]) -> dict[str, Any]:
        return {"destination": msg["to"], "bulkId": msg["bulk_id"],
                "messageId": msg["message_id"], "sender": msg["sender"],
                "sentAt": infobip_time(msg["sent_at"]),
                "doneAt": infobip_time(msg["done_at"] or msg["sent_at"]),
                "messageCount": msg["message_count"],
                "status": status_object(msg["status"]), "error": error_object(msg["error"]),
                "content": {"text": msg["text"]}}

    async def _send(self, request: Request) -> Response:
        key = self._key(request)
        if key is None:
            return self._unauthorized()
        raw = await request.body()
        problems = self._validate(request.headers.get("content-type", ""), raw)
        with self._lock:
            self._send_calls += 1
            if problems:
                self._violations.append({"body": raw.decode("utf-8", "replace"),
                                         "errors": problems})
                return api_error(400, "Request cannot be processed.", problems)
            canned = self._canned.popleft() if self._canned else None
        if canned is not None and canned.reject is not None:
            await sleep_unless_gone(request, canned.delay, self.closing)
            return JSONResponse(self._accept(key, json.loads(raw), reject=canned.reject))
        if canned is not None and not (canned.body is None and 200 <= canned.status < 300):
            await sleep_unless_gone(request, canned.delay, self.closing)
            if isinstance(canned.body, bytes):  # e.g. an HTML 502 from a proxy
                return Response(canned.body, status_code=canned.status, headers=canned.headers)
            body = canned.body if canned.body is not None else {
                "errorCode": f"E{canned.status}", "description": "Canned error.",
                "action": "", "violations": [], "resources": []}
            return JSONResponse(body, status_code=canned.status, headers=canned.headers)
        answer = self._accept(key, json.loads(raw))
        if canned is not None:
            # Taken already: a client that times out now faces an unknown outcome, as in life.
            await sleep_unless_gone(request, canned.delay, self.closing)
        return JSONResponse(answer, headers=canned.headers if canned else None)

    @staticmethod
    def _validate(content_type: str, raw: bytes) -> list[tuple[str, str]]:
        """The request schema's rules, as (property, violation) pairs."""
        if content_type.split(";")[0].strip().lower() != "application/json":
            return [("Content-Type", f"must be application/json, got {content_type!r}")]
        try:
            body = json.loads(raw)
        except ValueError:
            return [("body", "is not valid JSON")]
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            return [("messages", "must be a non-empty array")]
        problems: list[tuple[str, str]] = []
        for i, msg in enumerate(messages):
            at = f"messages[{i}]"
            if not isinstance(msg, dict):
                problems.append((at, "must be an object"))
                continue
            if "from" in msg or "text" in msg or "notifyUrl" in msg:
                problems.append((at, "uses v2 fields (from/text/notifyUrl); v3 wants "
                                     "sender/content.text/webhooks"))
            if not isinstance(msg.get("sender", ""), str):
                problems.append((f"{at}.sender", "must be a string"))
            content = msg.get("content")
            if not isinstance(content, dict) or not isinstance(content.get("text"), str):
                problems.append((f"{at}.content.text", "must not be null"))
            destinations = msg.get("destinations")
            if not isinstance(destinations, list) or not destinations:
                problems.append((f"{at}.destinations", "must not be empty"))
                destinations = []
            for j, dest in enumerate(destinations):
                if not isinstance(dest, dict) or not isinstance(dest.get("to"), str):
                    problems.append((f"{at}.destinations[{j}].to", "must not be null"))
                elif len(dest["to"]) > 64 or len(str(dest.get("messageId", ""))) > 200:
                    problems.append((f"{at}.destinations[{j}]", "to <= 64, messageId <= 200"))
            problems.extend(_validity_problems(at, msg.get("options", {})))
            hooks = msg.get("webhooks", {})
            delivery = hooks.get("delivery", {}) if isinstance(hooks, dict) else None
            if not isinstance(delivery, dict) or not isinstance(delivery.get("url", ""), str):
                problems.append((f"{at}.webhooks.delivery.url", "must be a string"))
            elif hooks.get("contentType", "application/json") not in CONTENT_TYPES:
                problems.append((f"{at}.webhooks.contentType", "must be JSON or XML"))
        return problems

    def _accept(self, key: str, body: dict[str, Any], reject: int | None = None
                ) -> dict[str, Any]:
        """Take every destination (or refuse it in the answer, as Infobip does inside a 200)."""
        bulk_id, answers = str(uuid.uuid4().int)[:19], []
        with self._lock:
            for msg in body["messages"]:
                hooks = msg.get("webhooks", {})
                delivery = hooks.get("delivery", {})
                text = msg["content"]["text"]
                for dest in msg["destinations"]:
                    message_id = dest.get("messageId") or str(uuid.uuid4())
                    status = BY_ID[reject] if reject is not None else self._refusal(
                        key, dest["to"], message_id, text)
                    parts = num_segments(text)
                    answers.append({"messageId": message_id, "status": status_object(status),
                                    "destination": dest["to"],
                                    "details": {"messageCount": parts}})
                    if status == "REJECTED_DUPLICATE_MESSAGE_ID":
                        continue  # the earlier message stands; nothing new is stored
                    self._messages.append({
                        "message_id": message_id, "bulk_id": bulk_id, "api_key": key,
                        "to": dest["to"], "sender": msg.get("sender", "InfoSMS"), "text": text,
                        "message_count": parts, "status": status, "error": "NO_ERROR",
                        "callback_url": delivery.get("url") if delivery.get("notify", True)
                        else None,
                        "intermediate": bool(delivery.get("intermediateReport", False)),
                        "content_type": hooks.get("contentType", "application/json"),
                        "callback_data": hooks.get("callbackData"),
                        "sent_at": time.time(), "done_at": None, "body": copy.deepcopy(msg),
                        "validity": validity_seconds(msg),
                    })
        return {"bulkId": bulk_id, "messages": answers}

    def _refusal(self, key: str, to: str, message_id: str, text: str) -> str:
        if not to:
            return "MISSING_TO"
        if not DIGITS.fullmatch(to):
            return "REJECTED_DESTINATION"
        if any(m["message_id"] == message_id and m["api_key"] == key for m in self._messages):
            return "REJECTED_DUPLICATE_MESSAGE_ID"
        if num_segments(text) > MAX_PARTS or len(text.encode()) > MAX_BYTES:
            return "REJECTED_MESSAGE_TOO_LONG"
        return "PENDING_ACCEPTED"
