"""Twilio's inputs for the vendor contract suite."""

from __future__ import annotations

from connector.vendors.base import Callback
from connector.vendors.twilio import signature
from tests.answers import reply
from tests.vendors.cases import Case, Failure

TOKEN = "twilio-contract-token-7f3a"
SETTINGS = {"account-sid": "AC" + "9" * 32, "auth-token": TOKEN}
URL = "https://connector.example/callbacks/twilio/status?m=tok"


def callback(status: str, error_code: str | None = None) -> Callback:
    params = [("MessageSid", "SM" + "b" * 32), ("MessageStatus", status),
              ("AccountSid", SETTINGS["account-sid"]), ("To", "+447911123456")]
    if error_code is not None:
        params.append(("ErrorCode", error_code))
    return Callback(url=URL, body=b"", params=params,
                    headers={"x-twilio-signature": signature(TOKEN, URL, params)})


CASE = Case(
    settings=SETTINGS,
    secrets=(TOKEN,),
    number="+447911123456",
    accepted=reply(201, json={"sid": "SM" + "b" * 32, "status": "queued",
                                       "num_segments": "1"}),
    vendor_id="SM" + "b" * 32,
    rejected=(reply(400, json={"code": 21211, "message": "Invalid 'To'",
                                        "status": 400}), "21211"),
    callback=callback,
    failures=(
        # 21610: the recipient replied STOP; Twilio may report it only after accepting the send.
        Failure("undelivered-21610", lambda: callback("undelivered", "21610"), True),
        Failure("failed-21610", lambda: callback("failed", "21610"), True),
        Failure("undelivered-30003", lambda: callback("undelivered", "30003"), False),
        Failure("undelivered-30004-blocked", lambda: callback("undelivered", "30004"), False),
    ),
)
