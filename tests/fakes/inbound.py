"""Vendors' inbound (MO) webhooks, shaped and signed as each vendor documents them.

Each builder takes the vendor fake that stands for the account (it knows the credentials the
vendor would sign with) and returns the request the vendor would make to the connector's
inbound URL; `post` sends it. Sources of the shapes and signatures:

- Twilio: twilio.com/docs/messaging/guides/webhook-request (incoming message parameters:
  MessageSid, SmsSid, AccountSid, From, To, Body, NumMedia, NumSegments, MediaUrl{N},
  MediaContentType{N}, ApiVersion); X-Twilio-Signature as in tests/fakes/twilio.py.
- Bird: docs.bird.com/api/channels-api/supported-channels/programmable-sms/receiving-messages
  (the incoming message object: id, channelId, sender.contact, receiver.connector, body,
  direction "incoming"); the webhook envelope and messagebird-signature as in tests/fakes/bird.py.
- Sinch: `incomingSMS` in ballerina-platform/openapi-connectors openapi/sinch.sms/openapi.yaml
  (inboundsObject: type mo_text, id, from, to, body, received_at); x-sinch-webhook-signature
  as in tests/fakes/sinch.py (sinch-sdk-java vector).
- Infobip: webhook `receive-inbound-sms-messages` in api-evangelist/infobip
  openapi/infobip-sms-openapi.json (SmsMoReportResponse: results[messageId, from, to, text,
  cleanText, keyword, receivedAt, smsCount, price, callbackData], messageCount,
  pendingMessageCount); Infobip signs nothing, the push carries the Basic auth set up for it.
- Vonage: `inbound-sms` in Nexmo/api-specification definitions/sms.yml (InboundMessage:
  api-key, msisdn, to, messageId, text, type, keyword, message-timestamp, timestamp, nonce,
  sig); GET query, POST form or POST JSON as the account's setting says; `sig` as in
  tests/fakes/vonage.py (vonage-python-sdk vectors).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlencode

import httpx

from .bird import FakeBird, bird_signature
from .sinch import sinch_signature
from .twilio import FakeTwilio, twilio_signature
from .vonage import FakeVonage, vonage_signature

Method = Literal["GET", "POST", "JSON"]


def post(request: httpx.Request) -> httpx.Response:
    with httpx.Client(timeout=30) as client:
        return client.send(request)


def twilio_inbound(fake: FakeTwilio, url: str, account_sid: str, *, sid: str, sender: str,
                   to: str, text: str, media: Sequence[tuple[str, str]] = (),
                   token: str | None = None) -> httpx.Request:
    params = {"ToCountry": "GB", "SmsMessageSid": sid, "NumMedia": str(len(media)),
              "SmsSid": sid, "SmsStatus": "received", "Body": text, "To": to,
              "NumSegments": "1", "MessageSid": sid, "AccountSid": account_sid,
              "From": sender, "ApiVersion": "2010-04-01"}
    for n, (media_url, content_type) in enumerate(media):
        params[f"MediaUrl{n}"], params[f"MediaContentType{n}"] = media_url, content_type
    signing = token if token is not None else fake.accounts[account_sid]
    return httpx.Request("POST", url, content=urlencode(params).encode(), headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": twilio_signature(signing, url, params)})


def bird_inbound(fake: FakeBird, url: str, *, message_id: str, sender: str, text: str,
                 images: Sequence[str] = (), key: str | None = None,
                 timestamp: int | None = None) -> httpx.Request:
    body: dict[str, object] = {"type": "text", "text": {"text": text}}
    if images:
        body = {"type": "image", "image": {"images": [{"mediaUrl": u} for u in images],
                                           "text": text}}
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    payload = {
        "id": message_id, "channelId": fake.channel_id,
        "sender": {"contact": {"id": str(uuid.uuid4()), "identifierKey": "phonenumber",
                               "identifierValue": sender}},
        "receiver": {"connector": {"id": str(uuid.uuid4()),
                                   "identifierValue": fake.channel_number}},
        "body": body, "parts": [{"platformReference": uuid.uuid4().hex}],
        "status": "delivered", "direction": "incoming", "lastStatusAt": stamp,
        "createdAt": stamp, "updatedAt": stamp,
    }
    raw = json.dumps({"service": "channels", "event": "sms.inbound",
                      "payload": payload}).encode()
    when = str(timestamp if timestamp is not None else int(time.time()))
    signing = key if key is not None else fake.signing_key or ""
    return httpx.Request("POST", url, content=raw, headers={
        "Content-Type": "application/json", "messagebird-request-timestamp": when,
        "messagebird-signature": bird_signature(signing, when, url, raw)})


def sinch_inbound(url: str, secret: str | None, *, mo_id: str, sender: str, to: str,
                  text: str, timestamp: int | None = None) -> httpx.Request:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    raw = json.dumps({"type": "mo_text", "id": mo_id, "from": sender, "to": to, "body": text,
                      "operator_id": "23410", "received_at": now}).encode()
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        nonce, stamp = uuid.uuid4().hex, str(timestamp or int(time.time()))
        headers.update({"x-sinch-webhook-signature": sinch_signature(secret, raw, nonce, stamp),
                        "x-sinch-webhook-signature-nonce": nonce,
                        "x-sinch-webhook-signature-timestamp": stamp,
                        "x-sinch-webhook-signature-algorithm": "HmacSHA256"})
    return httpx.Request("POST", url, content=raw, headers=headers)


def infobip_inbound(url: str, basic_auth: str | None, messages: Sequence[dict[str, str]]
                    ) -> httpx.Request:
    """`messages`: messageId, from, to, text each; the rest is filled as Infobip does."""
    results = []
    for message in messages:
        keyword = message["text"].split(" ", 1)[0].upper() if message["text"] else ""
        results.append({
            "messageId": message["messageId"], "from": message["from"], "to": message["to"],
            "text": message["text"], "cleanText": message["text"], "keyword": keyword,
            "receivedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
            "smsCount": 1, "price": {"pricePerMessage": 0, "currency": "EUR"},
            "callbackData": None})
    raw = json.dumps({"results": results, "messageCount": len(results),
                      "pendingMessageCount": 0}).encode()
    headers = {"Content-Type": "application/json"}
    if basic_auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(basic_auth.encode()).decode()
    return httpx.Request("POST", url, content=raw, headers=headers)


def vonage_inbound(fake: FakeVonage, url: str, api_key: str, *, message_id: str, msisdn: str,
                   to: str, text: str, method: Method = "POST",
                   secret: str | None = None, timestamp: int | None = None) -> httpx.Request:
    now = time.time() if timestamp is None else timestamp
    fields = {"msisdn": msisdn, "to": to, "messageId": message_id, "text": text,
              "type": "text", "keyword": text.split(" ", 1)[0].upper(),
              "api-key": api_key,
              "message-timestamp": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S")}
    signing = fake.signing.get(api_key)
    if signing is not None:
        fields.update({"timestamp": str(int(now)), "nonce": str(uuid.uuid4())})
        fields["sig"] = vonage_signature(fields, secret or signing[0], signing[1])
    if method == "GET":
        return httpx.Request("GET", url, params=fields)
    if method == "JSON":
        return httpx.Request("POST", url, json=fields)
    return httpx.Request("POST", url, data=fields)
