"""Bird's `sms.inbound` webhook: a Channels API message object, signed with messagebird-signature.

https://docs.bird.com/api/channels-api/supported-channels/programmable-sms/receiving-messages
(the message object); the envelope and signature are the status callbacks' (connector/vendors/
bird.py). The channel id names the account: it is what a send's Chan-Channel-Id gives.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import msgspec
import structlog

from connector.inbound import Inbound, Media, when
from connector.vendors.base import Callback
from connector.vendors.bird import Bird

log = structlog.get_logger("connector.inbound")


class _Identifier(msgspec.Struct):
    identifierValue: str | None = None


class _Party(msgspec.Struct):
    contact: _Identifier | None = None
    connector: _Identifier | None = None


class _Text(msgspec.Struct):
    text: str = ""


class _Item(msgspec.Struct):
    mediaUrl: str
    contentType: str | None = None


class _Images(msgspec.Struct):
    images: list[_Item] = []
    text: str | None = None


class _Files(msgspec.Struct):
    files: list[_Item] = []
    text: str | None = None


class _Body(msgspec.Struct):
    type: str = "text"
    text: _Text | None = None
    image: _Images | None = None
    file: _Files | None = None


class _Message(msgspec.Struct):
    id: str
    channelId: str = ""
    sender: _Party | None = None
    receiver: _Party | None = None
    body: _Body | None = None
    createdAt: str | None = None


class _Event(msgspec.Struct):
    event: str
    payload: _Message


_event = msgspec.json.Decoder(_Event)


def _read(body: bytes) -> _Event | None:
    try:
        return _event.decode(body)
    except msgspec.DecodeError:
        return None


def _value(party: _Party | None) -> str:
    found = party and (party.contact or party.connector)
    return (found.identifierValue or "") if found else ""


class BirdInbound:
    name: str = "bird"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._vendor = Bird(clock)  # its signature check, and its replay window

    def account(self, callback: Callback) -> str | None:
        event = _read(callback.body)
        return event.payload.channelId or None if event else None

    def settings_account(self, settings: Mapping[str, str]) -> str | None:
        return settings.get("channel-id") or None

    def signed(self, settings: Mapping[str, str]) -> bool:
        return True  # Bird signs; without Chan-Signing-Key verify refuses, saying so

    def verify(self, callback: Callback, settings: Mapping[str, str]) -> None:
        self._vendor.verify(callback, settings)

    def parse(self, callback: Callback) -> list[Inbound]:
        event = _read(callback.body)
        if event is None or not event.event.endswith(".inbound"):
            log.info("ignored_inbound_event", vendor=self.name,
                     event_type=event.event if event else None)
            return []
        message, body = event.payload, event.payload.body or _Body()
        items: list[_Item] = []
        text = body.text.text if body.text else ""
        if body.image:
            items, text = body.image.images, body.image.text or text
        elif body.file:
            items, text = body.file.files, body.file.text or text
        media = tuple(Media(url=item.mediaUrl, content_type=item.contentType) for item in items)
        # The sample carries the receiving connector's id only: the channel stands for it.
        to = _value(message.receiver) or message.channelId
        return [Inbound(vendor_message_id=message.id, sender=_value(message.sender), to=to,
                        text=text, media=media, received_at=when(message.createdAt))]
