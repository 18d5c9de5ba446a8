"""Fake Bird Channels API (send, list and get messages, get channel) plus signed webhook events."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .server import Canned, CannedAnswers, LocalHostOnly, ServedApp, sleep_unless_gone

CHANNEL = "/workspaces/{ws}/channels/{ch}"
E164 = re.compile(r"\+[1-9]\d{6,14}")
# Top-level fields of the documented send body; anything else (a `from`, a `to`) is refused,
# which is stricter than Bird may be but catches a connector inventing fields.
SEND_FIELDS = frozenset({"sender", "receiver", "reference", "template", "body", "meta",
                         "notification", "tags", "replyTo", "scheduledFor"})


def bird_signature(key: str, timestamp: str, url: str, body: bytes) -> str:
    """messagebird-signature: b64 HMAC-SHA256(key, timestamp \\n url \\n raw sha256(body))."""
    signed = f"{timestamp}\n{url}\n".encode() + hashlib.sha256(body).digest()
    return base64.b64encode(hmac.new(key.encode(), signed, hashlib.sha256).digest()).decode()


def bird_error(status: int, code: str, message: str, details: Any = None,
               headers: Mapping[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def default_error(status: int) -> dict[str, Any]:
    """A canned error's body when none is given: the phrase as a CamelCase code."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return {"code": phrase.title().replace(" ", "").replace("-", ""), "message": phrase}


# docs.bird.com/api/channels-api/message-types: image {images: [{mediaUrl, altText?}], text?,
# title?} and file {files: [{mediaUrl, contentType, filename?}], text?}; 10 media at most.
MEDIA_ITEMS = {"image": ("images", {"mediaUrl", "altText"}, {"text", "title"}),
               "file": ("files", {"mediaUrl", "contentType", "filename"}, {"text"})}


def media_problems(body: dict[str, Any]) -> dict[str, list[str]]:
    kind = body["type"]
    key, item_fields, extra = MEDIA_ITEMS[kind]
    content = body.get(kind)
    if set(body) - {"type", kind} or not isinstance(content, dict):
        return {f"body.{kind}": ["must be the only content, an object"]}
    problems = {f"body.{kind}.{k}": ["unknown field"] for k in content
                if k != key and k not in extra}
    items = content.get(key)
    if not isinstance(items, list) or not 1 <= len(items) <= 10 or not all(
            isinstance(i, dict) and isinstance(i.get("mediaUrl"), str)
            and not set(i) - item_fields for i in items):
        problems[f"body.{kind}.{key}"] = ["1-10 items with a mediaUrl"]
    elif kind == "file" and not all(isinstance(i.get("contentType"), str) for i in items):
        problems[f"body.{kind}.{key}"] = ["every file needs its contentType"]
    return problems


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeBird(CannedAnswers, ServedApp):
    """One workspace with one SMS channel, reachable with one access key."""

    def __init__(self, access_key: str, workspace_id: str, channel_id: str, *,
                 signing_key: str | None = None, channel_number: str = "+31970102030",
                 channel_status: str = "active", mms: bool = False) -> None:
        super().__init__()
        self.mms = mms  # the channel's number is MMS-capable (its capabilities say so)
        self.access_key, self.workspace_id, self.channel_id = access_key, workspace_id, channel_id
        self.signing_key = signing_key  # the webhook subscription's signingKey
        self.channel_number, self.channel_status = channel_number, channel_status
        self.webhook_url: str | None = None  # the subscription's URL (the connector's)
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self._requests: list[dict[str, Any]] = []
        self._violations: list[dict[str, Any]] = []
        self._lookups: list[dict[str, str]] = []
        self._canned: deque[Canned] = deque()
        routes = [
            Route(CHANNEL, self._get_channel, methods=["GET"]),
            Route(CHANNEL + "/messages", self._send, methods=["POST"]),
            Route(CHANNEL + "/messages", self._list, methods=["GET"]),
            Route(CHANNEL + "/messages/{id}", self._get_message, methods=["GET"]),
        ]
        self._asgi = LocalHostOnly(Starlette(routes=routes))

    # ---- test-side API ----

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Created messages in order: id, request (the JSON sent), reference, status, resource."""
        with self._lock:
            return copy.deepcopy(self._messages)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every authenticated, valid send call: body, status answered, canned flag."""
        with self._lock:
            return copy.deepcopy(self._requests)

    @property
    def violations(self) -> list[dict[str, Any]]:
        """Send bodies Bird would refuse as invalid (should stay empty)."""
        with self._lock:
            return copy.deepcopy(self._violations)

    @property
    def lookups(self) -> list[dict[str, str]]:
        """Query parameters of every authenticated message listing."""
        with self._lock:
            return copy.deepcopy(self._lookups)

    def message(self, message_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._find(message_id))

    def send_status(self, message_id: str, status: str, *, reason: str | None = None,
                    failure_code: int | None = None, source_code: str | None = None,
                    signature_override: str | None = None, url_override: str | None = None,
                    timestamp: int | None = None, timeout: float = 10.0) -> httpx.Response:
        """POST an `sms.outbound` event for the message to the webhook URL, signed (blocking)."""
        url = url_override or self.webhook_url
        if not url:
            raise ValueError("set webhook_url (the subscription URL) or pass url_override")
        with self._lock:
            record = self._find(message_id)
            self._apply(record, status, reason, failure_code, source_code)
            payload = copy.deepcopy(record["resource"])
        body = json.dumps({"service": "channels", "event": "sms.outbound", "payload": payload},
                          separators=(",", ":")).encode()
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        headers = {"Content-Type": "application/json", "messagebird-request-timestamp": stamp}
        if self.signing_key is not None or signature_override is not None:
            headers["messagebird-signature"] = signature_override or bird_signature(
                self.signing_key or "", stamp, url, body)
        # trust_env=False: never route loopback callbacks through an ambient HTTP(S)_PROXY.
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            return client.post(url, content=body, headers=headers)

    # ---- internals ----

    def _find(self, message_id: str) -> dict[str, Any]:
        for record in self._messages:
            if record["id"] == message_id:
                return record
        raise KeyError(message_id)

    def _apply(self, record: dict[str, Any], status: str, reason: str | None,
               failure_code: int | None, source_code: str | None) -> None:
        resource = record["resource"]
        record["status"] = resource["status"] = status
        resource["updatedAt"] = resource["lastStatusAt"] = iso_now()
        if reason is not None:
            resource["reason"] = reason
        if failure_code is not None:
            source = {"name": "sms-messagebird", **({"code": source_code} if source_code else {})}
            resource["failure"] = {"code": failure_code, "source": source}

    def _refusal(self, request: Request) -> Response | None:
        """401 without the access key, 404 for another workspace or channel."""
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, f"AccessKey {self.access_key}".encode()):
            return bird_error(401, "Unauthorized", "Authentication failed")
        if (request.path_params["ws"], request.path_params["ch"]) != (
                self.workspace_id, self.channel_id):
            return bird_error(404, "NotFound", "The requested resource was not found")
        return None

    @staticmethod
    def _problems(body: Any) -> dict[str, list[str]]:
        if not isinstance(body, dict):
            return {"": ["must be a JSON object"]}
        problems = {k: ["unknown field"] for k in body if k not in SEND_FIELDS}
        receiver = body.get("receiver")
        contacts = receiver.get("contacts") if isinstance(receiver, dict) else None
        if not isinstance(contacts, list) or not contacts:
            problems["receiver.contacts"] = ["must list at least one contact"]
            contacts = []
        for i, contact in enumerate(contacts):
            value = contact.get("identifierValue") if isinstance(contact, dict) else None
            if not (isinstance(value, str) and E164.fullmatch(value)
                    and contact.get("identifierKey", "phonenumber") == "phonenumber"):
                problems[f"receiver.contacts[{i}].identifierValue"] = ["not an E.164 number"]
        text = body.get("body")
        if isinstance(text, dict) and text.get("type") in MEDIA_ITEMS:
            problems.update(media_problems(text))
        elif "template" not in body and not (
                isinstance(text, dict) and text.get("type") == "text"
                and isinstance(text.get("text"), dict) and text["text"].get("text")
                and isinstance(text["text"]["text"], str)):
            problems["body.text.text"] = ["is required for a text body"]
        if not isinstance(body.get("reference", ""), str):
            problems["reference"] = ["must be a string"]
        return problems

    async def _send(self, request: Request) -> Response:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        raw = await request.body()
        body: Any
        try:
            body = json.loads(raw) if request.headers.get("content-type", "").startswith(
                "application/json") else None
        except ValueError:
            body = None
        problems = self._problems(body)
        with self._lock:
            if problems:
                self._violations.append({"body": raw.decode("utf-8", "replace"),
                                         "problems": problems})
                return bird_error(422, "InvalidPayload", "The request did not pass validation",
                                  problems)
            canned = self._canned.popleft() if self._canned else None
        if (body.get("body") or {}).get("type") in MEDIA_ITEMS and not self.mms:  # [inferred] refusal
            return bird_error(422, "InvalidPayload", "The channel cannot send media messages")
        if canned is not None and not (canned.body is None and 200 <= canned.status < 300):
            await sleep_unless_gone(request, canned.delay, self.closing)
            self._record_request(body, canned.status, canned=True)
            if isinstance(canned.body, bytes):
                return Response(canned.body, status_code=canned.status, headers=canned.headers)
            answer = default_error(canned.status) if canned.body is None else canned.body
            return JSONResponse(answer, status_code=canned.status, headers=canned.headers)
        resource = self._create(body)
        self._record_request(body, 202, canned=canned is not None)
        if canned is not None:
            # The message exists already: a client timing out now has an unknown outcome.
            await sleep_unless_gone(request, canned.delay, self.closing)
        return JSONResponse(resource, status_code=202,
                            headers=canned.headers if canned is not None else None)

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        now = iso_now()
        resource = {
            "id": str(uuid.uuid4()), "channelId": self.channel_id,
            "sender": {"connector": {"id": str(uuid.uuid4()),
                                     "identifierValue": self.channel_number}},
            "receiver": {"contacts": [{"id": str(uuid.uuid4()), **c}
                                      for c in body["receiver"]["contacts"]]},
            "body": body.get("body"), "reference": body.get("reference", ""),
            "status": "accepted", "direction": "outgoing",
            "createdAt": now, "updatedAt": now, "lastStatusAt": now,
        }
        with self._lock:
            self._messages.append({"id": resource["id"], "request": body, "status": "accepted",
                                   "reference": resource["reference"], "resource": resource})
        return copy.deepcopy(resource)

    def _record_request(self, body: Any, status: int, *, canned: bool) -> None:
        with self._lock:
            self._requests.append({"body": body, "status": status, "canned": canned,
                                   "time": time.time()})

    async def _get_channel(self, request: Request) -> Response:
        refused = self._refusal(request)
        return refused or JSONResponse({
            "id": self.channel_id, "platformId": "sms-messagebird", "name": "SMS",
            "identifier": self.channel_number, "status": self.channel_status,
            # docs.bird.com .../programmable-sms "Checking if a channel is MMS capable"
            **({"capabilities": {"messaging": {"messaging": {"outgoing": {"mms": {
                "name": "mms", "status": "active", "paused": False}}}}}} if self.mms else {}),
        })

    async def _list(self, request: Request) -> Response:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        query = dict(request.query_params)
        with self._lock:
            self._lookups.append(query)
            found = [copy.deepcopy(m["resource"]) for m in reversed(self._messages)
                     if query.get("reference") in (None, m["reference"])
                     and query.get("status") in (None, m["status"])]
        limit = int(query.get("limit", "10"))
        return JSONResponse({"results": found[:limit], "nextPageToken": ""})

    async def _get_message(self, request: Request) -> Response:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        try:
            return JSONResponse(self.message(request.path_params["id"])["resource"])
        except KeyError:
            return bird_error(404, "NotFound", "The requested resource was not found")
