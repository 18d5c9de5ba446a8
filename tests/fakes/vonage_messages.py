"""Vonage's Messages API in the fake: POST /v1/messages on the `mms` channel, and its signed
message-status webhook.

From the Messages API OpenAPI document (api-evangelist/vonage
openapi/_original/vonage-messages-openapi.yml, 1.20.0): OutboundMMSImage/vCard/Audio/Video/File
({message_type, <type>: {url, caption?}}) and OutboundMMSContent ({message_type: content,
content: [{type, url, caption?}]}), with channelOptionsMms {to, from, channel: mms, ttl 300-259200}
and outboundMessageCommon {client_ref (<= 100), webhook_url, webhook_version}; Basic or bearer
auth; 202 {message_uuid}; errors as RFC 7807 problems (422 invalid parameters, 401). Status:
messageStatusMMS {message_uuid, to, from, timestamp, status, error?, client_ref, channel}, sent
to webhook_url with `Authorization: Bearer <HS256 JWT>` signed by the account's signature
secret and carrying payload_hash = sha256(body) (developer.vonage.com signed webhooks).
Every send it receives and every status it sends is also held to that document's subset
(specs/vonage-messages.openapi.json) in `contract_violations`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

MESSAGES_PATH = "/v1/messages"
TYPES = ("image", "vcard", "audio", "video", "file")
COMMON = frozenset({"to", "from", "channel", "message_type", "ttl", "client_ref",
                    "webhook_url", "webhook_version", "mms", "trusted_sender",
                    "trusted_recipient", "failover"})
PROBLEM = "https://developer.vonage.com/api-errors/messages#"


def mms_problems(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["body must be a JSON object"]
    kind = body.get("message_type")
    problems = [f"{name}: not a property of an MMS message" for name in sorted(
        set(body) - COMMON - {kind})]
    if body.get("channel") != "mms":
        problems.append("channel must be mms")
    for name in ("to", "from"):
        if not (isinstance(body.get(name), str) and body[name].isdigit()):
            problems.append(f"{name}: E.164 digits without + are required")
    if kind in TYPES:
        item = body.get(kind)
        if not isinstance(item, dict) or not isinstance(item.get("url"), str) or set(
                item) - {"url", "caption"} or item.get("caption") == "":
            problems.append(f"{kind}: {{url, caption?}} is required")
    elif kind == "text":  # OutboundMMSText
        if not isinstance(body.get("text"), str) or not body["text"]:
            problems.append("text: a non-empty string is required")
    elif kind == "content":
        items = body.get("content")
        if not isinstance(items, list) or not items or not all(
                isinstance(i, dict) and i.get("type") in TYPES and isinstance(i.get("url"), str)
                and not set(i) - {"type", "url", "caption"} for i in items):
            problems.append("content: [{type, url, caption?}] is required")
    else:
        problems.append(f"message_type {kind!r} is not an MMS type this fake knows")
    ttl = body.get("ttl", 300)
    if not isinstance(ttl, int) or not 300 <= ttl <= 259200:
        problems.append("ttl must be 300-259200")
    if len(str(body.get("client_ref", ""))) > 100:
        problems.append("client_ref is longer than 100")
    if body.get("webhook_version", "v1") not in ("v0.1", "v1"):
        problems.append("webhook_version must be v0.1 or v1")
    return problems


class VonageMessages:
    """Mixed into FakeVonage: MMS sends share its accounts, violations and signing secrets."""

    mms_sent: list[dict[str, Any]]

    async def _messages_send(self, request: Request) -> Response:
        fake: Any = self
        creds = fake._credentials(request, {})
        if not fake._authentic(creds):
            return JSONResponse({"type": "https://developer.vonage.com/api-errors/#unathorized",
                                 "title": "You did not provide correct credentials.",
                                 "instance": str(uuid.uuid4())}, status_code=401,
                                media_type="application/problem+json")
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        problems = mms_problems(body)
        with fake._lock:
            fake._send_calls += 1
            if problems:
                fake._violations.extend(problems)
                return JSONResponse({"type": PROBLEM + "1150", "title": "Invalid params",
                                     "detail": "; ".join(problems),
                                     "instance": str(uuid.uuid4())}, status_code=422)
            canned = fake._canned.popleft() if fake._canned else None
        if canned is not None and canned.status >= 300:
            return JSONResponse(canned.body, status_code=canned.status, headers=canned.headers)
        message_uuid = str(uuid.uuid4())
        with fake._lock:
            self.mms_sent.append({"message_uuid": message_uuid, "api_key": creds[0],
                                  "body": body, "status": "accepted"})
        return JSONResponse({"message_uuid": message_uuid}, status_code=202)

    def mms_message(self, message_uuid: str) -> dict[str, Any]:
        fake: Any = self
        with fake._lock:
            return copy.deepcopy(self._mms(message_uuid))

    def _mms(self, message_uuid: str) -> dict[str, Any]:
        for sent in self.mms_sent:
            if sent["message_uuid"] == message_uuid:
                return sent
        raise KeyError(message_uuid)

    def send_mms_status(self, message_uuid: str, status: str, error_code: str | None = None,
                        *, secret_override: str | None = None, timeout: float = 10.0
                        ) -> httpx.Response:
        """POST a message-status webhook to the message's webhook_url, signed when the
        account signs (blocking)."""
        fake: Any = self
        with fake._lock:
            sent = self._mms(message_uuid)
            body = sent["body"]
            sent["status"] = status
            signing = fake.signing.get(sent["api_key"])
        event: dict[str, Any] = {
            "message_uuid": message_uuid, "to": body["to"], "from": body["from"],
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "status": status, "channel": "mms", "destination": {"network_code": "310260"},
            "usage": {"currency": "EUR", "price": "0.0150"},
        }
        if "client_ref" in body:
            event["client_ref"] = body["client_ref"]
        if error_code is not None:
            event["error"] = {"type": PROBLEM + error_code, "title": error_code,
                              "detail": "Delivery failed", "instance": str(uuid.uuid4())}
        raw = json.dumps(event).encode()
        fake.contract.webhook("vonage", "message-status", "application/json", raw)
        headers = {"Content-Type": "application/json"}
        secret = secret_override or (signing[0] if signing else None)
        if secret is not None:
            token = jwt.encode({"iat": int(time.time()), "jti": str(uuid.uuid4()),
                                "iss": "Vonage", "api_key": sent["api_key"],
                                "payload_hash": hashlib.sha256(raw).hexdigest()},
                               secret, algorithm="HS256")
            headers["Authorization"] = f"Bearer {token}"
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            return client.post(body["webhook_url"], content=raw, headers=headers)
