"""The Store contract for inbound messages: once per vendor message id, with the keyword's
suppression change in the same transaction, and the latest settings per vendor account."""

from __future__ import annotations

from connector.store.base import InboundRecord, OutboxEntry, ReportAttempt, Store

NOW = 1_800_000_000.0
ACCOUNT = "twilio:AC1"
NUMBER = "+447911123456"


def record(vendor_message_id: str, listed: bool | None = None,
           vendor: str = "twilio") -> InboundRecord:
    event_id = f"in-{vendor}-{vendor_message_id}"
    return InboundRecord(
        vendor=vendor, vendor_message_id=vendor_message_id,
        entry=OutboxEntry(event_id=event_id, url="https://platform/inbound",
                          payload=b'{"event_id":"%s"}' % event_id.encode()),
        account=ACCOUNT, number=NUMBER, listed=listed, reason="twilio: the recipient sent 'STOP'")


async def test_an_inbound_message_is_queued_once_per_vendor_message_id(store: Store) -> None:
    assert await store.record_inbound(record("SM1"), NOW) is True
    assert await store.record_inbound(record("SM1"), NOW + 1) is False
    # The same id at another vendor is another message.
    assert await store.record_inbound(record("SM1", vendor="vonage"), NOW + 2) is True
    leased = await store.lease_reports("w", NOW + 10, 100, 30)
    assert sorted(item.event_id for item in leased) == ["in-twilio-SM1", "in-vonage-SM1"]
    assert {item.url for item in leased} == {"https://platform/inbound"}


async def test_a_stop_lists_the_sender_and_a_start_removes_them(store: Store) -> None:
    assert await store.record_inbound(record("SM1", listed=True), NOW)
    assert await store.is_suppressed(ACCOUNT, NUMBER)
    (entry,) = await store.suppressions(ACCOUNT, 10, 0)
    assert (entry.reason, entry.vendor_code) == ("twilio: the recipient sent 'STOP'", None)
    assert await store.record_inbound(record("SM2", listed=False), NOW + 1)
    assert not await store.is_suppressed(ACCOUNT, NUMBER)


async def test_a_repeated_stop_after_a_start_changes_nothing(store: Store) -> None:
    await store.record_inbound(record("SM1", listed=True), NOW)
    await store.record_inbound(record("SM2", listed=False), NOW + 1)
    # The vendor retries the first STOP: already taken, so the START still stands.
    assert await store.record_inbound(record("SM1", listed=True), NOW + 2) is False
    assert not await store.is_suppressed(ACCOUNT, NUMBER)


async def test_an_account_keeps_its_latest_settings(store: Store) -> None:
    assert await store.account_settings("twilio", "AC1") is None
    await store.remember_account("twilio", "AC1", b"sealed-1", NOW)
    await store.remember_account("twilio", "AC1", b"sealed-2", NOW + 1)
    await store.remember_account("vonage", "AC1", b"other", NOW + 1)
    assert await store.account_settings("twilio", "AC1") == b"sealed-2"
    assert await store.account_settings("vonage", "AC1") == b"other"


async def test_purge_forgets_old_inbound_messages_once_forwarded(store: Store) -> None:
    await store.record_inbound(record("SM1"), NOW)
    await store.record_inbound(record("SM2"), NOW + 100)
    assert await store.purge_inbound(NOW + 50) == 0  # SM1's forward is still pending
    (first, _second) = sorted(await store.lease_reports("w", NOW + 200, 10, 30),
                             key=lambda item: item.event_id)
    await store.reports_done("w", [(first.id, ReportAttempt(at=NOW + 200, outcome="delivered",
                                                       status_code=200, error=None), None)],
                             NOW + 200)
    assert await store.purge_inbound(NOW + 50) == 1
    # Forgotten: the same id is a new message again, and SM2 is still known.
    assert await store.record_inbound(record("SM1"), NOW + 300) is True
    assert await store.record_inbound(record("SM2"), NOW + 300) is False
