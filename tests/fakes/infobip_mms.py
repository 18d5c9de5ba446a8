"""Infobip's MMS API in the fake: POST /mms/1/advanced and GET /mms/1/logs.

From Infobip's published OpenAPI document (api-evangelist/infobip
openapi/infobip-mms-openapi.json, 3.210.0): MmsAdvancedRequest {bulkId?, messages: [{
destinations: [{to, messageId?}], from?, messageSegments: [text | link {contentUrl,
contentType?} | binary | smil | uploaded reference], title (<= 66), notifyUrl,
intermediateReport, validityPeriod (minutes, 48 h at most), callbackData, sendAt, ...}]},
answered with SendResult {bulkId, messages: [{to, status, messageId}]}; delivery reports to
notifyUrl as {results: [MmsReportSingle {bulkId, messageId, to, sentAt, doneAt, smsCount,
mccMnc, callbackData, price, status, error}]} (webhook receive-outbound-mms-message-reports);
the logs (MmsReport) name `from` and `mmsCount`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

MMS_SEND_PATH = "/mms/1/advanced"
MMS_LOGS_PATH = "/mms/1/logs"
MESSAGE_FIELDS = frozenset({
    "callbackData", "deliveryTimeWindow", "destinations", "from", "intermediateReport",
    "notifyUrl", "regional", "sendAt", "messageSegments", "validityPeriod", "title",
    "entityId", "applicationId"})
SEGMENT_FIELDS = (  # one of these shapes, by the property that identifies it
    ("text", frozenset({"contentId", "text"})),
    ("contentUrl", frozenset({"contentId", "contentType", "contentUrl"})),
    ("contentBase64", frozenset({"contentId", "contentType", "contentBase64"})),
    ("smil", frozenset({"contentId", "contentType", "smil"})),
    ("uploadedContentId", frozenset({"contentId", "uploadedContentId"})),
)


def mms_problems(raw: bytes) -> list[tuple[str, str]]:
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
        problems += [(f"{at}.{name}", "is not a MmsAdvancedMessage property")
                     for name in sorted(set(msg) - MESSAGE_FIELDS)]
        destinations = msg.get("destinations")
        if not isinstance(destinations, list) or not destinations or not all(
                isinstance(d, dict) and isinstance(d.get("to"), str) and len(d["to"]) <= 50
                for d in destinations):
            problems.append((f"{at}.destinations", "must be [{to (<= 50), messageId?}]"))
        segments = msg.get("messageSegments")
        if not isinstance(segments, list) or not segments:
            problems.append((f"{at}.messageSegments", "must be a non-empty array"))
            segments = []
        for j, segment in enumerate(segments):
            shape = next((fields for key, fields in SEGMENT_FIELDS
                          if isinstance(segment, dict) and key in segment), None)
            if shape is None or set(segment) - shape:
                problems.append((f"{at}.messageSegments[{j}]", "is no documented segment"))
            elif not str(segment.get("contentId", "a")).isalpha():
                problems.append((f"{at}.messageSegments[{j}].contentId", "[a-zA-Z] only"))
        if len(str(msg.get("title", ""))) > 66:
            problems.append((f"{at}.title", "is longer than 66"))
        validity = msg.get("validityPeriod", 1)
        if not isinstance(validity, int) or validity < 1:
            problems.append((f"{at}.validityPeriod", "must be whole minutes"))
    return problems


class InfobipMms:
    """Mixed into FakeInfobip: MMS messages share its store, canned answers and reports."""

    async def _mms_send(self, request: Request) -> Response:
        fake: Any = self
        key = fake._key(request)
        if key is None:
            return fake._unauthorized()  # type: ignore[no-any-return]
        raw = await request.body()
        problems = mms_problems(raw)
        with fake._lock:
            fake._send_calls += 1
            if problems:
                fake._violations.append({"body": raw.decode("utf-8", "replace"),
                                         "errors": problems})
                return JSONResponse({"requestError": {"serviceException": {
                    "messageId": "BAD_REQUEST", "text": "Bad request"}}}, status_code=400)
            canned = fake._canned.popleft() if fake._canned else None
        if canned is not None and canned.status >= 300:
            return JSONResponse(canned.body, status_code=canned.status, headers=canned.headers)
        return JSONResponse(self._accept_mms(key, json.loads(raw)))

    def _accept_mms(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        fake: Any = self
        bulk_id, answers = body.get("bulkId") or str(uuid.uuid4().int)[:19], []
        with fake._lock:
            for msg in body["messages"]:
                text = "".join(s.get("text", "") for s in msg["messageSegments"])
                media = [s for s in msg["messageSegments"] if "text" not in s]
                for dest in msg["destinations"]:
                    message_id = dest.get("messageId") or str(uuid.uuid4())
                    status = fake._refusal(key, dest["to"], message_id, "")
                    answers.append({"to": dest["to"], "messageId": message_id,
                                    "status": _status(status)})
                    if status == "REJECTED_DUPLICATE_MESSAGE_ID":
                        continue
                    fake._messages.append({
                        "kind": "mms", "message_id": message_id, "bulk_id": bulk_id,
                        "api_key": key, "to": dest["to"], "sender": msg.get("from", ""),
                        "text": text, "media": media, "title": msg.get("title"),
                        "message_count": 1, "status": status, "error": "NO_ERROR",
                        "callback_url": msg.get("notifyUrl"),
                        "intermediate": bool(msg.get("intermediateReport", False)),
                        "content_type": "application/json",
                        "callback_data": msg.get("callbackData"), "sent_at": time.time(),
                        "done_at": None, "body": msg,
                        "validity": 60 * msg["validityPeriod"]
                        if "validityPeriod" in msg else None,
                    })
        return {"bulkId": bulk_id, "messages": answers}

    async def _mms_logs(self, request: Request) -> Response:
        fake: Any = self
        key = fake._key(request)
        if key is None:
            return fake._unauthorized()  # type: ignore[no-any-return]
        wanted = set(request.query_params.getlist("messageId"))
        with fake._lock:
            fake.lookups.append({k: request.query_params.getlist(k)
                                 for k in request.query_params})
            found = [m for m in reversed(fake._messages) if m["api_key"] == key
                     and m.get("kind") == "mms" and (not wanted or m["message_id"] in wanted)]
            results = [{"bulkId": m["bulk_id"], "messageId": m["message_id"], "to": m["to"],
                        "from": m["sender"], "mmsCount": 1, "status": _status(m["status"])}
                       for m in found]
        return JSONResponse({"results": results})


def _status(name: str) -> dict[str, Any]:
    from .infobip import status_object  # the one table of Infobip statuses

    return status_object(name)


def mms_report(report: dict[str, Any]) -> dict[str, Any]:
    """An SMS delivery report rewritten as the pushed MMS report (MmsReportSingle: no sender,
    `smsCount` for the part count)."""
    report = dict(report)
    report.pop("sender")
    report["smsCount"] = report.pop("messageCount")
    return report
