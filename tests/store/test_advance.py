"""Store.advance, the callbacks' one-write status change: it must do exactly what reading
the row and stamping it in Python (sqlite.stamped, sqlite.advances) did, on every store."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.model import Applied, Status, StatusUpdate
from connector.store.base import MessageRow, OutboxEntry, SentVia, Store, may_report
from connector.store.postgres import PostgresStore
from connector.store.sqlite import SqliteStore, advances, stamped
from tests.store.test_store import NOW, OK, new, report_none

_COLUMNS = ("status", "vendor_message_id", "from_number", "segments", "error_code",
            "error_message", "handed_off_at", "delivered_at", "errored_at")
# Values where Python's `or` and SQL's COALESCE part ways ('' and 0 are false, not NULL).
_TEXT = st.sampled_from([None, "", "a1", "b2"])
_TIME = st.sampled_from([None, 0.0, NOW - 50, NOW - 7.5])
_ROWS = st.fixed_dictionaries({
    "status": st.sampled_from([s.value for s in Status]), "vendor_message_id": _TEXT,
    "from_number": _TEXT, "segments": st.sampled_from([None, 0, 1, 4]),
    "error_code": _TEXT, "error_message": _TEXT, "handed_off_at": _TIME,
    "delivered_at": _TIME, "errored_at": _TIME})
_UPDATES = st.builds(
    StatusUpdate, status=st.sampled_from(list(Status)), vendor_message_id=_TEXT,
    from_number=_TEXT, segments=st.sampled_from([None, 0, 2]), error_code=_TEXT,
    error_message=_TEXT, occurred_at=st.sampled_from([None, 0.0, NOW - 3.25]))


class Recording:
    """A report builder that reports every status (or, `statuses` empty, says it reports
    none) and keeps the rows it was given."""

    def __init__(self, reports: bool) -> None:
        self.rows: list[MessageRow] = []
        if not reports:
            self.statuses: frozenset[Status] = frozenset()

    def __call__(self, row: MessageRow, update: StatusUpdate, now: float) -> OutboxEntry:
        self.rows.append(row)
        return OutboxEntry(event_id=uuid.uuid4().hex, url="https://r", payload=b"{}")


async def force(store: Store, message_id: str, values: dict[str, Any]) -> None:
    """Put a row into a state the generated examples ask for, whatever led there."""
    names = list(values)
    if isinstance(store, SqliteStore):
        sets = ", ".join(f"{name} = ?" for name in names)
        store.db.execute(f"UPDATE messages SET {sets} WHERE id = ?",
                         [*values.values(), message_id])
    else:
        assert isinstance(store, PostgresStore)
        sets = ", ".join(f"{name} = ${n}" for n, name in enumerate(names, start=1))
        async with store.connection() as conn:
            await conn.execute(f"UPDATE messages SET {sets} WHERE id = ${len(names) + 1}",
                               *values.values(), message_id)


async def twin(store: Store, values: dict[str, Any]) -> MessageRow:
    m = new(request_id=None)
    await store.claim(m, NOW - 100)
    await store.record_outcome(m.id, OK, NOW - 99, report_none)
    await force(store, m.id, values)
    row = await store.message(m.id)
    assert row is not None
    return row


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=_ROWS, update=_UPDATES, reports=st.booleans())
async def test_advance_stamps_in_sql_what_stamped_computes(
        store: Store, values: dict[str, Any], update: StatusUpdate, reports: bool) -> None:
    before = await twin(store, values)
    report = Recording(reports)
    applied = await store.advance(before.id, update, NOW, report)
    after = await store.message(before.id)
    if advances(update, before):
        expected = stamped(before, update, NOW)
        assert (applied, after) == (Applied.APPLIED, expected)
        assert report.rows == ([expected] if reports else [])
        assert len(await store.reports_for(before.id)) == (1 if reports else 0)
    else:
        same = update.status is before.status
        assert applied is (Applied.DUPLICATE if same else Applied.REGRESSED)
        assert after == before and report.rows == []
        assert await store.reports_for(before.id) == []
    # And what apply_status, the path it replaces, does to a twin in the same state.
    other = await twin(store, values)
    assert await store.apply_status(other.id, update, NOW, Recording(reports)) is applied
    again = await store.message(other.id)
    assert again is not None and after is not None
    assert {k: getattr(again, k) for k in _COLUMNS} == {k: getattr(after, k) for k in _COLUMNS}
    # And advance told the row likely holds its vendor id (a hint, right or wrong here).
    hinted = await twin(store, values)
    assert await store.advance(hinted.id, update, NOW, Recording(reports),
                               known_id=True) is applied
    third = await store.message(hinted.id)
    assert third is not None
    assert {k: getattr(third, k) for k in _COLUMNS} == {k: getattr(after, k) for k in _COLUMNS}


async def test_advance_on_an_unknown_message_changes_nothing(store: Store) -> None:
    report = Recording(True)
    update = StatusUpdate(status=Status.DELIVERED)
    assert await store.advance(uuid.uuid4().hex, update, NOW, report) is Applied.UNKNOWN
    assert report.rows == []
    assert await store.lease_reports("w", NOW + 10, 100, 30) == []


@pytest.mark.parametrize("reports", [True, False], ids=["reported", "unreported"])
async def test_each_status_applies_once_and_only_forward(store: Store, reports: bool) -> None:
    m = new()
    await store.claim(m, NOW)
    await store.record_outcome(m.id, OK, NOW, report_none)
    report = Recording(reports)
    steps = [(Status.SENT, Applied.APPLIED), (Status.SENT, Applied.DUPLICATE),
             (Status.DELIVERED, Applied.APPLIED), (Status.DELIVERED, Applied.DUPLICATE),
             (Status.SENT, Applied.REGRESSED), (Status.FAILED, Applied.REGRESSED)]
    for n, (status, expected) in enumerate(steps, start=1):
        assert await store.advance(m.id, StatusUpdate(status=status), NOW + n, report) \
            is expected
    row = await store.message(m.id)
    assert row is not None and row.status is Status.DELIVERED
    assert (row.handed_off_at, row.delivered_at) == (NOW + 1, NOW + 3)
    assert [r.status for r in report.rows] == ([Status.SENT, Status.DELIVERED] if reports
                                              else [])
    assert len(await store.reports_for(m.id)) == (2 if reports else 0)


async def test_a_failing_report_builder_undoes_its_status_change(store: Store) -> None:
    m = new()
    await store.claim(m, NOW)
    await store.record_outcome(m.id, OK, NOW, report_none)

    def broken(row: MessageRow, update: StatusUpdate, now: float) -> OutboxEntry:
        raise RuntimeError("builder bug")

    delivered = StatusUpdate(status=Status.DELIVERED)
    with pytest.raises(RuntimeError):
        await store.advance(m.id, delivered, NOW + 1, broken)
    row = await store.message(m.id)
    assert row is not None and row.status is Status.ACCEPTED  # no status without its report
    report = Recording(True)
    assert await store.advance(m.id, delivered, NOW + 2, report) is Applied.APPLIED
    assert len(await store.reports_for(m.id)) == 1


async def test_a_callback_before_the_send_answer_is_not_undone_by_it(store: Store) -> None:
    m = new()
    await store.claim(m, NOW)
    sent = StatusUpdate(status=Status.SENT, vendor_message_id="SM1")
    assert await store.advance(m.id, sent, NOW + 1, Recording(False)) is Applied.APPLIED
    await store.record_outcome(m.id, OK, NOW + 2, report_none)
    row = await store.message(m.id)
    assert row is not None and row.status is Status.SENT and row.vendor_message_id == "SM1"


async def test_sent_via_reads_what_verification_needs(store: Store) -> None:
    m = new(sealed_settings=b"sealed-for-twilio")
    await store.claim(m, NOW)
    assert await store.sent_via(m.id) == SentVia("twilio", b"sealed-for-twilio")
    assert await store.sent_via(uuid.uuid4().hex) is None
    assert "sealed-for-twilio" not in repr(SentVia("twilio", b"sealed-for-twilio"))


def test_a_builder_says_which_statuses_it_may_report() -> None:
    assert may_report(report_none, Status.SENT)  # a plain function: any, to be safe
    assert not may_report(Recording(False), Status.DELIVERED)
    assert may_report(Recording(True), Status.SENT)


async def test_repeats_arriving_together_apply_once_and_report_once(store: Store) -> None:
    m = new()
    await store.claim(m, NOW)
    await store.record_outcome(m.id, OK, NOW, report_none)
    report = Recording(True)
    updates = [StatusUpdate(status=s) for s in (Status.SENT, Status.DELIVERED) * 4]
    results = await asyncio.gather(*(store.advance(m.id, u, NOW + 1, report) for u in updates))
    by_status = {s: [r for u, r in zip(updates, results, strict=True) if u.status is s]
                 for s in (Status.SENT, Status.DELIVERED)}
    assert by_status[Status.DELIVERED].count(Applied.APPLIED) == 1
    assert by_status[Status.SENT].count(Applied.APPLIED) <= 1  # none once delivered came first
    row = await store.message(m.id)
    assert row is not None and row.status is Status.DELIVERED
    # (A store may build a report it then does not write: the row changed meanwhile.)
    assert len(await store.reports_for(m.id)) == results.count(Applied.APPLIED)
