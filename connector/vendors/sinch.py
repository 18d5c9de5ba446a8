"""Sinch SMS REST API (XMS) with service-plan auth: JSON batches, HMAC-signed JSON reports.

Facts: https://developers.sinch.com/docs/sms/api-reference/sms/tag/Batches/,
https://developers.sinch.com/docs/sms/api-reference/sms/tag/Delivery-reports/,
https://developers.sinch.com/docs/sms/api-reference/status-codes/ and the SDKs' webhook HMAC
validation (tables in shared/reference/vendors.md section 4).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote

import msgspec
import structlog

from connector import http
from connector.errors import (
    AmbiguousOutcome,
    BadRequest,
    InvalidSignature,
    VendorAuthFailed,
    VendorError,
)
from connector.mms import region
from connector.model import Accepted, Mms, Outgoing, Status, StatusUpdate
from connector.vendors.base import REJECTED, Callback, classify

log = structlog.get_logger("connector.vendors.sinch")

REGIONS: Final = ("us", "eu", "au", "br", "ca")
# developers.sinch.com/docs/sms/api-reference/mms-support: MMS destinations of the SMS API.
MMS_REGIONS: Final = frozenset({"US", "CA", "AU", "PR"})
DLR_TYPE: Final = "recipient_delivery_report_sms"
MMS_DLR_TYPE: Final = "recipient_delivery_report_mms"  # the same report, for mt_media batches
SIGNATURE: Final = "x-sinch-webhook-signature"
# expire_at may be at most 3 days after send_at (which we leave to Sinch: now). A longer
# CONNECTOR_VALIDITY is clamped to that, less a minute so our clock running ahead of Sinch's
# cannot push the time past its limit.
MAX_VALIDITY: Final = 3 * 86400 - 60

# https://developers.sinch.com/docs/sms/api-reference/sms/tag/Delivery-reports/ (statuses)
STATUS_MAP: Final[Mapping[str, Status]] = {
    "Queued": Status.ACCEPTED,
    "Dispatched": Status.SENT,  # accepted for delivery by the SMSC
    "Delivered": Status.DELIVERED,
    "Failed": Status.UNDELIVERED,
    "Deleted": Status.UNDELIVERED,  # deleted by a remote SMSC: invalid or opted-out number
    "Expired": Status.EXPIRED,
    "Rejected": Status.REJECTED,  # the SMSC refused it
    "Aborted": Status.FAILED,  # stopped inside Sinch before reaching any SMSC
    "Cancelled": Status.FAILED,  # the batch was cancelled before dispatch (Twilio `canceled`)
    # Final, but it means "reached the SMSC, no readable receipt": that is what `sent` says.
    # Reporting `failed` would invite the platform to re-send a message that likely arrived.
    "Unknown": Status.SENT,
}

# Delivery-report codes Sinch defines itself; other values are the operator's SMPP codes.
# None of them, nor any status, says for certain that the recipient opted out (Deleted may as
# well be an invalid number), so Sinch reports never mark an update opted_out.
DLR_CODES: Final[Mapping[str, str]] = {
    "402": "Message unroutable", "403": "Internal error", "404": "Temporary delivery failure",
    "405": "Unmatched parameter", "406": "Internal expiry", "407": "Cancelled",
    "408": "Internal reject", "410": "Unmatched default originator",
    "411": "Exceeded parts limit", "412": "Unprovisioned region",
    "413": "Blocked: account blocked, possibly out of credit",
}

# Error `code` of a 400/403 body -> (class, platform code). 401/429/5xx go by HTTP status.
ERROR_CODES: Final[Mapping[str, tuple[str, str]]] = {
    "syntax_invalid_parameter_format": (REJECTED, "invalid_recipient"),  # e.g. a bad MSISDN
    "syntax_invalid_json": (REJECTED, "rejected"),
    "syntax_constraint_violation": (REJECTED, "rejected"),
    "unknown_group": (REJECTED, "invalid_recipient"),
    "unknown_campaign": (REJECTED, "sender_not_allowed"),  # campaign does not fit the sender
    "missing_callback_url": (REJECTED, "rejected"),
}


class _Batch(msgspec.Struct):
    id: str
    from_: str | None = msgspec.field(default=None, name="from")


class _Page(msgspec.Struct):
    batches: list[_Batch] = []


class _Error(msgspec.Struct):
    code: str | None = None
    text: str | None = None


class _Report(msgspec.Struct):
    type: str = ""
    batch_id: str | None = None
    status: str = ""
    code: int | str | None = None  # documented as an integer; a string must not drop it
    at: str | None = None
    client_reference: str | None = None
    applied_originator: str | None = None
    number_of_message_parts: int | None = None


_batch = msgspec.json.Decoder(_Batch)
_page = msgspec.json.Decoder(_Page)
_error = msgspec.json.Decoder(_Error)
_report = msgspec.json.Decoder(_Report)


def signature(secret: str, body: bytes, nonce: str, timestamp: str) -> str:
    """Base64 HMAC-SHA256 over the raw body, nonce and timestamp joined by dots."""
    signed = body + b"." + nonce.encode() + b"." + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()


def _rfc3339(ts: float) -> str:
    """Whole seconds in UTC, `Z` suffix: e.g. 2025-01-31T12:00:00Z."""
    return datetime.fromtimestamp(int(ts), UTC).isoformat().replace("+00:00", "Z")


def _when(stamp: str | None) -> float | None:
    try:
        return datetime.fromisoformat(stamp).timestamp() if stamp else None
    except ValueError:
        return None


def _enabled(flag: str) -> bool:
    return flag.strip().lower() in ("true", "1", "yes", "enabled")


def _failure(response: http.Response, detail: str = "") -> VendorError:
    try:
        error = _error.decode(response.content)
    except msgspec.DecodeError:
        error = _Error()
    return classify(response, vendor="sinch", vendor_code=error.code,
                    detail=error.text or detail, codes=ERROR_CODES)


class Sinch:
    name: str = "sinch"
    required: tuple[str, ...] = ("service-plan-id", "api-token")
    optional: tuple[str, ...] = ("region", "webhook-secret", "base-url", "mms")
    hosts: tuple[str, ...] = tuple(f"{region}.sms.api.sinch.com" for region in REGIONS)
    # Sinch calls the callback_url given per batch, so our signed token rides along.
    token_callbacks: bool = True

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    def base_url(self, settings: Mapping[str, str]) -> str:
        region = settings.get("region", "us").strip().lower()
        if region not in REGIONS:
            raise BadRequest(f"Chan-Region {region[:16]!r} is not one of {', '.join(REGIONS)}")
        given = settings.get("base-url")
        return given.rstrip("/") if given else f"https://{region}.sms.api.sinch.com"

    def _batches(self, settings: Mapping[str, str]) -> str:
        plan = quote(settings["service-plan-id"], safe="")
        return f"{self.base_url(settings)}/xms/v1/{plan}/batches"

    @staticmethod
    def _headers(settings: Mapping[str, str]) -> dict[str, str]:
        return {"Accept": "application/json",
                "Authorization": f"Bearer {settings['api-token']}"}

    def build_send(self, message: Outgoing, settings: Mapping[str, str]) -> http.Request:
        # One recipient per batch: the batch id then names exactly one message. E.164 with
        # its "+", which Sinch documents as optional and accepts.
        body = {"from": message.sender, "to": [message.to_e164], "body": message.text,
                "delivery_report": "per_recipient", "callback_url": message.callback_url,
                "client_reference": message.message_id}
        if message.validity is not None:
            body["expire_at"] = _rfc3339(self.clock() + min(message.validity, MAX_VALIDITY))
        return http.request("POST", self._batches(settings), self._headers(settings), json=body)

    def parse_send(self, response: http.Response) -> Accepted:
        if response.status_code not in (200, 201):
            raise _failure(response)
        try:
            batch = _batch.decode(response.content)
        except msgspec.DecodeError:
            # Sinch took the batch but we cannot read its id: look it up by our reference.
            raise AmbiguousOutcome("sinch: batch created but the answer was unreadable") from None
        return Accepted(vendor_message_id=batch.id, from_number=batch.from_)

    def mms_refusal(self, to_e164: str, mms: Mms, settings: Mapping[str, str]) -> str | None:
        # MMS over the SMS REST API exists only once Sinch enables it for the account (through
        # the account manager; the API cannot tell), so the operator says so with Chan-Mms.
        if not _enabled(settings.get("mms", "")):
            return "the Sinch service plan is not marked MMS-enabled (Chan-Mms: true)"
        if region(to_e164) not in MMS_REGIONS:
            return "sinch sends MMS to US, Canadian, Australian and Puerto Rican numbers only"
        if len(mms.media) != 1:
            return "a sinch MMS batch carries exactly one media URL"
        return None

    def build_mms(self, message: Outgoing, settings: Mapping[str, str]) -> http.Request:
        """An mt_media batch: the SMS batch with a MediaBody {url, message, subject}."""
        assert message.mms is not None
        media: dict[str, str] = {"url": message.mms.media[0].url}
        if message.text:
            media["message"] = message.text
        if message.mms.subject:
            media["subject"] = message.mms.subject
        body: dict[str, object] = {
            "type": "mt_media", "from": message.sender, "to": [message.to_e164], "body": media,
            "delivery_report": "per_recipient", "callback_url": message.callback_url,
            "client_reference": message.message_id}
        if message.validity is not None:
            body["expire_at"] = _rfc3339(self.clock() + min(message.validity, MAX_VALIDITY))
        return http.request("POST", self._batches(settings), self._headers(settings), json=body)

    def parse_mms(self, response: http.Response) -> Accepted:
        return self.parse_send(response)

    def mms_capability(self, settings: Mapping[str, str], response: http.Response
                       ) -> bool | None:
        return _enabled(settings.get("mms", ""))

    def build_verify(self, settings: Mapping[str, str]) -> http.Request:
        return http.request("GET", self._batches(settings), self._headers(settings),
                            params={"page_size": "1"})

    def parse_verify(self, response: http.Response) -> None:
        if response.status_code == 200:
            return
        if response.status_code in (401, 403, 404):
            raise VendorAuthFailed("sinch: the service plan ID and API token were not accepted")
        raise _failure(response, "could not check the credentials")

    def build_lookup(self, message: Outgoing, settings: Mapping[str, str]
                     ) -> http.Request | None:
        # List Batches filters by client_reference (batches of the last 24 h by default).
        return http.request(
            "GET", self._batches(settings), self._headers(settings),
            params={"client_reference": message.message_id, "page_size": "1"})

    def parse_lookup(self, response: http.Response) -> Accepted | None:
        if response.status_code != 200:
            raise _failure(response, "could not look the batch up")
        batches = _page.decode(response.content).batches
        if not batches:
            return None
        return Accepted(vendor_message_id=batches[0].id, from_number=batches[0].from_)

    def verify(self, callback: Callback, settings: Mapping[str, str]) -> None:
        secret = settings.get("webhook-secret")
        if not secret:
            return  # HMAC is opt-in per service plan; the signed ?m= token already matched
        headers = callback.headers
        given = headers.get(SIGNATURE, "")
        nonce = headers.get(SIGNATURE + "-nonce", "")
        stamp = headers.get(SIGNATURE + "-timestamp", "")
        if not (given and nonce and stamp):
            raise InvalidSignature("x-sinch-webhook-signature headers are missing")
        if headers.get(SIGNATURE + "-algorithm", "HmacSHA256").lower() != "hmacsha256":
            raise InvalidSignature("x-sinch-webhook-signature-algorithm is not HmacSHA256")
        try:
            skew = abs(self.clock() - float(stamp))
        except ValueError:
            raise InvalidSignature("x-sinch-webhook-signature-timestamp is not a number") from None
        # Sinch's SMS callback docs (developers.sinch.com, SMS API, Webhooks) give no window:
        # callback.max_age is the deployment's CONNECTOR_SIGNATURE_WINDOW.
        if skew > callback.max_age:
            raise InvalidSignature("x-sinch-webhook-signature-timestamp is too old or too new")
        if not hmac.compare_digest(signature(secret, callback.body, nonce, stamp), given):
            raise InvalidSignature("x-sinch-webhook-signature does not match")

    def parse_status(self, callback: Callback) -> list[StatusUpdate]:
        try:
            report = _report.decode(callback.body)
        except msgspec.DecodeError:
            log.warning("unreadable_callback", vendor=self.name)
            return []
        if report.type not in (DLR_TYPE, MMS_DLR_TYPE):
            # Batch summaries and inbound messages: we ask for per-recipient reports only.
            log.info("ignored_callback", vendor=self.name, callback_type=report.type)
            return []
        status = STATUS_MAP.get(report.status)
        if status is None:
            log.warning("unknown_vendor_status", vendor=self.name, vendor_status=report.status)
            return []
        failed = status.terminal and status is not Status.DELIVERED and report.code is not None
        code = str(report.code) if failed else None
        return [StatusUpdate(
            status=status,
            vendor_message_id=report.batch_id,
            message_ref=report.client_reference or None,
            occurred_at=_when(report.at),
            error_code=code,
            error_message=DLR_CODES.get(code) if code else None,
            from_number=report.applied_originator or None,
            segments=report.number_of_message_parts or None,
        )]
