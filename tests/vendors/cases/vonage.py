"""Vonage's inputs for the vendor contract suite."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from connector import http
from connector.vendors.base import Callback
from connector.vendors.vonage import signature
from tests.answers import reply
from tests.vendors.cases import Case, Failure

SECRET = "vonage-contract-secret-4b8e"
SIG_SECRET = "vonage-contract-sig-secret-91d0"
SETTINGS = {"api-key": "abcd1234", "api-secret": SECRET, "signature-secret": SIG_SECRET,
            "signature-method": "sha256"}
URL = "https://connector.example/callbacks/vonage/status?m=tok"
MESSAGE_ID = "0A0000000123ABCD1"
PAYLOADS = Path(__file__).parent.parent / "payloads" / "vonage"


def callback(status: str) -> Callback:
    return signed({"msisdn": "447911123456", "to": "MyBrand", "network-code": "23410",
                   "messageId": MESSAGE_ID, "price": "0.03330000", "status": status,
                   "scts": "2001011400", "err-code": "0", "api-key": "abcd1234",
                   "client-ref": "c0ffee", "message-timestamp": "2020-01-01 14:00:03"})


def from_file(name: str) -> Callback:
    return signed(dict(parse_qsl((PAYLOADS / name).read_text())))


def signed(receipt: dict[str, str]) -> Callback:
    # Signed now: the adapter refuses receipts whose timestamp is more than 5 minutes off.
    fields = {**receipt, "timestamp": str(int(time.time())),
              "nonce": "ec11dd3e-1e7f-4db5-9467-82b02cd223b9"}
    fields["sig"] = signature(fields, SIG_SECRET, "sha256")
    return Callback(url=URL, headers={"content-type": "application/x-www-form-urlencoded"},
                    body=urlencode(fields).encode(), params=list(fields.items()))


def _answer(part: dict[str, str]) -> http.Response:
    return reply(200, json={"message-count": "1", "messages": [part]})


CASE = Case(
    settings=SETTINGS,
    secrets=(SECRET, SIG_SECRET),
    number="447911123456",
    accepted=_answer({"to": "447911123456", "message-id": MESSAGE_ID, "status": "0",
                      "remaining-balance": "3.14159265", "message-price": "0.03330000",
                      "network": "23410", "client-ref": "c0ffee"}),
    vendor_id=MESSAGE_ID,
    rejected=(_answer({"status": "6", "error-text": "Unroutable message - rejected"}), "6"),
    callback=callback,
    failures=(
        # err-code 9 "Illegal Number": the user asked not to get messages from this service.
        Failure("failed-9-illegal-number", lambda: from_file("dlr_illegal_number.form"), True),
        Failure("failed-2-absent-subscriber", lambda: from_file("dlr_failed.form"), False),
    ),
)
