"""Multipart receipts that beat the send's answer: held apart until the part count is known."""

from __future__ import annotations

import asyncio

from connector.model import Applied, Status, StatusUpdate
from connector.store.base import MessageRow, OutboxEntry, SendOutcome, Store
from tests.store.test_store import NOW, OK, new, part

TWO_PARTS = SendOutcome(response=OK.response, status=Status.ACCEPTED, vendor_message_id="p1",
                        parts=2)


def report_terminal(row: MessageRow, update: StatusUpdate, now: float) -> OutboxEntry | None:
    """As the default deployment reports: delivered and failed, not sent."""
    if not row.status.terminal:
        return None
    return OutboxEntry(event_id=f"{row.id}/{row.status}", url=row.callback_url,
                       payload=row.status.value.encode())


async def receipt(store: Store, message_id: str, update: StatusUpdate, now: float) -> Applied:
    """As the callback applies it: with the row it read first."""
    seen = await store.message(message_id)
    return await store.apply_status(message_id, update, now, report_terminal, seen=seen)


async def reports(store: Store) -> list[bytes]:
    return sorted(r.payload for r in await store.lease_reports("w", NOW + 60, 100, 30))


async def test_early_delivered_part_then_failed_part_fails_the_message(store: Store) -> None:
    m = new()
    await store.claim(m, NOW)
    assert await receipt(store, m.id, part("p1", Status.DELIVERED), NOW) is Applied.APPLIED
    row = await store.message(m.id)
    assert row is not None and row.status is Status.SENT  # one part says nothing of the rest
    await store.record_outcome(m.id, TWO_PARTS, NOW + 1, report_terminal)
    row = await store.message(m.id)
    assert row is not None and (row.status, row.parts) == (Status.SENT, 2)
    assert await receipt(store, m.id, part("p2", Status.UNDELIVERED, "5"), NOW + 2) \
        is Applied.APPLIED
    row = await store.message(m.id)
    assert row is not None and (row.status, row.error_code) == (Status.UNDELIVERED, "5")
    assert row.vendor_message_id == "p1"  # the send's answer names the message
    assert await reports(store) == [b"undelivered"]


async def test_every_part_delivered_before_the_answer_is_settled_by_the_answer(
        store: Store) -> None:
    m, other = new(), new("r2")
    await store.claim(m, NOW)
    await store.claim(other, NOW)
    await receipt(store, m.id, part("p1", Status.DELIVERED), NOW)
    await receipt(store, m.id, part("p2", Status.DELIVERED), NOW)
    row = await store.message(m.id)
    assert row is not None and row.status is Status.SENT
    # Together, so a group-committing store writes both answers in one batch.
    await asyncio.gather(store.record_outcome(m.id, TWO_PARTS, NOW + 1, report_terminal),
                         store.record_outcome(other.id, OK, NOW + 1, report_terminal))
    row = await store.message(m.id)
    assert row is not None and (row.status, row.parts) == (Status.DELIVERED, 2)
    untouched = await store.message(other.id)
    assert untouched is not None and untouched.status is Status.ACCEPTED
    assert await reports(store) == [b"delivered"]


async def test_early_failed_part_fails_the_message_at_once(store: Store) -> None:
    m = new()
    await store.claim(m, NOW)
    await receipt(store, m.id, part("p2", Status.REJECTED, "6"), NOW)
    row = await store.message(m.id)
    assert row is not None and (row.status, row.error_code) == (Status.REJECTED, "6")
    await store.record_outcome(m.id, TWO_PARTS, NOW + 1, report_terminal)
    await receipt(store, m.id, part("p1", Status.DELIVERED), NOW + 2)
    row = await store.message(m.id)
    assert row is not None and row.status is Status.REJECTED
    assert await reports(store) == [b"rejected"]


async def test_single_part_receipt_before_the_answer_delivers_after_it(store: Store) -> None:
    m = new()
    await store.claim(m, NOW)
    await receipt(store, m.id, part("p1", Status.DELIVERED), NOW)
    one_part = SendOutcome(response=OK.response, status=Status.ACCEPTED,
                           vendor_message_id="p1", parts=1)
    await store.record_outcome(m.id, one_part, NOW + 1, report_terminal)
    row = await store.message(m.id)
    assert row is not None and row.status is Status.DELIVERED
    assert await reports(store) == [b"delivered"]
