"""Bird's inputs for the vendor contract suite."""

from __future__ import annotations

import json
import time
from pathlib import Path

from connector.vendors.base import Callback
from connector.vendors.bird import signature
from tests.answers import reply
from tests.vendors.cases import Case, Failure

KEY = "bird-contract-access-key-5e1f"
SIGNING = "bird-contract-signing-key-9c2d"
SETTINGS = {"access-key": KEY, "workspace-id": "ws-contract", "channel-id": "ch-contract",
            "signing-key": SIGNING}
URL = "https://connector.example/callbacks/bird/status"
VENDOR_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
PAYLOADS = Path(__file__).parent.parent / "payloads" / "bird"


def callback(status: str) -> Callback:
    return signed(json.dumps({"service": "channels", "event": "sms.outbound", "payload": {
        "id": VENDOR_ID, "status": status, "reference": "c0ffee",
        "lastStatusAt": "2024-07-01T08:41:12.000Z"}}).encode())


def from_file(name: str) -> Callback:
    return signed((PAYLOADS / name).read_bytes())


def signed(body: bytes) -> Callback:
    # Signed now: the registered adapter checks the timestamp against the real clock.
    stamp = str(int(time.time()))
    return Callback(url=URL, body=body, params=[], headers={
        "messagebird-signature": signature(SIGNING, stamp, URL, body),
        "messagebird-request-timestamp": stamp})


CASE = Case(
    settings=SETTINGS,
    secrets=(KEY, SIGNING),
    # The adapter sends "+447911123456" (test_bird asserts it); the suite unquote_plus()es the
    # JSON body, which turns that "+" into a space, so only the digits can be matched here.
    number="447911123456",
    accepted=reply(202, json={"id": VENDOR_ID, "status": "accepted",
                                       "reference": "c0ffee"}),
    vendor_id=VENDOR_ID,
    rejected=(reply(422, json={
        "code": "InvalidPayload", "message": "The request did not pass validation",
        "details": {"receiver.contacts[0].identifierValue": ["is not a valid phone number"]}}),
        "InvalidPayload"),
    callback=callback,
    failures=(
        # Platform code 103: the recipient sent STOP (the payload's shape is [inferred]).
        Failure("delivery_failed-103", lambda: from_file("callback_opted_out.json"), True),
        Failure("delivery_failed-15005", lambda: from_file("callback_delivery_failed.json"),
                False),
        Failure("sending_failed-15001", lambda: from_file("callback_sending_failed.json"), False),
    ),
)
