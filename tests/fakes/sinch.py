"""Fake Sinch SMS REST API (send, list and get batches) plus HMAC-signed delivery reports."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .server import Canned, CannedAnswers, LocalHostOnly, ServedApp, sleep_unless_gone

BATCHES = "/xms/v1/{plan}/batches"
RECIPIENT_REPORT = "/xms/v1/{service_plan_id}/batches/{batch_id}/delivery_report/{recipient_msisdn}"
MSISDN = re.compile(r"(?:\+|00)?([1-9]\d{6,14})")
SENDER = re.compile(r"(?:\+|00)?[1-9]\d{6,14}|\d{3,8}|(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
FIELDS = frozenset({"to", "from", "body", "type", "delivery_report", "send_at", "expire_at",
                    "callback_url", "client_reference", "feedback_enabled", "flash_message",
                    "truncate_concat", "max_number_of_message_parts", "from_ton", "from_npi",
                    "udh", "parameters", "strict_validation"})
# mt_media batches (MMS, where Sinch enabled it for the plan): MediaBody {url, message?, subject?}
MEDIA_FIELDS = frozenset({"url", "message", "subject"})
REPORT_KINDS = frozenset({"none", "summary", "full", "per_recipient", "per_recipient_final"})
FINAL = frozenset({"Delivered", "Failed", "Expired", "Rejected", "Aborted", "Cancelled",
                   "Deleted", "Unknown"})
# Delivery-report code sent when a test names none (Sinch's own codes, 0 = delivered).
DEFAULT_CODES = {"Queued": 400, "Dispatched": 401, "Delivered": 0, "Failed": 402,
                 "Aborted": 403, "Expired": 406, "Cancelled": 407, "Rejected": 408,
                 "Deleted": 402, "Unknown": 0}
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def sinch_signature(secret: str, body: bytes, nonce: str, timestamp: str) -> str:
    """x-sinch-webhook-signature: b64 HMAC-SHA256(secret, body + "." + nonce + "." + timestamp)."""
    message = body + f".{nonce}.{timestamp}".encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def ulid() -> str:
    """A 26-character id like Sinch's batch ids (01FC66621XXXXX119Z8PMV1QPQ)."""
    return "01" + "".join(secrets.choice(_CROCKFORD) for _ in range(24))


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error(status: int, code: str | None, text: str) -> Response:
    """Sinch's `{"code", "text"}` error body (400/403); other statuses carry text only."""
    body = {"code": code, "text": text} if code else {"text": text}
    return JSONResponse(body, status_code=status)


def _moment(stamp: Any) -> datetime:
    """An ISO-8601 time as Sinch reads it (no offset = UTC); ValueError when it is not one."""
    if not isinstance(stamp, str):
        raise ValueError(stamp)
    moment = datetime.fromisoformat(stamp)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _invalid_times(sent: dict[str, Any]) -> Response | None:
    """send_at/expire_at: ISO-8601; expire_at after send_at and at most 3 days after it."""
    try:
        send_at = _moment(sent["send_at"]) if "send_at" in sent else datetime.now(UTC)
        expire_at = _moment(sent["expire_at"]) if "expire_at" in sent else None
    except ValueError:
        return error(400, "syntax_invalid_parameter_format", "send_at/expire_at is not ISO-8601")
    if expire_at is not None and not send_at < expire_at <= send_at + timedelta(days=3):
        return error(400, "syntax_constraint_violation",
                     "expire_at must be after send_at and at most 3 days after it")
    return None


class FakeSinch(CannedAnswers, ServedApp):
    """Starlette fake of the XMS batches API for service plans {plan id: API token}."""

    contract_vendor = "sinch"

    def __init__(self, plans: Mapping[str, str], *, secrets: Mapping[str, str] | None = None,
                 default_originator: str | None = None) -> None:
        super().__init__()
        self.plans = dict(plans)
        self.secrets = dict(secrets or {})  # plan id -> webhook HMAC secret (opt-in per plan)
        self.default_originator = default_originator
        self._lock = threading.Lock()
        self._batches: list[dict[str, Any]] = []
        self._canned: deque[Canned] = deque()
        self.create_calls = 0
        self.list_calls: list[dict[str, str]] = []
        routes = [Route(BATCHES, self._create, methods=["POST"]),
                  Route(BATCHES, self._list, methods=["GET"]),
                  Route(BATCHES + "/{batch_id}", self._get, methods=["GET"])]
        self._asgi = LocalHostOnly(Starlette(routes=routes))

    # ---- test-side API ----

    @property
    def batches(self) -> list[dict[str, Any]]:
        """Created batches in order: id, plan, request (the JSON sent), resource, statuses."""
        with self._lock:
            return copy.deepcopy(self._batches)

    def batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._find(batch_id))

    def send_status(self, batch_id: str, status: str, code: int | None = None, *,
                    extra: Mapping[str, Any] | None = None, signature_override: str | None = None,
                    url_override: str | None = None, timestamp: int | None = None,
                    timeout: float = 10.0) -> httpx.Response:
        """POST a per-recipient delivery report for the batch as Sinch would (blocking)."""
        with self._lock:
            record = self._find(batch_id)
            kind = record["resource"]["delivery_report"]
            if not kind.startswith("per_recipient"):
                raise ValueError(f"batch asked for {kind!r} reports, not per-recipient ones")
            if kind == "per_recipient_final" and status not in FINAL:
                raise ValueError("per_recipient_final batches get final statuses only")
            url = url_override or record["resource"].get("callback_url")
            body = self._report(record, status, DEFAULT_CODES[status] if code is None else code)
            secret = self.secrets.get(record["plan"])
        if not extra:
            # The deliveryReport webhook names the recipient report's format by reference:
            # that of "Retrieve a recipient delivery report".
            self.contract.response("sinch", "sinch-sms.openapi.json", "GET", RECIPIENT_REPORT,
                                   200, json.dumps(body).encode())
        body.update(extra or {})
        raw = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            nonce, stamp = ulid(), str(int(time.time()) if timestamp is None else timestamp)
            headers.update({
                "x-sinch-webhook-signature-nonce": nonce,
                "x-sinch-webhook-signature-timestamp": stamp,
                "x-sinch-webhook-signature-algorithm": "HmacSHA256",
                "x-sinch-webhook-signature": signature_override
                or sinch_signature(secret, raw, nonce, stamp),
            })
        if not url:
            raise ValueError(f"batch {batch_id} has no callback_url; pass url_override")
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            response = client.post(url, content=raw, headers=headers)
        with self._lock:
            self._find(batch_id)["statuses"].append(status)
        return response

    # ---- internals ----

    def _find(self, batch_id: str) -> dict[str, Any]:
        for record in self._batches:
            if record["id"] == batch_id:
                return record
        raise KeyError(batch_id)

    @staticmethod
    def _report(record: dict[str, Any], status: str, code: int) -> dict[str, Any]:
        resource, now = record["resource"], datetime.now(UTC)
        report: dict[str, Any] = {
            "type": "recipient_delivery_report_mms" if resource["type"] == "mt_media"
            else "recipient_delivery_report_sms", "batch_id": record["id"],
            "recipient": resource["to"][0], "code": code, "status": status, "at": iso(now),
            "operator_status_at": iso(now.replace(microsecond=0)), "encoding": "GSM",
            "number_of_message_parts": 1, "operator": "23415",
        }
        if "client_reference" in resource:
            report["client_reference"] = resource["client_reference"]
        if record["request"].get("from") is None:
            report["applied_originator"] = resource["from"]
        return report

    def _plan(self, request: Request) -> str | None:
        plan = request.path_params["plan"]
        token = self.plans.get(plan)
        given = request.headers.get("authorization", "")
        if token is None or not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return None
        return str(plan)

    async def _create(self, request: Request) -> Response:
        plan = self._plan(request)
        if plan is None:
            return error(401, None, "Unauthorized")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return error(415, None, "Content-Type must be application/json")
        try:
            sent = json.loads(await request.body())
        except ValueError:
            return error(400, "syntax_invalid_json", "The request body is not valid JSON")
        with self._lock:
            self.create_calls += 1
        problem = self._invalid(sent)
        if problem is not None:
            return problem
        with self._lock:
            canned = self._canned.popleft() if self._canned else None
        if canned is not None and not (canned.body is None and 200 <= canned.status < 300):
            await sleep_unless_gone(request, canned.delay, self.closing)
            if isinstance(canned.body, bytes):
                return Response(canned.body, status_code=canned.status, headers=canned.headers)
            body = canned.body
            if body is None:
                body = {"text": HTTPStatus(canned.status).phrase}
            return JSONResponse(body, status_code=canned.status, headers=canned.headers)
        resource = self._store(plan, sent)
        if canned is not None:
            # Created already: a client timing out here sees an unknown outcome, as in production.
            await sleep_unless_gone(request, canned.delay, self.closing)
        return JSONResponse(resource, status_code=201, headers=canned.headers if canned else {})

    def _invalid(self, sent: Any) -> Response | None:
        """Sinch's documented checks: 400 syntax_* for the request, 403 for what it cannot do."""
        if not isinstance(sent, dict) or set(sent) - FIELDS:
            return error(400, "syntax_invalid_json", "The JSON does not conform to the API")
        to, body, sender = sent.get("to"), sent.get("body"), sent.get("from")
        if sent.get("type") == "mt_media":
            if not isinstance(body, dict) or set(body) - MEDIA_FIELDS or not isinstance(
                    body.get("url"), str) or not all(isinstance(v, str) for v in body.values()):
                return error(400, "syntax_constraint_violation", "MediaBody needs a url")
            body = body.get("message") or "media"  # the length rule below, on its text
        if not isinstance(to, list) or not 1 <= len(to) <= 1000 or not isinstance(body, str):
            return error(400, "syntax_constraint_violation", "to (1-1000) and body are required")
        if not all(isinstance(n, str) and MSISDN.fullmatch(n) for n in to):
            return error(400, "syntax_invalid_parameter_format", f"Invalid MSISDN in {to}")
        if sender is None and self.default_originator is None:
            return error(400, "syntax_constraint_violation", "from is required")
        if sender is not None and not (isinstance(sender, str) and SENDER.fullmatch(sender)):
            return error(400, "syntax_invalid_parameter_format", f"Invalid originator {sender}")
        if not 1 <= len(body) <= 1600 or sent.get("type", "mt_text") not in ("mt_text",
                                                                             "mt_media"):
            return error(400, "syntax_constraint_violation", "body must be 1-1600 characters")
        if len(str(sent.get("client_reference", ""))) > 128:
            return error(400, "syntax_constraint_violation", "client_reference is too long")
        problem = _invalid_times(sent)
        if problem is not None:
            return problem
        callback, kind = sent.get("callback_url"), sent.get("delivery_report", "none")
        if kind not in REPORT_KINDS:
            return error(400, "syntax_invalid_parameter_format", f"delivery_report {kind}")
        if callback is not None:
            parts = urlsplit(str(callback))
            if parts.scheme not in ("http", "https") or not parts.hostname or len(callback) > 2048:
                return error(400, "syntax_invalid_parameter_format", "Invalid callback_url")
        elif kind != "none":
            return error(403, "missing_callback_url", "Callback requested but no URL provided")
        return None

    def _store(self, plan: str, sent: dict[str, Any]) -> dict[str, Any]:
        now = datetime.now(UTC)
        resource: dict[str, Any] = {
            "id": ulid(), "from": sent.get("from") or self.default_originator,
            # Sinch answers with the numbers normalised: no "+" or "00".
            "to": [MSISDN.fullmatch(n).group(1) for n in sent["to"]],  # type: ignore[union-attr]
            "body": sent["body"], "type": sent.get("type", "mt_text"), "created_at": iso(now),
            "modified_at": iso(now), "canceled": False,
            "delivery_report": sent.get("delivery_report", "none"), "send_at": iso(now),
            "expire_at": (iso(_moment(sent["expire_at"])) if "expire_at" in sent
                          else iso(now + timedelta(days=3))),
            "flash_message": False,
            "feedback_enabled": False,
        }
        for name in ("callback_url", "client_reference"):
            if name in sent:
                resource[name] = sent[name]
        with self._lock:
            self._batches.append({"id": resource["id"], "plan": plan, "request": sent,
                                  "resource": resource, "statuses": [], "created": now})
        return copy.deepcopy(resource)

    async def _list(self, request: Request) -> Response:
        plan = self._plan(request)
        if plan is None:
            return error(401, None, "Unauthorized")
        query = request.query_params
        with self._lock:
            self.list_calls.append(dict(query))
        try:
            page, size = int(query.get("page", "0")), int(query.get("page_size", "30"))
            since = (datetime.fromisoformat(query["start_date"]) if "start_date" in query
                     else datetime.now(UTC) - timedelta(hours=24))
        except ValueError:
            return error(400, "syntax_invalid_parameter_format", "Invalid query parameter")
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
        reference = query.get("client_reference")
        with self._lock:
            found = [r["resource"] for r in self._batches if r["plan"] == plan
                     and r["created"] >= since and reference in (None, r["request"].get(
                         "client_reference"))]
        chosen = copy.deepcopy(found[page * size:(page + 1) * size])
        return JSONResponse({"count": len(found), "page": page, "batches": chosen,
                             "page_size": len(chosen)})

    async def _get(self, request: Request) -> Response:
        plan = self._plan(request)
        if plan is None:
            return error(401, None, "Unauthorized")
        with self._lock:
            found = [r["resource"] for r in self._batches
                     if r["plan"] == plan and r["id"] == request.path_params["batch_id"]]
        if not found:
            return error(404, None, "Batch not found")
        return JSONResponse(copy.deepcopy(found[0]))
