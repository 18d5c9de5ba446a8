"""Bird Channels API (api.bird.com): JSON send to a channel, signed webhook-subscription callbacks.

Facts (shared/reference/vendors.md section 2): docs.bird.com/api/channels-api/api-reference/messaging,
.../message-status-and-interactions/message-failure-codes, and docs.bird.com/api/notifications-api/
api-reference/webhooks/verifying-a-webhook. Not legacy MessageBird REST, nor platform.bird.com.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlsplit

import msgspec
import structlog

from connector import http
from connector.errors import InvalidSignature, VendorAuthFailed, VendorError, VendorUnavailable
from connector.mms import US_CA, content_type, kind, region
from connector.model import Accepted, Mms, Outgoing, Status, StatusUpdate
from connector.vendors.base import AUTH, REJECTED, THROTTLED, Callback, classify

log = structlog.get_logger("connector.vendors.bird")

DEFAULT_BASE_URL: Final = "https://api.bird.com"

# https://docs.bird.com/api/channels-api/message-status-and-interactions (and vendors.md 7.1)
STATUS_MAP: Final[Mapping[str, Status]] = {
    "accepted": Status.ACCEPTED,
    "processing": Status.ACCEPTED,
    "scheduled": Status.ACCEPTED,
    "sent": Status.SENT,
    "delivered": Status.DELIVERED,
    "delivery_failed": Status.UNDELIVERED,  # EXPIRED when the reason says the validity ran out
    "sending_failed": Status.FAILED,
    "rejected": Status.REJECTED,
    "deleted": Status.FAILED,
}
# delivery_failed reasons that mean the validity period ran out (message-failure-codes page).
_EXPIRED_REASONS: Final = ("expired", "dlr not received")

# Bird error-body `code` -> (class, platform code). The body shape {"code", "message", "details"}
# and these code names are [inferred]: the Channels API reference does not list them.
ERROR_CODES: Final[Mapping[str, tuple[str, str]]] = {
    "Unauthorized": (AUTH, "vendor_auth_failed"),
    "Forbidden": (AUTH, "vendor_auth_failed"),  # the key's access policy excludes this channel
    "NotFound": (REJECTED, "rejected"),  # no such workspace or channel
    "InvalidPayload": (REJECTED, "rejected"),
    "TooManyRequests": (THROTTLED, "throttled"),
}  # 5xx needs no entry: classify() treats every 5xx as unavailable

# failure.source.code values of the SMS platform that mean the recipient opted out. Its
# extended codes are MessageBird's SMS status error codes (1 EC_UNKNOWN_SUBSCRIBER, 34 system
# failure...), where 103 is "the recipient sent STOP" (vendors.md 2.3 and 3.2, after courier);
# that Bird keeps 103 in failure.source.code is [inferred]: no Bird sample shows it. Reasons
# such as EC_CALL_BARRED are the network's bar on the line, not an opt-out from this sender.
SMS_PLATFORM: Final = "sms-messagebird"
OPT_OUT_SOURCE_CODES: Final = frozenset({"103"})


class _Connector(msgspec.Struct):
    identifierValue: str | None = None  # the channel's number or name, on outgoing messages


class _Sender(msgspec.Struct):
    connector: _Connector | None = None


class _Source(msgspec.Struct):
    name: str | None = None  # the platform that failed the message, e.g. sms-messagebird
    code: str | int | None = None  # that platform's own code


class _Failure(msgspec.Struct):
    code: str | int | None = None  # Bird's channel-agnostic code, e.g. 15005
    source: _Source | None = None


class _Message(msgspec.Struct):
    id: str
    status: str | None = None
    reference: str | None = None
    reason: str | None = None
    details: str | None = None
    failure: _Failure | None = None
    sender: _Sender | None = None
    lastStatusAt: str | None = None


class _Event(msgspec.Struct):
    payload: _Message
    event: str = ""


class _Results(msgspec.Struct):
    results: list[_Message] = []


class _Error(msgspec.Struct):
    code: str | None = None
    message: str | None = None
    details: object = None  # field -> problems on validation errors [inferred]


_message = msgspec.json.Decoder(_Message)
_event = msgspec.json.Decoder(_Event)
_results = msgspec.json.Decoder(_Results)
_error = msgspec.json.Decoder(_Error)


def _digest(key: str, timestamp: str, url: str, body: bytes) -> bytes:
    signed = f"{timestamp}\n{url}\n".encode() + hashlib.sha256(body).digest()
    return hmac.new(key.encode(), signed, hashlib.sha256).digest()


def signature(key: str, timestamp: str, url: str, body: bytes) -> str:
    """messagebird-signature: base64 HMAC-SHA256 over the timestamp, the URL and the raw (not
    hex) SHA-256 of the body, newline-separated."""
    return base64.b64encode(_digest(key, timestamp, url, body)).decode()


def _unix(stamp: str | None) -> float | None:
    try:
        return datetime.fromisoformat(stamp).timestamp() if stamp else None
    except ValueError:
        return None


def _sender(message: _Message) -> str | None:
    connector = message.sender.connector if message.sender else None
    return connector.identifierValue if connector else None


def _failure_code(failure: _Failure) -> str | None:
    """Bird's own code, else the platform's (when Bird gives no grouping for the failure)."""
    code = failure.code if failure.code is not None else (
        failure.source.code if failure.source else None)
    return None if code is None else str(code)


def _opted_out(failure: _Failure | None) -> bool:
    source = failure.source if failure else None
    return (source is not None and source.name == SMS_PLATFORM
            and str(source.code) in OPT_OUT_SOURCE_CODES)


_json_object = msgspec.json.Decoder(dict[str, Any])


def _has_mms(capabilities: object, depth: int = 0) -> bool:
    """An `mms` capability anywhere under the channel's capabilities that is usable (the
    published example nests it as messaging -> ... -> outgoing -> mms)."""
    if not isinstance(capabilities, dict) or depth > 6:
        return False
    found = capabilities.get("mms")
    if isinstance(found, dict):
        status = str(found.get("status") or "active").lower()
        return not found.get("paused") and status not in ("inactive", "disabled", "paused")
    return any(_has_mms(value, depth + 1) for value in capabilities.values())


def _failed(response: http.Response) -> VendorError:
    try:
        error = _error.decode(response.content)
    except msgspec.DecodeError:
        error = _Error()
    if response.status_code == 404:
        detail = "workspace or channel not found; check Chan-Workspace-Id and Chan-Channel-Id"
    else:
        detail = error.message or ""
        if isinstance(error.details, dict) and error.details:
            detail = f"{detail}: {', '.join(sorted(map(str, error.details)))}"
    return classify(response, vendor="bird", vendor_code=error.code, detail=detail,
                    codes=ERROR_CODES)


class Bird:
    name: str = "bird"
    required: tuple[str, ...] = ("access-key", "workspace-id", "channel-id")
    optional: tuple[str, ...] = ("signing-key", "base-url")
    hosts: tuple[str, ...] = ("api.bird.com",)
    # Bird has no per-message callback URL: one workspace webhook subscription calls
    # /callbacks/bird/status, and callbacks are matched by our `reference` or Bird's id.
    token_callbacks: bool = False

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    def base_url(self, settings: Mapping[str, str]) -> str:
        return settings.get("base-url", DEFAULT_BASE_URL).rstrip("/")

    def _request(self, method: str, settings: Mapping[str, str], path: str = "",
                 params: Mapping[str, str] | None = None) -> http.Request:
        return http.request(method, self._url(settings, path), self._auth(settings),
                            params=params)

    def _url(self, settings: Mapping[str, str], path: str) -> str:
        workspace, channel = (quote(settings[k], safe="") for k in ("workspace-id", "channel-id"))
        return f"{self.base_url(settings)}/workspaces/{workspace}/channels/{channel}{path}"

    @staticmethod
    def _auth(settings: Mapping[str, str]) -> dict[str, str]:
        return {"Accept": "application/json", "Authorization": "AccessKey " + settings["access-key"]}

    def build_send(self, message: Outgoing, settings: Mapping[str, str]) -> http.Request:
        # The sender is the channel's configured number or name: Bird's send takes no `from`,
        # so the platform's `sender` is not forwarded. Nor is CONNECTOR_VALIDITY: the Channels
        # API send (CreateChannelMessage: sender, receiver, reference, template, body, meta,
        # replyTo, notification, ...; additionalProperties false) documents no validity or
        # expiry field, so Bird's own default applies (an expired message still arrives as
        # delivery_failed with reason Expired, which parse_status reads as EXPIRED).
        body = {
            "receiver": {"contacts": [{"identifierKey": "phonenumber",
                                       "identifierValue": message.to_e164}]},
            "body": {"type": "text", "text": {"text": message.text}},
            "reference": message.message_id,
        }
        return http.request("POST", self._url(settings, "/messages"), self._auth(settings),
                            json=body)

    def parse_send(self, response: http.Response) -> Accepted:
        if response.status_code in (200, 201, 202):
            created = _message.decode(response.content)
            return Accepted(vendor_message_id=created.id, from_number=_sender(created))
        raise _failed(response)

    def mms_refusal(self, to_e164: str, mms: Mms, settings: Mapping[str, str]) -> str | None:
        # SMS channels with MMS-capable numbers (bought for the US and Canada) send media
        # messages, and only there (docs.bird.com .../programmable-sms, "MMS sizes and
        # limitations"). Whether this channel's number is one shows on /mms/verify.
        if region(to_e164) not in US_CA:
            return "bird sends MMS to US and Canadian numbers only"
        return None

    def build_mms(self, message: Outgoing, settings: Mapping[str, str]) -> http.Request:
        """The SMS send with an `image` body (every item an image: up to 10 mediaUrls, the
        text and the subject as title) or else a `file` body (mediaUrl with contentType)."""
        assert message.mms is not None
        items = message.mms.media
        content: dict[str, object]
        if all(kind(item) == "image" for item in items):
            content = {"images": [{"mediaUrl": item.url} for item in items]}
            if message.mms.subject:
                content["title"] = message.mms.subject
            body_type = "image"
        else:
            content = {"files": [{"mediaUrl": item.url, "contentType": content_type(item)}
                                 for item in items]}
            body_type = "file"
        if message.text:
            content["text"] = message.text
        body = {
            "receiver": {"contacts": [{"identifierKey": "phonenumber",
                                       "identifierValue": message.to_e164}]},
            "body": {"type": body_type, body_type: content},
            "reference": message.message_id,
        }
        return http.request("POST", self._url(settings, "/messages"), self._auth(settings),
                            json=body)

    def parse_mms(self, response: http.Response) -> Accepted:
        return self.parse_send(response)

    def mms_capability(self, settings: Mapping[str, str], response: http.Response
                       ) -> bool | None:
        """The channel's `capabilities` name an outgoing `mms` capability when its number is
        MMS-capable; one that is paused or not active does not count."""
        try:
            channel = _json_object.decode(response.content)
        except msgspec.DecodeError:
            return None
        return _has_mms(channel.get("capabilities"))

    def build_verify(self, settings: Mapping[str, str]) -> http.Request:
        return self._request("GET", settings)

    def parse_verify(self, response: http.Response) -> None:
        if response.status_code == 200:
            return
        if response.status_code in (401, 403):
            raise VendorAuthFailed("bird: the access key was not accepted, or its access policy "
                                   "does not allow this workspace and channel")
        raise _failed(response)

    def build_lookup(self, message: Outgoing, settings: Mapping[str, str]
                     ) -> http.Request | None:
        # Filtering the channel's messages by `reference` is [inferred]; parse_lookup still
        # compares each result's reference, so an ignored filter cannot produce a false match.
        return self._request("GET", settings, "/messages",
                             params={"reference": message.message_id, "limit": "10"})

    def parse_lookup(self, response: http.Response) -> Accepted | None:
        if response.status_code != 200:
            raise _failed(response)
        sent = response.request.url if response.request is not None else ""
        wanted = dict(parse_qsl(urlsplit(sent).query)).get("reference")
        try:
            results = _results.decode(response.content).results
        except msgspec.DecodeError:
            raise VendorUnavailable("bird: the message look-up answer is unreadable") from None
        mine = [found for found in results if wanted and found.reference == wanted]
        return Accepted(vendor_message_id=mine[0].id, from_number=_sender(mine[0])) if mine else None

    def verify(self, callback: Callback, settings: Mapping[str, str]) -> None:
        key = settings.get("signing-key")
        if not key:
            raise InvalidSignature("no Chan-Signing-Key was sent with this message, so its Bird "
                                   "callbacks cannot be authenticated")
        stamp = callback.headers.get("messagebird-request-timestamp", "")
        try:
            given = base64.b64decode(callback.headers.get("messagebird-signature", ""),
                                     validate=True)
            age = abs(self._clock() - int(stamp))
        except (ValueError, binascii.Error):
            raise InvalidSignature("messagebird-signature or its timestamp is missing or "
                                   "malformed") from None
        if not hmac.compare_digest(_digest(key, stamp, callback.url, callback.body), given):
            raise InvalidSignature("messagebird-signature does not match")
        # A replayed callback keeps its old, validly signed timestamp.
        # Bird's docs (docs.bird.com, Verifying a webhook subscription) give the algorithm
        # but no window: callback.max_age is the deployment's CONNECTOR_SIGNATURE_WINDOW.
        if age > callback.max_age:
            raise InvalidSignature("messagebird-request-timestamp is outside the "
                                   f"{callback.max_age:g}-second window")

    def parse_status(self, callback: Callback) -> list[StatusUpdate]:
        try:
            event = _event.decode(callback.body)
        except msgspec.DecodeError:
            log.warning("unreadable_callback", vendor=self.name)
            return []
        if not event.event.endswith(".outbound"):
            return []  # inbound messages and other events are not delivery statuses
        message = event.payload
        status = STATUS_MAP.get(message.status or "")
        if status is None:
            log.warning("unknown_vendor_status", vendor=self.name, vendor_status=message.status)
            return []
        reason = message.reason or message.details
        if status is Status.UNDELIVERED and reason and any(
                word in reason.lower() for word in _EXPIRED_REASONS):
            status = Status.EXPIRED
        failed = status.terminal and status is not Status.DELIVERED
        failure = message.failure if failed else None
        return [StatusUpdate(
            status=status, vendor_message_id=message.id, message_ref=message.reference or None,
            occurred_at=_unix(message.lastStatusAt), from_number=_sender(message),
            error_code=_failure_code(failure) if failure else None,
            error_message=reason if failed else None, opted_out=_opted_out(failure),
        )]
