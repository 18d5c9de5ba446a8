"""Infobip's inputs for the vendor contract suite."""

from __future__ import annotations

import json
from pathlib import Path

from connector import http
from connector.vendors.base import Callback
from tests.answers import reply
from tests.vendors.cases import Case, Failure

KEY = "infobip-contract-key-5d1e"
SETTINGS = {"api-key": KEY, "base-url": "https://x9k2p.api.infobip.com"}
MESSAGE_ID = "c0ffee"
URL = "https://connector.example/callbacks/infobip/status?m=tok"
PAYLOADS = Path(__file__).parent.parent / "payloads" / "infobip"
# A representative status id per group (infobip.com response-status-and-error-codes).
IDS = {"ACCEPTED": 0, "PENDING": 26, "DELIVERED": 5, "UNDELIVERABLE": 9, "EXPIRED": 15,
       "REJECTED": 52}


def callback(group: str, status_id: int | None = None) -> Callback:
    status = {"groupName": group, "id": IDS.get(group, 999) if status_id is None else status_id,
              "name": f"{group}_X"}
    body = {"results": [{"messageId": MESSAGE_ID, "to": "447911123456", "status": status,
                         "error": {"groupId": 0, "groupName": "OK", "id": 0,
                                   "name": "NO_ERROR", "permanent": False}}]}
    # Infobip signs no report: the connector's ?m= token in the URL is the authentication.
    return Callback(url=URL, headers={"content-type": "application/json"},
                    body=json.dumps(body).encode(), params=[])


def from_file(name: str) -> Callback:
    return Callback(url=URL, headers={"content-type": "application/json"},
                    body=(PAYLOADS / name).read_bytes(), params=[])


def _answer(group_id: int, group: str, status_id: int, name: str) -> http.Response:
    return reply(200, json={"bulkId": "2034072219640523072", "messages": [{
        "messageId": MESSAGE_ID, "destination": "447911123456",
        "status": {"groupId": group_id, "groupName": group, "id": status_id, "name": name},
        "details": {"messageCount": 1}}]})


CASE = Case(
    settings=SETTINGS,
    secrets=(KEY,),
    number="447911123456",
    accepted=_answer(1, "PENDING", 26, "PENDING_ACCEPTED"),
    vendor_id=MESSAGE_ID,
    rejected=(_answer(5, "REJECTED", 52, "REJECTED_DESTINATION"), "REJECTED_DESTINATION"),
    callback=callback,
    signed=False,
    failures=(
        Failure("rejected-dnd", lambda: from_file("dlr_rejected_dnd.json"), True),
        Failure("undeliverable-absent-subscriber", lambda: from_file("dlr_undeliverable.json"),
                False),
        # Whose blocklist it is the docs do not say: not taken for the recipient's opt-out.
        Failure("rejected-destination-blocklisted", lambda: callback("REJECTED", 14), False),
    ),
)
