"""NUL and other control characters in client and vendor strings, on both stores.

PostgreSQL `text` cannot hold NUL (U+0000); SQLite can. The platform's custom_data and a
kept message text are stored verbatim all the same (SPEC: custom_data is "returned verbatim
in every delivery report"); a vendor's strings, which nothing returns verbatim, may have NUL
replaced, but must never make the store fail (a 503 the vendor or platform retries forever).
"""

from __future__ import annotations

from connector.model import Applied, Status, StatusUpdate
from connector.store import nul
from connector.store.base import (
    DeadLetterFilter,
    InboundRecord,
    OutboxEntry,
    SendOutcome,
    Store,
    StoredResponse,
)
from tests.store.test_store import NOW, new, report_all, report_none

# NUL first and last, the other C0 controls, DEL, an escape-like backslash sequence, and text
# that looks like an escaped form: none of it may change on the way through.
AWKWARD = "\x00" + "".join(map(chr, range(1, 32))) + "\x7f\\0\\\\x00 \ufffd é 😀\x00"


async def test_custom_data_with_nul_round_trips_verbatim(store: Store) -> None:
    message = new(custom_data=AWKWARD)
    assert (await store.claim(message, NOW)).claimed
    stored = await store.message(message.id)
    assert stored is not None and stored.custom_data == AWKWARD
    found = await store.find("r1")
    assert found is not None and found.custom_data == AWKWARD


async def test_custom_data_with_nul_reaches_the_report_builder_verbatim(store: Store) -> None:
    seen: list[str] = []

    def report(row, update, now):  # type: ignore[no-untyped-def]
        seen.append(row.custom_data)
        return report_all(row, update, now)

    message = new(custom_data=AWKWARD)
    await store.claim(message, NOW)
    ok = SendOutcome(response=StoredResponse(status=200, body=b"{}"), status=Status.ACCEPTED,
                     vendor_message_id="SM-nul")
    assert await store.record_outcome(message.id, ok, NOW, report)
    row = await store.find_by_vendor_id("twilio", "SM-nul")
    assert row is not None and row.custom_data == AWKWARD
    delivered = StatusUpdate(status=Status.DELIVERED, vendor_message_id="SM-nul")
    assert await store.apply_status(message.id, delivered, NOW + 1, report, seen=row) \
        is Applied.APPLIED
    assert seen == [AWKWARD]


async def test_custom_data_without_nul_is_unchanged(store: Store) -> None:
    plain = "campaign=42 \\x00 \ufffd"
    message = new(custom_data=plain)
    await store.claim(message, NOW)
    stored = await store.message(message.id)
    assert stored is not None and stored.custom_data == plain


async def test_claims_in_one_batch_keep_each_custom_data(store: Store) -> None:
    import asyncio

    messages = [new(request_id=f"b{i}", custom_data=f"{i}\x00{AWKWARD}" if i % 2 else str(i))
                for i in range(6)]
    claims = await asyncio.gather(*(store.claim(m, NOW) for m in messages))
    assert all(c.claimed for c in claims)
    for m in messages:
        stored = await store.message(m.id)
        assert stored is not None and stored.custom_data == m.custom_data


async def test_kept_text_with_nul_round_trips_verbatim(store: Store) -> None:
    message = new()
    await store.claim(message, NOW)
    await store.keep_text(message.id, AWKWARD)
    assert await store.message_text(message.id) == AWKWARD
    await store.keep_text(message.id, "plain again")  # a later write replaces it whole
    assert await store.message_text(message.id) == "plain again"


async def test_vendor_strings_with_nul_are_stored_without_failing(store: Store) -> None:
    message = new(request_id="v1")
    await store.claim(message, NOW)
    refused = SendOutcome(response=StoredResponse(status=400, body=b"{}"),
                          status=Status.REJECTED, vendor_message_id="SM\x00x",
                          from_number="+1555\x00", error_code="21\x00", error_message="bad\x00text")
    assert await store.record_outcome(message.id, refused, NOW, report_none)
    stored = await store.message(message.id)
    assert stored is not None and stored.status is Status.REJECTED
    assert (stored.error_message or "").startswith("bad") and "text" in (stored.error_message or "")
    # The vendor's id finds its message again, NUL and all.
    assert await store.find_by_vendor_id("twilio", "SM\x00x") is not None


async def test_callback_strings_with_nul_are_stored_without_failing(store: Store) -> None:
    message = new(request_id="c1")
    await store.claim(message, NOW)
    ok = SendOutcome(response=StoredResponse(status=200, body=b"{}"), status=Status.ACCEPTED,
                     vendor_message_id="SM-c1")
    await store.record_outcome(message.id, ok, NOW, report_none)
    failed = StatusUpdate(status=Status.FAILED, vendor_message_id="SM-c1",
                          error_code="30\x0003", error_message="carrier\x00said no",
                          from_number="+1\x00")
    row = await store.message(message.id)
    assert await store.apply_status(message.id, failed, NOW + 1, report_all, seen=row) \
        is Applied.APPLIED
    stored = await store.message(message.id)
    assert stored is not None and stored.status is Status.FAILED
    assert "carrier" in (stored.error_message or "")


async def test_part_receipts_with_nul_are_stored_without_failing(store: Store) -> None:
    message = new(request_id="p1")
    await store.claim(message, NOW)
    part = StatusUpdate(status=Status.FAILED, vendor_message_id="SM-p1", part_id="p\x001",
                        error_code="x\x00", error_message="part\x00failed")
    assert await store.apply_status(message.id, part, NOW + 1, report_all) is Applied.APPLIED
    stored = await store.message(message.id)
    assert stored is not None and stored.status is Status.FAILED


async def test_inbound_and_suppressions_with_nul_are_stored_without_failing(store: Store
                                                                           ) -> None:
    record = InboundRecord(
        vendor="twilio", vendor_message_id="IN\x001",
        entry=OutboxEntry(event_id="in-1", url="https://r", payload=b'{"text":"a\\u0000"}'),
        account="twilio:AC1", number="+44\x00", listed=True, reason="twilio: 'STOP\x00'")
    assert await store.record_inbound(record, NOW)
    assert not await store.record_inbound(record, NOW + 1)  # the same id again: a duplicate
    await store.suppress("twilio:AC1", "+447911123456", "refused\x00", "216\x0010", NOW)
    listed = await store.suppressions("twilio:AC1", 10, 0)
    assert len(listed) == 2
    assert await store.find("no\x00such") is None


async def test_operator_filters_with_nul_match_nothing_without_failing(store: Store) -> None:
    await store.suppress("twilio:AC1", "+447911123456", "refused", None, NOW)
    assert await store.suppressions("twilio:AC1\x00", 10, 0) == []
    assert not await store.unsuppress("twilio:AC1\x00", "+447911123456")
    assert not await store.unsuppress("twilio:AC1", "+44791112345\x00")
    assert len(await store.suppressions("twilio:AC1", 10, 0)) == 1
    which = DeadLetterFilter(host="r\x00")
    assert await store.dead_letters(which, 0, 10) == []
    assert await store.replay_dead(which, None, NOW) == 0


def test_the_common_value_passes_through_untouched() -> None:
    """No NUL: the very same objects come back, so nothing is copied on the common path."""
    update = StatusUpdate(status=Status.FAILED, vendor_message_id="SM1", error_code="30003",
                          error_message="None of it \\x00")
    assert nul.cleaned_update(update) is update
    outcome = SendOutcome(response=StoredResponse(status=200, body=b"{}"),
                          status=Status.ACCEPTED, vendor_message_id="SM1")
    assert nul.cleaned_outcome(outcome) is outcome
    assert nul.exact("plain") is None and nul.shown("plain") == "plain"
    assert nul.restored(nul.shown(AWKWARD), nul.exact(AWKWARD)) == AWKWARD
