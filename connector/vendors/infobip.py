"""Infobip SMS API v3: JSON send with our own messageId, per-message JSON delivery reports.

Facts: https://www.infobip.com/docs/api/channels/sms/sms-messaging/outbound-sms/send-sms-messages,
https://www.infobip.com/docs/essentials/api-essentials/response-status-and-error-codes
(tables in shared/reference/vendors.md section 5).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from string import ascii_lowercase
from typing import Final

import msgspec
import structlog

from connector import http
from connector.errors import AmbiguousOutcome, VendorAuthFailed, VendorError
from connector.mms import content_type
from connector.model import Accepted, Mms, Outgoing, Status, StatusUpdate
from connector.msisdn import digits
from connector.vendors.base import AUTH, REJECTED, THROTTLED, TRANSIENT, Callback, classify, error_for

log = structlog.get_logger("connector.vendors.infobip")

# https://www.infobip.com/docs/essentials/api-essentials/response-status-and-error-codes#status-object
STATUS_MAP: Final[Mapping[str, Status]] = {
    "ACCEPTED": Status.ACCEPTED,
    "PENDING": Status.ACCEPTED,
    "DELIVERED": Status.DELIVERED,
    "UNDELIVERABLE": Status.UNDELIVERED,
    "EXPIRED": Status.EXPIRED,
    "REJECTED": Status.REJECTED,
}
# Statuses inside a group that mean "handed to the operator", not what the group says.
STATUS_BY_ID: Final[Mapping[tuple[str, int], Status]] = {
    ("PENDING", 3): Status.SENT,  # PENDING_WAITING_DELIVERY
    ("PENDING", 7): Status.SENT,  # PENDING_ENROUTE
    ("DELIVERED", 2): Status.SENT,  # DELIVERED_TO_OPERATOR: intermediate, not the handset
}
GROUPS: Final = ("ACCEPTED", "PENDING", "UNDELIVERABLE", "DELIVERED", "EXPIRED", "REJECTED")
_REFUSED: Final = frozenset({"REJECTED", "UNDELIVERABLE"})
DUPLICATE_MESSAGE_ID: Final = 23
# messages[].options.validityPeriod {amount, timeUnit}: Infobip caps anything over 48 h to 48 h,
# so CONNECTOR_VALIDITY is clamped to that here and the request says what will happen.
MAX_VALIDITY: Final = 48 * 3600
MAX_TITLE: Final = 66  # MmsAdvancedMessage.title maxLength

# Status id of a refusal inside a 200 -> (class, platform code). Unlisted ids: "rejected".
# Running out of credit is an account condition like Twilio 20005: every send fails until an
# operator tops up, so it is a 401 (the integration is broken), not a 422 about this message.
REFUSALS: Final[Mapping[str, tuple[str, str]]] = {
    "8": (REJECTED, "invalid_recipient"),  # REJECTED_PREFIX_MISSING
    "51": (REJECTED, "invalid_recipient"),  # MISSING_TO
    "52": (REJECTED, "invalid_recipient"),  # REJECTED_DESTINATION
    "10": (REJECTED, "opted_out"),  # REJECTED_DND
    "14": (REJECTED, "blocked"),  # REJECTED_DESTINATION_BLOCKLISTED
    "11": (REJECTED, "sender_not_allowed"),  # REJECTED_SOURCE: unregistered sender
    "13": (REJECTED, "sender_not_allowed"),  # REJECTED_SENDER: blocklisted sender
    "6": (REJECTED, "region_not_permitted"),  # REJECTED_NETWORK: out of coverage
    "19": (REJECTED, "region_not_permitted"),  # REJECTED_ROUTE_NOT_AVAILABLE
    "25": (REJECTED, "message_too_long"),  # over 25 parts or 4000 bytes
    "24": (REJECTED, "content_rejected"),  # REJECTED_INVALID_UDH
    "87": (REJECTED, "content_rejected"),  # SIGNALS_BLOCKED: anti-fraud
    "12": (AUTH, "insufficient_funds"),  # REJECTED_NOT_ENOUGH_CREDITS
    "17": (AUTH, "insufficient_funds"),  # REJECTED_PREPAID_PACKAGE_EXPIRED
    "21": (TRANSIENT, "vendor_unavailable"),  # REJECTED_SYSTEM_ERROR: "retry the submission"
}
# Status ids that mean the recipient opted out, in a send answer or a delivery report:
# REJECTED_DND (10, the destination is on a do-not-disturb list). REJECTED_DESTINATION_BLOCKLISTED
# (14) is left out: the docs do not say whose blocklist it is.
OPT_OUT_IDS: Final = frozenset(
    int(status) for status, (_, platform) in REFUSALS.items() if platform == "opted_out")
# HTTP error bodies: ApiError `errorCode` (v3) or legacy serviceException `messageId`.
ERROR_CODES: Final[Mapping[str, tuple[str, str]]] = {
    "E401": (AUTH, "vendor_auth_failed"),
    "UNAUTHORIZED": (AUTH, "vendor_auth_failed"),
    "E403": (AUTH, "vendor_auth_failed"),  # the key lacks the sms:message:send scope
    "FORBIDDEN": (AUTH, "vendor_auth_failed"),
    "E429": (THROTTLED, "throttled"),
    "TOO_MANY_REQUESTS": (THROTTLED, "throttled"),
    "E500": (TRANSIENT, "vendor_unavailable"),
    "GENERAL_ERROR": (TRANSIENT, "vendor_unavailable"),
}
# A 400's violation on one of these request properties says which field was wrong.
VIOLATIONS: Final[Mapping[str, str]] = {"to": "invalid_recipient", "sender": "sender_not_allowed"}


class _Code(msgspec.Struct, rename="camel"):
    """A `status` or `error` object: Infobip gives both the same shape."""

    group_id: int | None = None
    group_name: str | None = None
    id: int | None = None
    name: str | None = None
    description: str | None = None


class _Details(msgspec.Struct, rename="camel"):
    message_count: int | None = None


class _Sent(msgspec.Struct, rename="camel"):
    """One message in a send answer, a log or a delivery report (they share these fields)."""

    message_id: str
    status: _Code = msgspec.field(default_factory=_Code)
    error: _Code | None = None
    details: _Details | None = None  # the send answer's part count
    message_count: int | None = None  # logs and reports say it at the top level
    sender: str | None = None
    done_at: str | None = None
    sent_at: str | None = None


class _Envelope(msgspec.Struct):
    messages: list[_Sent] = []  # send answer
    results: list[_Sent] = []  # logs, delivery reports


class _Legacy(msgspec.Struct, rename="camel"):
    message_id: str | None = None
    text: str | None = None


class _Failure(msgspec.Struct, rename="camel"):
    """Both error bodies: v3 ApiError, and legacy {"requestError": {"serviceException"}}."""

    error_code: str | None = None
    description: str | None = None
    violations: list[dict[str, str]] = []  # {"property": ..., "violation": ...}
    request_error: dict[str, _Legacy] = {}


_envelope = msgspec.json.Decoder(_Envelope)
_failure = msgspec.json.Decoder(_Failure)
_encode = msgspec.json.Encoder()


def group(status: _Code) -> str | None:
    if status.group_name:
        return status.group_name
    if status.group_id is not None and 0 <= status.group_id < len(GROUPS):
        return GROUPS[status.group_id]
    return None


def _when(stamp: str | None) -> float | None:
    try:
        return datetime.fromisoformat(stamp).timestamp() if stamp else None
    except ValueError:
        return None


def _http_error(response: http.Response) -> VendorError:
    try:
        failure = _failure.decode(response.content)
    except msgspec.DecodeError:
        failure = _Failure()
    legacy = failure.request_error.get("serviceException")
    code = failure.error_code or (legacy.message_id if legacy else None)
    pairs = [(v.get("property", ""), v.get("violation", "")) for v in failure.violations]
    detail = "; ".join(filter(None, [failure.description or (legacy.text if legacy else None)]
                              + [f"{prop}: {text}" for prop, text in pairs]))
    for prop, _ in pairs:
        field = prop.rsplit(".", 1)[-1]
        if response.status_code == 400 and field in VIOLATIONS:
            return error_for(REJECTED, VIOLATIONS[field], f"infobip: {detail}", code)
    return classify(response, vendor="infobip", vendor_code=code, detail=detail, codes=ERROR_CODES)


def _update(result: _Sent) -> StatusUpdate | None:
    name = group(result.status) or ""
    status = STATUS_BY_ID.get((name, result.status.id or -1)) or STATUS_MAP.get(name)
    if status is None:
        log.warning("unknown_vendor_status", vendor="infobip", vendor_status=name)
        return None
    error = result.error if result.error and result.error.id else None
    code = text = None
    if error is not None:
        code, text = str(error.id), error.description or error.name
    elif status in (Status.UNDELIVERED, Status.EXPIRED, Status.REJECTED):
        # No error object: the status itself (REJECTED_DND, EXPIRED_EXPIRED...) is the reason.
        code, text = result.status.name, result.status.description
    return StatusUpdate(
        status=status, vendor_message_id=result.message_id, message_ref=result.message_id,
        occurred_at=_when(result.done_at or result.sent_at), error_code=code,
        error_message=text, from_number=result.sender or None,
        segments=result.message_count or None,
        opted_out=status is Status.REJECTED and result.status.id in OPT_OUT_IDS,
    )


class Infobip:
    name: str = "infobip"
    required: tuple[str, ...] = ("api-key", "base-url")
    optional: tuple[str, ...] = ()
    # Each account has its own https://<id>.api.infobip.com; api.infobip.com is the shared one.
    hosts: tuple[str, ...] = ("api.infobip.com", "*.api.infobip.com")
    token_callbacks: bool = True

    def base_url(self, settings: Mapping[str, str]) -> str:
        base = settings["base-url"].rstrip("/")
        # The portal shows the base URL without a scheme (xxxxx.api.infobip.com).
        return base if "://" in base else f"https://{base}"

    def _headers(self, settings: Mapping[str, str]) -> dict[str, str]:
        return {"Accept": "application/json", "Authorization": f"App {settings['api-key']}"}

    def build_send(self, message: Outgoing, settings: Mapping[str, str]) -> http.Request:
        sender = digits(message.sender) if message.sender.startswith("+") else message.sender
        sms: dict[str, object] = {
            "sender": sender,
            # Our id as Infobip's messageId: reports echo it, and a resend with the same id is
            # refused as a duplicate instead of sending the text twice.
            "destinations": [{"to": digits(message.to_e164), "messageId": message.message_id}],
            "content": {"text": message.text},
            "webhooks": {"delivery": {"url": message.callback_url, "intermediateReport": True},
                         "contentType": "application/json"},
        }
        if message.validity is not None:
            sms["options"] = {"validityPeriod": {
                "amount": min(message.validity, MAX_VALIDITY), "timeUnit": "SECONDS"}}
        body = {"messages": [sms]}
        return http.request("POST", f"{self.base_url(settings)}/sms/3/messages",
                            self._headers(settings), json=body)

    def parse_send(self, response: http.Response) -> Accepted:
        if response.status_code != 200:
            raise _http_error(response)
        try:
            (sent, *_) = _envelope.decode(response.content).messages
        except (msgspec.DecodeError, ValueError):
            # A 200 we cannot read: Infobip most likely has the message; the look-up decides.
            raise AmbiguousOutcome("infobip: the send answer could not be read") from None
        status = sent.status
        if group(status) in _REFUSED and status.id != DUPLICATE_MESSAGE_ID:
            kind, code = REFUSALS.get(str(status.id), (REJECTED, "rejected"))
            text = ": ".join(filter(None, [status.name, status.description]))
            vendor_code = status.name or (None if status.id is None else str(status.id))
            raise error_for(kind, code, f"infobip: {text or 'message rejected'}", vendor_code)
        # A duplicate id means Infobip already holds this message from an earlier attempt.
        parts = sent.details.message_count if sent.details else None
        return Accepted(vendor_message_id=sent.message_id, segments=parts or None)

    def mms_refusal(self, to_e164: str, mms: Mms, settings: Mapping[str, str]) -> str | None:
        # Infobip publishes no list of MMS destinations: coverage is per account and route,
        # and a destination it cannot serve comes back REJECTED from Infobip itself.
        return None

    def build_mms(self, message: Outgoing, settings: Mapping[str, str]) -> http.Request:
        """POST /mms/1/advanced (MmsAdvancedRequest): our id as the destination's messageId,
        text and link segments, the subject as `title`, reports to our own notifyUrl."""
        assert message.mms is not None
        segments: list[dict[str, str]] = [{"text": message.text}] if message.text else []
        for index, item in enumerate(message.mms.media):
            # contentId: letters only, at most 20 ("[a-zA-Z] up to 20 characters").
            segments.append({"contentId": "media" + ascii_lowercase[index],
                             "contentType": content_type(item), "contentUrl": item.url})
        sender = digits(message.sender) if message.sender.startswith("+") else message.sender
        mms: dict[str, object] = {
            "destinations": [{"to": digits(message.to_e164), "messageId": message.message_id}],
            "from": sender, "messageSegments": segments, "notifyUrl": message.callback_url,
            "intermediateReport": True,
        }
        if message.mms.subject:
            mms["title"] = message.mms.subject[:MAX_TITLE]
        if message.validity is not None:  # minutes here, capped at 48 h like SMS
            mms["validityPeriod"] = max(1, min(message.validity, MAX_VALIDITY) // 60)
        return http.request("POST", f"{self.base_url(settings)}/mms/1/advanced",
                            self._headers(settings), json={"messages": [mms]})

    def parse_mms(self, response: http.Response) -> Accepted:
        # SendResult: {bulkId, messages: [{to, status, messageId}]}, the SMS answer's shape.
        return self.parse_send(response)

    def mms_capability(self, settings: Mapping[str, str], response: http.Response
                       ) -> bool | None:
        return None  # the balance says nothing about MMS routes

    def build_verify(self, settings: Mapping[str, str]) -> http.Request:
        return http.request("GET", f"{self.base_url(settings)}/account/1/balance",
                            self._headers(settings))

    def parse_verify(self, response: http.Response) -> None:
        # 403 means the key authenticated but lacks the account-management scope; a key made
        # only for sending SMS is still good credentials [inferred from the E401/E403 texts].
        if response.status_code in (200, 403):
            return
        if response.status_code == 401:
            raise VendorAuthFailed("infobip: the API key was not accepted", vendor_code="E401")
        raise _http_error(response)

    def build_lookup(self, message: Outgoing, settings: Mapping[str, str]
                     ) -> http.Request | None:
        # MMS keep their own logs (GET /mms/1/logs), of the same {results: [...]} shape.
        logs = "/mms/1/logs" if message.mms is not None else "/sms/3/logs"
        return http.request("GET", f"{self.base_url(settings)}{logs}", self._headers(settings),
                            params={"messageId": message.message_id})

    def parse_lookup(self, response: http.Response) -> Accepted | None:
        if response.status_code != 200:
            raise _http_error(response)
        try:
            results = _envelope.decode(response.content).results
        except msgspec.DecodeError:
            raise AmbiguousOutcome("infobip: the log answer could not be read") from None
        # A rejected attempt sent nothing: sending again gets Infobip's own classified answer.
        if not results or group(results[0].status) == "REJECTED":
            return None
        return Accepted(vendor_message_id=results[0].message_id,
                        segments=results[0].message_count or None)

    def verify(self, callback: Callback, settings: Mapping[str, str]) -> None:
        # Infobip signs no per-message report; the signed ?m= token, checked before any
        # adapter code runs, is the authentication (Basic auth is deployment-wide).
        return None

    def parse_status(self, callback: Callback) -> list[StatusUpdate]:
        try:
            results = _envelope.decode(callback.body).results
        except msgspec.DecodeError:
            log.warning("unreadable_callback", vendor=self.name)
            return []
        updates = [_update(result) for result in results]
        return [update for update in updates if update is not None]
