"""Sinch's inputs for the vendor contract suite."""

from __future__ import annotations

import json
import time
from pathlib import Path

from connector.vendors.base import Callback
from connector.vendors.sinch import signature
from tests.answers import reply
from tests.vendors.cases import Case, Failure

PAYLOADS = Path(__file__).parent.parent / "payloads" / "sinch"
TOKEN = "sinch-contract-token-7f3a"
SECRET = "sinch-contract-webhook-secret"
SETTINGS = {"service-plan-id": "a" * 32, "api-token": TOKEN, "webhook-secret": SECRET}
URL = "https://connector.example/callbacks/sinch/status?m=tok"
BATCH = "01FC66621XXXXX119Z8PMV1QPQ"


def callback(status: str) -> Callback:
    return signed(json.dumps({"type": "recipient_delivery_report_sms", "batch_id": BATCH,
                              "recipient": "447911123456", "code": 0, "status": status,
                              "at": "2025-01-13T09:22:40.914Z",
                              "client_reference": "c0ffee"}).encode())


def signed(body: bytes) -> Callback:
    nonce, stamp = "01JHFFHWYY7HSS4FWTMDTQEK8V", str(int(time.time()))
    return Callback(url=URL, body=body, params=[], headers={
        "content-type": "application/json",
        "x-sinch-webhook-signature": signature(SECRET, body, nonce, stamp),
        "x-sinch-webhook-signature-nonce": nonce,
        "x-sinch-webhook-signature-timestamp": stamp,
        "x-sinch-webhook-signature-algorithm": "HmacSHA256",
    })


CASE = Case(
    settings=SETTINGS,
    secrets=(TOKEN, SECRET),
    # The adapter sends "+447911123456" (test_sinch asserts it); the suite unquote_plus()es
    # the JSON body, which turns that "+" into a space, so only the digits can be matched here.
    number="447911123456",
    accepted=reply(201, content=(PAYLOADS / "batch_created.json").read_bytes()),
    vendor_id=BATCH,
    rejected=(reply(400, content=(
        PAYLOADS / "error_invalid_parameter_format.json").read_bytes()),
        "syntax_invalid_parameter_format"),
    callback=callback,
    signs_url=False,
    # Sinch documents no opt-out code: Deleted may be an opted-out or an invalid number.
    failures=(
        Failure("failed-402", lambda: signed((PAYLOADS / "dlr_failed.json").read_bytes()), False),
        Failure("deleted", lambda: callback("Deleted"), False),
    ),
)
