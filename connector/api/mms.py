"""POST /mms/send and GET|POST /mms/verify (SPEC section 8): the /sms/send and /sms/verify paths
with an MMS part (subject, media, fallback text) checked and handed to the same machinery."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response

from connector import mms, segments
from connector.api import send as sms_send
from connector.api import verify as sms_verify
from connector.api.send import Content, SendBody
from connector.errors import BadRequest, RefusedMessage
from connector.model import Media, Mms
from connector.services import Services
from connector.vendors.base import Vendor

log = structlog.get_logger("connector.mms")


class MediaItem(msgspec.Struct, forbid_unknown_fields=False):
    url: str
    content_type: str | None = None


class MmsBody(msgspec.Struct):
    """Every /sms/send field, `message` optional, plus the MMS fields under their aliases."""

    sender: str
    recipient: str
    custom_data: str
    message: str = ""
    request_id: str | None = None
    callback_url: str | None = None
    webhook_url: str | None = None
    metadata: dict[str, Any] | None = None
    subject: str | None = None
    subject_line: str | None = None
    fallback_message: str | None = None
    fallback: str | None = None
    media: MediaItem | list[MediaItem] | None = None


class MmsPart(msgspec.Struct, frozen=True):
    mms: Mms
    fallback_text: str | None


_decode = msgspec.json.Decoder(MmsBody)


def parse(raw: bytes) -> tuple[SendBody, MmsPart]:
    body = sms_send.decode(raw, _decode)
    common = SendBody(sender=body.sender, recipient=body.recipient, message=body.message,
                      custom_data=body.custom_data, request_id=body.request_id,
                      callback_url=body.callback_url, webhook_url=body.webhook_url,
                      metadata=body.metadata)
    sms_send.check_common(common)
    items = body.media if isinstance(body.media, list) else [body.media] if body.media else []
    if not items:
        raise BadRequest("media is required: an object {url, content_type} or a list of 1-"
                         f"{mms.MAX_MEDIA} of them", code="invalid_field")
    if len(items) > mms.MAX_MEDIA:
        raise BadRequest(f"media has {len(items)} items; at most {mms.MAX_MEDIA} are allowed",
                         code="invalid_field")
    fallback = body.fallback_message if body.fallback_message is not None else body.fallback
    if fallback and len(fallback) > segments.MAX_MESSAGE_CHARS:
        raise RefusedMessage("fallback_message is over "
                             f"{segments.MAX_MESSAGE_CHARS} characters",
                             code="message_too_long")
    subject = body.subject if body.subject is not None else body.subject_line or ""
    media = tuple(Media(url=item.url, content_type=item.content_type or None) for item in items)
    return common, MmsPart(Mms(media=media, subject=subject), fallback or None)


class MmsExtension:
    def parse(self, raw: bytes) -> tuple[SendBody, object]:
        return parse(raw)

    async def content(self, services: Services, vendor: Vendor, config: Mapping[str, str],
                      to_e164: str, own: object, body: SendBody) -> Content:
        assert isinstance(own, MmsPart)
        settings = services.settings
        # The same rules as callback_url: the vendor fetches these URLs on our word.
        for index, item in enumerate(own.mms.media):
            await services.guard.check(item.url, f"media[{index}].url",
                                       settings.callback_hosts or None)
        refusal = vendor.mms_refusal(to_e164, own.mms, config)
        if refusal is None:
            return Content(body.message, mms=own.mms, fallback=False)
        if own.fallback_text is None:
            raise RefusedMessage(f"{refusal}, and the message has no fallback_message to send "
                                 "as SMS instead", code="mms_not_supported")
        log.info("mms_fallback", reason=refusal)
        return Content(own.fallback_text, fallback=True)


EXTENSION: Final = MmsExtension()


async def send(request: Request) -> Response:
    return await sms_send.send(request, EXTENSION)


async def verify(request: Request) -> Response:
    return await sms_verify.verify(request, mms=True)
