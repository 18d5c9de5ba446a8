"""The Store contract: claims, outcomes, forward-only statuses, the outbox and its leases."""

from __future__ import annotations

import asyncio
import uuid

from connector.model import Applied, Status, StatusUpdate
from connector.store.base import (
    MessageRow,
    NewMessage,
    OutboxEntry,
    ReportAttempt,
    SendOutcome,
    Store,
    StoredResponse,
)

NOW = 1_800_000_000.0


def new(request_id: str | None = "r1", **changes: object) -> NewMessage:
    fields: dict[str, object] = {
        "id": uuid.uuid4().hex, "request_id": request_id, "vendor": "twilio",
        "sealed_settings": b"sealed", "sender": "MyBrand", "to_number": "+447911123456",
        "custom_data": "cd", "callback_url": "https://r", "metadata": None, "segments": 1,
        "encoding": "gsm7", "claimed_until": NOW + 15,
    }
    fields.update(changes)
    if "claim_key" not in fields:  # one tenant unless a test says otherwise
        fields["claim_key"] = None if request_id is None else f"twilio:AC1|t1|{request_id}"
    return NewMessage(**fields)  # type: ignore[arg-type]


def report_all(row: MessageRow, update: StatusUpdate, now: float) -> OutboxEntry:
    return OutboxEntry(event_id=f"{row.id}/{row.status}", url=row.callback_url,
                       payload=b'{"status":"%s"}' % row.status.value.encode())


def report_none(row: MessageRow, update: StatusUpdate, now: float) -> None:
    return None


OK = SendOutcome(response=StoredResponse(status=200, body=b'{"ok":1}'), status=Status.ACCEPTED,
                 vendor_message_id="SM1")


async def test_first_claim_wins_and_repeat_sees_the_original(store: Store) -> None:
    first, second = new(), new()
    assert (await store.claim(first, NOW)).claimed
    repeat = await store.claim(second, NOW)
    assert not repeat.claimed
    assert repeat.message_id == first.id
    assert repeat.response is None
    assert await store.message(second.id) is None  # the repeat stored nothing


async def test_repeat_after_outcome_gets_the_stored_answer(store: Store) -> None:
    first = new()
    await store.claim(first, NOW)
    await store.record_outcome(first.id, OK, NOW, report_none)
    repeat = await store.claim(new(), NOW + 1)
    assert repeat.response == OK.response


async def test_retryable_outcome_releases_the_request_id(store: Store) -> None:
    first = new()
    await store.claim(first, NOW)
    failed = SendOutcome(response=StoredResponse(status=503, body=b"{}", retry_after=2.0),
                         status=Status.FAILED, release=True)
    await store.record_outcome(first.id, failed, NOW, report_none)
    again = new()
    assert (await store.claim(again, NOW + 1)).claimed
    # the first attempt still answers its own waiters
    polled = await store.poll_claim(first.id)
    assert polled is not None and polled.response == failed.response


async def test_no_request_id_means_no_dedupe(store: Store) -> None:
    assert (await store.claim(new(request_id=None), NOW)).claimed
    assert (await store.claim(new(request_id=None), NOW)).claimed


async def test_expired_claim_can_be_taken_over_once(store: Store) -> None:
    first = new(claimed_until=NOW + 1)
    await store.claim(first, NOW)
    assert not await store.take_over(first.id, NOW, NOW + 20, "b")  # not expired yet
    assert await store.take_over(first.id, NOW + 2, NOW + 20, "b")
    assert not await store.take_over(first.id, NOW + 2, NOW + 20, "c")  # someone has it now


async def test_status_moves_forward_only_and_reports_once(store: Store) -> None:
    m = new()
    await store.claim(m, NOW)
    await store.record_outcome(m.id, OK, NOW, report_none)
    sent = StatusUpdate(status=Status.SENT)
    delivered = StatusUpdate(status=Status.DELIVERED, from_number="+15005550006")
    assert await store.apply_status(m.id, sent, NOW + 1, report_all) is Applied.APPLIED
    assert await store.apply_status(m.id, delivered, NOW + 2, report_all) is Applied.APPLIED
    assert await store.apply_status(m.id, delivered, NOW + 3, report_all) is Applied.DUPLICATE
    assert await store.apply_status(m.id, sent, NOW + 4, report_all) is Applied.REGRESSED
    failed = StatusUpdate(status=Status.FAILED)
    assert await store.apply_status(m.id, failed, NOW + 5, report_all) is Applied.REGRESSED
    row = await store.message(m.id)
    assert row is not None
    assert row.status is Status.DELIVERED
    assert row.handed_off_at == NOW + 1 and row.delivered_at == NOW + 2
    assert row.from_number == "+15005550006"
    leased = await store.lease_reports("w", NOW + 10, 100, 30)
    assert sorted(item.payload for item in leased) == [b'{"status":"delivered"}',
                                                        b'{"status":"sent"}']


async def test_a_fresh_seen_row_applies_and_queues_its_report(store: Store) -> None:
    m = new()
    await store.claim(m, NOW)
    await store.record_outcome(m.id, OK, NOW, report_none)
    seen = await store.message(m.id)
    assert seen is not None
    sent = StatusUpdate(status=Status.SENT)
    assert await store.apply_status(m.id, sent, NOW + 1, report_all, seen=seen) is (
        Applied.APPLIED)
    row = await store.message(m.id)
    assert row is not None and row.status is Status.SENT and row.handed_off_at == NOW + 1
    leased = await store.lease_reports("w", NOW + 10, 100, 30)
    assert [item.payload for item in leased] == [b'{"status":"sent"}']


async def test_a_stale_seen_row_never_overwrites_a_newer_status(store: Store) -> None:
    # Read, then another replica delivers the message: a late `sent` computed from the old
    # row must not write over the delivered one (the row changed since it was read).
    m = new()
    await store.claim(m, NOW)
    await store.record_outcome(m.id, OK, NOW, report_none)
    stale = await store.message(m.id)
    assert stale is not None and stale.status is Status.ACCEPTED
    delivered = StatusUpdate(status=Status.DELIVERED)
    assert await store.apply_status(m.id, delivered, NOW + 1, report_all) is Applied.APPLIED
    sent = StatusUpdate(status=Status.SENT)
    assert await store.apply_status(m.id, sent, NOW + 2, report_all, seen=stale) is (
        Applied.REGRESSED)
    row = await store.message(m.id)
    assert row is not None and row.status is Status.DELIVERED and row.delivered_at == NOW + 1
    leased = await store.lease_reports("w", NOW + 10, 100, 30)
    assert [item.payload for item in leased] == [b'{"status":"delivered"}']


async def test_a_stale_seen_row_still_moves_forward_from_the_current_state(store: Store) -> None:
    m = new()
    await store.claim(m, NOW)
    await store.record_outcome(m.id, OK, NOW, report_none)
    stale = await store.message(m.id)
    assert stale is not None
    sent = StatusUpdate(status=Status.SENT, from_number="+15005550006")
    assert await store.apply_status(m.id, sent, NOW + 1, report_all) is Applied.APPLIED
    delivered = StatusUpdate(status=Status.DELIVERED)
    assert await store.apply_status(m.id, delivered, NOW + 2, report_all, seen=stale) is (
        Applied.APPLIED)
    row = await store.message(m.id)
    # What the `sent` brought survives: the change was computed from the current row.
    assert row is not None and row.status is Status.DELIVERED
    assert row.handed_off_at == NOW + 1 and row.from_number == "+15005550006"


async def test_callback_before_send_outcome_is_not_undone(store: Store) -> None:
    m = new()
    await store.claim(m, NOW)
    update = StatusUpdate(status=Status.DELIVERED, vendor_message_id="SM1")
    assert await store.apply_status(m.id, update, NOW + 1, report_none) is Applied.APPLIED
    await store.record_outcome(m.id, OK, NOW + 2, report_none)
    row = await store.message(m.id)
    assert row is not None
    assert row.status is Status.DELIVERED
    assert row.vendor_message_id == "SM1"


async def test_unknown_message(store: Store) -> None:
    update = StatusUpdate(status=Status.SENT)
    assert await store.apply_status("nope", update, NOW, report_all) is Applied.UNKNOWN


async def test_leases_keep_dispatchers_apart_until_they_expire(store: Store) -> None:
    m = new()
    await store.claim(m, NOW)
    await store.apply_status(m.id, StatusUpdate(status=Status.DELIVERED), NOW, report_all)
    assert len(await store.lease_reports("a", NOW, 10, 30)) == 1
    assert await store.lease_reports("b", NOW + 1, 10, 30) == []
    taken = await store.lease_reports("b", NOW + 31, 10, 30)  # a's lease expired: b takes it
    assert len(taken) == 1


async def test_retry_schedules_and_dead_letter_ends(store: Store) -> None:
    m = new()
    await store.claim(m, NOW)
    await store.apply_status(m.id, StatusUpdate(status=Status.DELIVERED), NOW, report_all)
    (item,) = await store.lease_reports("a", NOW, 10, 30)
    retry = ReportAttempt(at=NOW, outcome="retry", status_code=503, error="HTTP 503")
    assert await store.reports_done("a", [(item.id, retry, NOW + 60)], NOW) == 1
    assert await store.lease_reports("a", NOW + 59, 10, 30) == []
    assert await store.next_report_due() == NOW + 60
    (again,) = await store.lease_reports("a", NOW + 60, 10, 30)
    assert again.attempts == 1
    dead = ReportAttempt(at=NOW + 60, outcome="dead", status_code=404, error="HTTP 404")
    await store.reports_done("a", [(again.id, dead, None)], NOW + 60)
    assert await store.lease_reports("a", NOW + 9999, 10, 30) == []
    (view,) = await store.reports_for(m.id)
    assert view.state == "dead"
    assert [a.outcome for a in view.attempts] == ["retry", "dead"]


async def test_release_frees_leases_at_once(store: Store) -> None:
    m = new()
    await store.claim(m, NOW)
    await store.apply_status(m.id, StatusUpdate(status=Status.DELIVERED), NOW, report_all)
    assert len(await store.lease_reports("a", NOW, 10, 30)) == 1
    await store.release_reports("a")
    assert len(await store.lease_reports("b", NOW + 1, 10, 30)) == 1


async def test_purge_keeps_pending_reports_and_recent_messages(store: Store) -> None:
    old, undelivered, recent = new("a"), new("b"), new("c")
    await store.claim(old, NOW)
    await store.claim(undelivered, NOW)
    await store.claim(recent, NOW + 100)
    await store.apply_status(undelivered.id, StatusUpdate(status=Status.DELIVERED), NOW,
                             report_all)
    assert await store.purge(NOW + 50) == 1
    assert await store.message(old.id) is None
    assert await store.message(undelivered.id) is not None
    assert await store.message(recent.id) is not None
    assert (await store.claim(new("a"), NOW + 200)).claimed  # its request_id is free again


async def test_ambiguous_sends_fail_after_the_window(store: Store) -> None:
    m = new()
    await store.claim(m, NOW)
    ambiguous = SendOutcome(response=StoredResponse(status=502, body=b"{}"),
                            status=Status.PENDING, ambiguous=True, error_code="ambiguous")
    await store.record_outcome(m.id, ambiguous, NOW, report_none)
    assert await store.expire_ambiguous(NOW - 1, NOW + 10, report_all) == 0
    assert await store.expire_ambiguous(NOW + 1, NOW + 10, report_all) == 1
    row = await store.message(m.id)
    assert row is not None and row.status is Status.FAILED and row.error_code == "ambiguous"


async def test_find_by_message_id_or_request_id(store: Store) -> None:
    m = new("req-42")
    await store.claim(m, NOW)
    by_id, by_request = await store.find(m.id), await store.find("req-42")
    assert by_id is not None and by_request is not None and by_id.id == by_request.id == m.id
    assert await store.find("missing") is None


async def test_ping_ok_when_migrated(store: Store) -> None:
    await store.ping()


async def test_find_by_vendor_id(store: Store) -> None:
    m = new()
    await store.claim(m, NOW)
    await store.record_outcome(m.id, OK, NOW, report_none)
    found = await store.find_by_vendor_id("twilio", "SM1")
    assert found is not None and found.id == m.id
    assert await store.find_by_vendor_id("bird", "SM1") is None


async def multipart(store: Store, parts: int = 2) -> str:
    m = new()
    await store.claim(m, NOW)
    outcome = SendOutcome(response=OK.response, status=Status.ACCEPTED, vendor_message_id="p1",
                          parts=parts)
    await store.record_outcome(m.id, outcome, NOW, report_none)
    return m.id


def part(part_id: str, status: Status, code: str | None = None) -> StatusUpdate:
    return StatusUpdate(status=status, part_id=part_id, error_code=code)


async def test_multipart_is_delivered_only_when_every_part_is(store: Store) -> None:
    message_id = await multipart(store)
    delivered = Status.DELIVERED
    assert await store.apply_status(message_id, part("p1", delivered), NOW, report_all) \
        is Applied.APPLIED
    row = await store.message(message_id)
    assert row is not None and row.status is Status.SENT
    assert await store.apply_status(message_id, part("p1", delivered), NOW, report_all) \
        is Applied.DUPLICATE
    await store.apply_status(message_id, part("p2", delivered), NOW + 1, report_all)
    row = await store.message(message_id)
    assert row is not None and row.status is Status.DELIVERED
    leased = await store.lease_reports("w", NOW + 5, 10, 30)
    assert sorted(i.payload for i in leased) == [b'{"status":"delivered"}', b'{"status":"sent"}']


async def test_multipart_fails_with_its_first_failed_part(store: Store) -> None:
    message_id = await multipart(store, parts=3)
    await store.apply_status(message_id, part("p1", Status.DELIVERED), NOW, report_none)
    await store.apply_status(message_id, part("p2", Status.UNDELIVERED, "9"), NOW, report_none)
    row = await store.message(message_id)
    assert row is not None
    assert (row.status, row.error_code) == (Status.UNDELIVERED, "9")
    late = await store.apply_status(message_id, part("p3", Status.DELIVERED), NOW, report_none)
    assert late is not Applied.APPLIED
    row = await store.message(message_id)
    assert row is not None and row.status is Status.UNDELIVERED


async def test_part_status_only_moves_forward(store: Store) -> None:
    message_id = await multipart(store)
    await store.apply_status(message_id, part("p1", Status.DELIVERED), NOW, report_none)
    assert await store.apply_status(message_id, part("p1", Status.SENT), NOW, report_none) \
        is Applied.REGRESSED


# --- suppressions (opted-out recipients, per integration account) -------------------------

ACCOUNT = "twilio:AC" + "0" * 32
OTHER = "infobip:https://x.api.infobip.com"


async def test_suppress_is_per_account_and_number(store: Store) -> None:
    assert not await store.is_suppressed(ACCOUNT, "+447911123456")
    await store.suppress(ACCOUNT, "+447911123456", "opted out", "21610", NOW)
    assert await store.is_suppressed(ACCOUNT, "+447911123456")
    assert not await store.is_suppressed(ACCOUNT, "+447911000000")
    assert not await store.is_suppressed(OTHER, "+447911123456")


async def test_suppress_again_updates_and_keeps_one_entry(store: Store) -> None:
    await store.suppress(ACCOUNT, "+447911123456", "first", "21610", NOW)
    await store.suppress(ACCOUNT, "+447911123456", "second", None, NOW + 5)
    (entry,) = await store.suppressions(None, 10, 0)
    assert (entry.account, entry.number, entry.reason, entry.vendor_code) == (
        ACCOUNT, "+447911123456", "second", None)
    assert entry.created_at == NOW  # when the recipient first opted out


async def test_suppressions_list_newest_first_filtered_and_paged(store: Store) -> None:
    await store.suppress(ACCOUNT, "+441", "r", "21610", NOW)
    await store.suppress(OTHER, "+442", "r", "10", NOW + 1)
    await store.suppress(ACCOUNT, "+443", "r", "21610", NOW + 2)
    assert [s.number for s in await store.suppressions(None, 10, 0)] == ["+443", "+442", "+441"]
    assert [s.number for s in await store.suppressions(ACCOUNT, 10, 0)] == ["+443", "+441"]
    assert [s.number for s in await store.suppressions(None, 1, 1)] == ["+442"]
    assert await store.suppressions(None, 10, 3) == []
    assert await store.suppressions("vonage:nobody", 10, 0) == []


async def test_unsuppress_removes_once(store: Store) -> None:
    await store.suppress(ACCOUNT, "+447911123456", "r", "21610", NOW)
    assert await store.unsuppress(ACCOUNT, "+447911123456")
    assert not await store.is_suppressed(ACCOUNT, "+447911123456")
    assert not await store.unsuppress(ACCOUNT, "+447911123456")
    assert await store.suppressions(None, 10, 0) == []


async def test_purge_keeps_suppressions(store: Store) -> None:
    await store.suppress(ACCOUNT, "+447911123456", "r", "21610", NOW)
    await store.purge(NOW + 10 * 86400)
    assert await store.is_suppressed(ACCOUNT, "+447911123456")


async def test_concurrent_claims_have_one_winner_per_request_id(store: Store) -> None:
    # Many at once: on PostgreSQL they share group-committed batches, repeats included.
    messages = [new(request_id=f"burst-{n % 10}") for n in range(40)]
    claims = await asyncio.gather(*(store.claim(m, NOW) for m in messages))
    winners = {m.request_id: m.id for m, c in zip(messages, claims, strict=True) if c.claimed}
    assert len(winners) == 10
    for m, c in zip(messages, claims, strict=True):
        assert c.message_id == winners[m.request_id]


async def test_concurrent_outcomes_and_callbacks_each_land_once(store: Store) -> None:
    messages = [new(request_id=f"pair-{n}") for n in range(12)]
    for m in messages:
        await store.claim(m, NOW)
    await asyncio.gather(*(store.record_outcome(m.id, OK, NOW, report_none) for m in messages))
    seen = [await store.message(m.id) for m in messages]
    sent, delivered = StatusUpdate(status=Status.SENT), StatusUpdate(status=Status.DELIVERED)
    results = await asyncio.gather(*(
        store.apply_status(row.id, update, NOW + 1 + n, report_all, seen=row)
        for row in seen if row is not None for n, update in enumerate((sent, delivered))))
    assert results.count(Applied.APPLIED) >= len(messages)  # every delivered, some sents
    for m in messages:
        row = await store.message(m.id)
        assert row is not None and row.status is Status.DELIVERED
        assert row.vendor_message_id == "SM1"
    leased = await store.lease_reports("w", NOW + 10, 1000, 30)
    assert sum(item.payload == b'{"status":"delivered"}' for item in leased) == len(messages)


async def test_text_is_kept_only_when_asked_and_goes_with_its_message(store: Store) -> None:
    kept, other = new(request_id="r-text"), new(request_id="r-plain")
    await store.claim(kept, NOW)
    await store.claim(other, NOW)
    await store.keep_text(kept.id, "Grüße, your code is 1234")
    assert await store.message_text(kept.id) == "Grüße, your code is 1234"
    assert await store.message_text(other.id) is None  # not asked: nothing stored
    assert await store.message_text("no-such-message") is None
    await store.keep_text("no-such-message", "x")  # a repeat's unused id: changes nothing
    assert await store.message_text("no-such-message") is None
