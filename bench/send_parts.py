"""What a send does beyond bench/baseline.py, step by step, timed in this process.

    .venv/bin/python bench/send_parts.py [--n N]

The baseline decodes the body, makes one insert and one POST. The connector's send also runs
the steps below; each is timed alone (CPU µs per call, best of 3 rounds of N calls) with the
benchmark's own body and Twilio settings, on a SQLite store in a temp dir, each write alone in
its commit (under load the group commit shares one among many). The sum is what the work the
baseline leaves out costs, beside the HTTP both pay for.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import common

from connector import msisdn, segments
from connector.api.send import parse_body
from connector.model import Outgoing, Status, new_message_id
from connector.netcheck import AddressGuard
from connector.rules import Rules
from connector.settings import Settings
from connector.store.base import NewMessage, SendOutcome, StoredResponse, no_report
from connector.store.sqlite import SqliteStore
from connector.tenants import Tenants
from connector.tokens import CallbackTokens, SecretBox
from connector.vendors.twilio import Twilio

REPORTS = "https://1.1.1.1/reports"  # a public address literal: the check needs no DNS here


def timed(n: int, step: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(n):
            step()
        best = min(best, (time.process_time() - started) / n * 1e6)
    return best


async def timed_async(n: int, step: Callable[[], Awaitable[object]]) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(n):
            await step()
        best = min(best, (time.process_time() - started) / n * 1e6)
    return best


async def measure(n: int) -> tuple[list[tuple[str, float]], float]:
    tmp = Path(tempfile.mkdtemp(prefix="send-parts-"))
    settings = Settings.from_env({"CONNECTOR_DATA_DIR": str(tmp),
                                  "CONNECTOR_REPORT_SECRET": common.REPORT_SECRET}
                                 ).with_generated_secrets()
    raw = common.send_body("parts-1", 1, REPORTS)
    body = parse_body(raw)
    config = {"account-sid": common.SID, "auth-token": common.TOKEN}
    rules, guard = Rules(settings), AddressGuard(allow_private=False, allow_http=False)
    tokens, box = CallbackTokens(settings.secret_key), SecretBox(settings.secret_key)
    tenants = Tenants(settings.secret_key)
    twilio = Twilio()
    _, number = msisdn.recipient(body.recipient)
    store = SqliteStore(tmp / "parts.db")
    await store.open()

    def message() -> NewMessage:
        return NewMessage(
            id=new_message_id(), request_id=uuid.uuid4().hex, vendor="twilio",
            sealed_settings=box.seal(config), sender="MyBrand", to_number="+447911123456",
            custom_data=body.custom_data, callback_url=REPORTS,
            metadata=None, segments=1, encoding="gsm7", claimed_until=time.time() + 15,
            claim_key=f"bench|{uuid.uuid4().hex}")

    outgoing = Outgoing(message_id=new_message_id(), sender="MyBrand",
                        to_e164="+447911123456", text=body.message,
                        callback_url="https://connector.example/callbacks/twilio/status?m=x",
                        validity=None)
    ok = SendOutcome(response=StoredResponse(status=200, body=b'{"status":"accepted"}'),
                     status=Status.ACCEPTED, vendor_message_id="SM1")
    claimed: list[str] = []

    async def claim() -> None:
        m = message()
        claimed.append(m.id)
        await store.claim(m, time.time())

    async def outcome() -> None:
        await store.record_outcome(claimed.pop(), ok, time.time(), no_report)

    claim_us = await timed_async(n, claim)  # measured first: `outcome` completes these claims
    rows = [
        ("recipient: parse and validate (phonenumbers)", timed(n, lambda: msisdn.recipient(
            body.recipient))),
        ("sender form", timed(n, lambda: msisdn.parse_sender(body.sender))),
        ("destination and sender rules", timed(n, lambda: rules.check(number, "MyBrand"))),
        ("segments and encoding", timed(n, lambda: segments.analyse(body.message))),
        ("seal the credentials (cached per set)", timed(n, lambda: box.seal(config))),
        ("sign the callback token", timed(n, lambda: tokens.sign(new_message_id()))),
        ("build the vendor request (the baseline urlencodes its form too)",
         timed(n, lambda: twilio.build_send(outgoing, config))),
        ("tenant of the send (account and keyed hash of its secret)",
         timed(n, lambda: tenants.of("twilio", config))),
        ("callback_url check", await timed_async(n, lambda: guard.check(
            REPORTS, "callback_url", None))),
        ("suppression look-up", await timed_async(n, lambda: store.is_suppressed(
            "twilio:" + common.SID, "+447911123456", "0" * 32))),
        ("durable outcome after the call (a second committed write)",
         await timed_async(n, outcome)),
    ]
    await store.close()
    return rows, claim_us


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000)
    args = p.parse_args()
    rows, claim_us = asyncio.run(measure(args.n))
    print("| step the baseline does not take | CPU µs per send |")
    print("|---|---:|")
    for name, us in rows:
        print(f"| {name} | {us:.1f} |")
    print(f"| **sum** | **{sum(us for _, us in rows):.0f}** |")
    print(f"\nfor scale, the durable claim (the write the baseline's insert stands for), alone "
          f"in its commit: {claim_us:.1f} µs")


if __name__ == "__main__":
    main()
