"""The statements behind inbound messages and per-account settings, for both stores."""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from connector.store.base import InboundRecord

_REMEMBER: Final = (
    "INSERT INTO vendor_accounts (vendor, account, sealed_settings, updated_at) "
    "VALUES ({0},{1},{2},{3}) ON CONFLICT (vendor, account) DO UPDATE SET "
    "sealed_settings = excluded.sealed_settings, updated_at = excluded.updated_at")
_SETTINGS: Final = ("SELECT sealed_settings FROM vendor_accounts "
                    "WHERE vendor = {0} AND account = {1}")
_TAKE: Final = ("INSERT INTO inbound_messages (vendor, vendor_message_id, event_id, received_at) "
                "VALUES ({0},{1},{2},{3}) ON CONFLICT DO NOTHING")
# The outbox's message_id names what an entry is about; inbound entries name their event.
_QUEUE: Final = ("INSERT INTO outbox (event_id, message_id, url, payload, next_at, created_at) "
                 "VALUES ({0},{1},{2},{3},{4},{5}) ON CONFLICT (event_id) DO NOTHING")
# Listed under the account's credential, as a vendor's refusal is (see connector.tenants);
# START takes the number off under every credential of the account, as the operator API does.
_SUPPRESS: Final = (
    "INSERT INTO suppressions (account, number, credential, reason, vendor_code, created_at) "
    "VALUES ({0},{1},{2},{3},NULL,{4}) ON CONFLICT (account, number, credential) DO UPDATE SET "
    "reason = excluded.reason, vendor_code = NULL")
_UNSUPPRESS: Final = "DELETE FROM suppressions WHERE account = {0} AND number = {1}"
_ALL: Final = (("remember", _REMEMBER), ("settings", _SETTINGS), ("take", _TAKE),
               ("queue", _QUEUE), ("suppress", _SUPPRESS), ("unsuppress", _UNSUPPRESS))

# Forgetting: an inbound message's id is kept as long as a request_id is (the dedupe
# retention), far beyond any vendor's retries (Bird 8 h, Sinch ~23 h, Vonage 24 h), and its
# outbox entry once it is no longer pending.
PURGE: Final = (
    "DELETE FROM report_attempts WHERE outbox_id IN (SELECT o.id FROM outbox o JOIN "
    "inbound_messages i ON o.event_id = i.event_id WHERE i.received_at < {0} "
    "AND o.state <> 'pending')",
    "DELETE FROM outbox WHERE state <> 'pending' AND event_id IN (SELECT event_id FROM "
    "inbound_messages WHERE received_at < {0})",
    "DELETE FROM inbound_messages WHERE received_at < {0} AND NOT EXISTS (SELECT 1 FROM "
    "outbox WHERE outbox.event_id = inbound_messages.event_id)",
)
PURGE_SQLITE: Final = tuple(sql.format("?") for sql in PURGE)
PURGE_PG: Final = tuple(sql.format("$1") for sql in PURGE)

SQLITE: Final = {name: sql.format(*["?"] * 6) for name, sql in _ALL}
PG: Final = {name: sql.format(*[f"${n}" for n in range(1, 7)]) for name, sql in _ALL}


def steps(record: InboundRecord, now: float) -> list[tuple[str, tuple[Any, ...]]]:
    """What a new inbound message writes after its id is taken, in order."""
    entry = record.entry
    done: list[tuple[str, tuple[Any, ...]]] = [
        ("queue", (entry.event_id, entry.event_id, entry.url, entry.payload, now, now))]
    if record.listed is True:
        done.append(("suppress", (record.account, record.number, record.credential,
                                  record.reason, now)))
    elif record.listed is False:
        done.append(("unsuppress", (record.account, record.number)))
    return done


def record_sqlite(db: sqlite3.Connection, record: InboundRecord, now: float) -> bool:
    taken = db.execute(SQLITE["take"], (record.vendor, record.vendor_message_id,
                                        record.entry.event_id, now))
    if taken.rowcount != 1:
        return False
    for name, values in steps(record, now):
        db.execute(SQLITE[name], values)
    return True


async def record_pg(conn: Any, record: InboundRecord, now: float) -> bool:
    taken = await conn.execute(PG["take"], record.vendor, record.vendor_message_id,
                               record.entry.event_id, now)
    if taken != "INSERT 0 1":
        return False
    for name, values in steps(record, now):
        await conn.execute(PG[name], *values)
    return True
