"""The SQLite store (WAL): the zero-set-up default, safe for several processes on one file.

Statements run inline on the event loop thread. Each is short and never awaits inside a
transaction, so no two coroutines interleave within one; measured here, a thread hop per
statement cost more CPU than the statement itself (see README, performance).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar, cast

import msgspec
import structlog

from connector.errors import StoreUnavailable
from connector.model import RANK, TERMINAL, Applied, Status, StatusUpdate
from connector.store import deadletters, inbound
from connector.store.base import (
    LEASE_WINDOW,
    Claim,
    DeadLetter,
    DeadLetterFilter,
    InboundRecord,
    LeasedReport,
    MessageRow,
    NewMessage,
    OutboxEntry,
    ReportAttempt,
    ReportBuilder,
    ReportView,
    SendOutcome,
    SentVia,
    StoredResponse,
    Suppression,
    may_report,
)
from connector.store.parts import Part, part_update, settled
from connector.store.schema import MIGRATIONS

_ROW_COLUMNS: Final = (
    "id, request_id, vendor, sealed_settings, sender, to_number, custom_data, callback_url, "
    "status, vendor_message_id, from_number, segments, encoding, error_code, error_message, "
    "ambiguous, parts, handed_off_at, delivered_at, errored_at, created_at, updated_at, "
    "response_status IS NOT NULL"
)
log = structlog.get_logger("connector.store")
_PURGE_BATCH: Final = 5000
# SQLite rewrites an index entry for every indexed column an UPDATE sets, changed or not: a
# write that keeps the vendor's id leaves it out of its SET (the (vendor, vendor_message_id)
# index then stays as it is): 17,700 fewer instructions and 9 against 19-22 us of CPU per
# write in autocommit, on a table of 20,000 messages.
_STAMP_ID: Final = (
    "UPDATE messages SET status = ?, vendor_message_id = ?, from_number = ?, segments = ?, "
    "error_code = ?, error_message = ?, handed_off_at = ?, delivered_at = ?, errored_at = ?, "
    "updated_at = ? WHERE id = ?"
)
_STAMP: Final = _STAMP_ID.replace("vendor_message_id = ?, ", "")
# The row is the one read when both hold: two writes may share one `now` (updated_at), never
# one status, as a status only moves forward.
_IF_UNCHANGED: Final = " AND updated_at = ? AND status = ?"
# By (whether the vendor id changes, whether the row must be the one read).
_STAMPS: Final = {(True, False): _STAMP_ID, (False, False): _STAMP,
                  (True, True): _STAMP_ID + _IF_UNCHANGED, (False, True): _STAMP + _IF_UNCHANGED}


def rank_sql(column: str) -> str:
    """A stored status's rank, as model.RANK gives it (terminal statuses rank highest)."""
    ranks = " ".join(f"WHEN '{s.value}' THEN {RANK[s]}" for s in Status if s not in TERMINAL)
    return f"CASE {column} {ranks} ELSE {max(RANK.values())} END"


# stamped() and advances() in SQL, for the store's advance(): the update's own facts come as
# parameters already reduced (`x or None`, the timestamps it sets or None), so what is left
# to compute is which of them the row keeps. Python's `or` passes over '' and 0 as over None.
ADVANCE: Final = (
    "UPDATE messages SET status = ?, "
    "from_number = COALESCE(?, from_number), segments = COALESCE(?, segments), "
    "error_code = COALESCE(?, error_code), error_message = COALESCE(?, error_message), "
    "handed_off_at = CASE WHEN handed_off_at IS NULL OR handed_off_at = 0 THEN ? "
    "ELSE handed_off_at END, delivered_at = COALESCE(?, delivered_at), "
    "errored_at = COALESCE(?, errored_at), updated_at = ?, "
    "vendor_message_id = CASE WHEN vendor_message_id IS NULL OR vendor_message_id = '' "
    f"THEN ? ELSE vendor_message_id END WHERE id = ? AND {rank_sql('status')} < ?"
)
# The same for a row that holds its vendor id, which the CASE would keep (it changes nothing
# otherwise, and ADVANCE then decides): naming an indexed column in SET makes SQLite rewrite
# its index entry, changed or not (~15,000 instructions of ~62,000 for this statement).
ADVANCE_KEEPING_ID: Final = ADVANCE.replace(
    ", vendor_message_id = CASE WHEN vendor_message_id IS NULL OR vendor_message_id = '' "
    "THEN ? ELSE vendor_message_id END", "") + " AND vendor_message_id <> ''"
_QUEUE: Final = (
    "INSERT INTO outbox (event_id, message_id, url, payload, next_at, created_at, "
    "lease_until, leased_by) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (event_id) DO NOTHING"
)


def _queue(db: sqlite3.Connection, message_id: str, entry: OutboxEntry, now: float) -> None:
    """Queue a report; one its dispatcher offered to take (Handoff) is written leased to it
    and added to the offer. A repeat of an event already queued writes nothing."""
    handoff = entry.handoff
    lease = (0, None) if handoff is None else (handoff.until, handoff.worker)
    cursor = db.execute(_QUEUE, (entry.event_id, message_id, entry.url, entry.payload, now,
                                 now, *lease))
    if handoff is not None and cursor.rowcount == 1 and cursor.lastrowid is not None:
        handoff.reports.append(LeasedReport(
            id=cursor.lastrowid, event_id=entry.event_id, url=entry.url,
            payload=entry.payload, attempts=0, created_at=now))


_CLAIM_COLUMNS: Final = (
    "INSERT INTO messages (id, request_id, claim_key, vendor, sealed_settings, sender, "
    "to_number, custom_data, callback_url, metadata, status, segments, encoding, "
    "claimed_until, created_at, updated_at) "
)
_CLAIM_VALUES: Final = "?,?,?,?,?,?,?,?,?,?,'pending',?,?,?,?,?"
_CLAIM: Final = f"{_CLAIM_COLUMNS}VALUES ({_CLAIM_VALUES}) ON CONFLICT (claim_key) DO NOTHING"
# A recipient on a tenant's suppression list: under its credential, or under any (''). The
# number's one or two entries are found by the key's prefix and filtered: with the `+`, `IN`
# is two comparisons, not a temporary table (as `credential IN (?, '')` and `credential = ?
# OR credential = ''` are) for the key to search.
_LISTED: Final = "account = ? AND number = ? AND +credential IN (?, '')"
# The claim, adding nothing while the recipient is listed.
_CLAIM_UNLISTED: Final = (
    f"{_CLAIM_COLUMNS}SELECT {_CLAIM_VALUES} WHERE NOT EXISTS (SELECT 1 FROM suppressions "
    f"WHERE {_LISTED}) ON CONFLICT (claim_key) DO NOTHING"
)


# Due reports in due order, at most `per_url` of one URL, none of the URLs the worker is still
# busy with; candidates are a bounded window, so a big backlog costs a bounded scan.
_DUE: Final = (
    "SELECT id FROM (SELECT id, next_at, row_number() OVER (PARTITION BY url "
    "ORDER BY next_at) AS n FROM (SELECT id, url, next_at FROM outbox "
    "WHERE state = 'pending' AND next_at <= ? AND lease_until <= ? "
    "AND url NOT IN (SELECT value FROM json_each(?)) ORDER BY next_at LIMIT ?)) "
    "WHERE n <= ? ORDER BY next_at LIMIT ?"
)
_LEASE: Final = (
    f"UPDATE outbox SET lease_until = ?, leased_by = ? WHERE id IN ({_DUE})"
    " RETURNING id, event_id, url, payload, attempts,"
    " COALESCE(replayed_at, created_at)"  # a replay's horizon runs from it
)
# Recording attempts: of reports still held by the worker (`leased_by`, still pending).
_HELD: Final = "leased_by = ? AND state = 'pending'"
# Several ids come as one JSON list; a lone id (the usual POST at a modest rate) is bound as
# itself, as `id IN (...)` costs SQLite a temporary table (~15,000 instructions).
_HELD_IDS: Final = f"id IN (SELECT value FROM json_each(?)) AND {_HELD}"
_HELD_ID: Final = f"id = ? AND {_HELD}"
_LOG_SETTLED: Final = (
    "INSERT INTO report_attempts (outbox_id, at, outcome, status_code, error) "
    "SELECT id, ?, ?, ?, ? FROM outbox WHERE {}"
)
_SETTLE: Final = (
    "UPDATE outbox SET attempts = attempts + 1, lease_until = 0, leased_by = NULL, state = ?, "
    "last_error = ?, done_at = ? WHERE {}"
)
_SETTLED_MANY: Final = (_LOG_SETTLED.format(_HELD_IDS), _SETTLE.format(_HELD_IDS))
_SETTLED_ONE: Final = (_LOG_SETTLED.format(_HELD_ID), _SETTLE.format(_HELD_ID))
_LOG_ATTEMPT: Final = (
    "INSERT INTO report_attempts (outbox_id, at, outcome, status_code, error) "
    f"SELECT id, ?, ?, ?, ? FROM outbox WHERE id = ? AND {_HELD}"
)
_RETRY: Final = (
    "UPDATE outbox SET attempts = attempts + 1, lease_until = 0, leased_by = NULL, "
    f"next_at = COALESCE(?, next_at), last_error = ?, done_at = NULL WHERE id = ? AND {_HELD}"
)
_CHECKPOINT_EVERY: Final = 1.0  # seconds between WAL checkpoints, off the event loop
_BUSY_RETRY_FIRST: Final = 0.0005  # seconds; doubles while another process holds the lock
_BUSY_RETRY_MAX: Final = 0.01
_MMAP_BYTES: Final = 256 * 1024 * 1024
_PAGE_BYTES: Final = 1024
_CACHE_KIB: Final = 64 * 1024
# Status by stored value: a dict lookup, where Status(value) is two Python calls per row read.
STATUS_OF: Final[dict[str, Status]] = {status.value: status for status in Status}
_SENT_RANK: Final = RANK[Status.SENT]
T = TypeVar("T")
# A write waiting for the group commit: its work, its caller's future, and whether it may
# run alone in autocommit (see SqliteStore._write).
_Pending = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[object]", bool]

# sqlite3 binds str, int, float and bytearray as they are; any other parameter (None, bytes,
# bool) goes through its adapter registry, and a type with no adapter there then has
# `PrepareProtocol.__adapt__` looked up, which raises and discards an AttributeError each
# time: ~3,000 instructions per parameter, 18 parameters per message (callgrind). Adapters
# that bind the very same values make the registry hit. Process-wide, and harmless to any
# other sqlite3 user: each binds what it bound before.
# {}.get(None) is None, bound as NULL; a built-in, where a Python function costs a frame.
sqlite3.register_adapter(type(None), cast("Callable[[None], None]", {}.get))
sqlite3.register_adapter(bytes, bytes)  # bytes(b) is b itself
sqlite3.register_adapter(bool, int)  # 0 or 1, as a bool was bound before


def _row(values: tuple[Any, ...]) -> MessageRow:
    (id_, request_id, vendor, sealed, sender, to_number, custom_data, callback_url, status,
     vendor_message_id, from_number, segments, encoding, error_code, error_message, ambiguous,
     parts, handed_off_at, delivered_at, errored_at, created_at, updated_at, answered) = values
    return MessageRow(
        id=id_, request_id=request_id, vendor=vendor, sealed_settings=sealed, sender=sender,
        to_number=to_number, custom_data=custom_data, callback_url=callback_url,
        status=STATUS_OF[status], vendor_message_id=vendor_message_id, from_number=from_number,
        segments=segments, encoding=encoding, error_code=error_code, error_message=error_message,
        ambiguous=bool(ambiguous), parts=parts, handed_off_at=handed_off_at,
        delivered_at=delivered_at,
        errored_at=errored_at, created_at=created_at, updated_at=updated_at,
        answered=bool(answered),
    )


def _claim(message_id: str, values: tuple[Any, ...]) -> Claim:
    status, body, retry_after, claimed_until, message_status, ambiguous = values
    response = None if status is None else StoredResponse(status=status, body=body,
                                                          retry_after=retry_after)
    return Claim(message_id=message_id, claimed=False, response=response,
                 claimed_until=claimed_until, status=Status(message_status),
                 ambiguous=bool(ambiguous))


# The send's answer. A callback may have arrived before it: never move the status back. Only
# the claim's holder writes; an acceptance also settles a stored ambiguous answer.
_OUTCOME: Final = (
    "UPDATE messages SET response_status = ?, response_body = ?, "
    "response_retry_after = ?, claimed_until = 0, ambiguous = ?, parts = ?, "
    "status = CASE WHEN status = 'pending' THEN ? ELSE status END, "
    "vendor_message_id = COALESCE(vendor_message_id, ?), "
    "segments = COALESCE(?, segments), from_number = COALESCE(from_number, ?), "
    "error_code = COALESCE(?, error_code), "
    "error_message = COALESCE(?, error_message), "
    "errored_at = COALESCE(errored_at, ?), "
    "claim_key = CASE WHEN ? THEN NULL ELSE claim_key END, updated_at = ? "
    "WHERE id = ? AND (COALESCE(claim_owner, id) = ? OR (ambiguous = 1 AND ?))"
)
_CLAIM_STATE: Final = ("response_status, response_body, response_retry_after, claimed_until, "
                       "status, ambiguous")


def stamped(row: MessageRow, update: StatusUpdate, now: float) -> MessageRow:
    """The row after `update` is applied: status plus the timestamps and facts it brings.
    (RANK and TERMINAL looked up directly: Status.rank and .terminal are a call each.)"""
    at = update.occurred_at or now
    status = update.status
    return msgspec.structs.replace(
        row,
        status=status,
        vendor_message_id=row.vendor_message_id or update.vendor_message_id,
        from_number=update.from_number or row.from_number,
        segments=update.segments or row.segments,
        error_code=update.error_code or row.error_code,
        error_message=update.error_message or row.error_message,
        handed_off_at=row.handed_off_at or (at if RANK[status] >= _SENT_RANK else None),
        delivered_at=at if status is Status.DELIVERED else row.delivered_at,
        errored_at=at if status in TERMINAL and status is not Status.DELIVERED else row.errored_at,
        updated_at=now,
    )


def advances(update: StatusUpdate, row: MessageRow) -> bool:
    """`update.status.advances(row.status)` without its two Python calls."""
    return row.status not in TERMINAL and RANK[update.status] > RANK[row.status]


def advance_parameters(message_id: str, update: StatusUpdate, now: float
                       ) -> tuple[Any, ...]:
    """ADVANCE's parameters: what stamped() takes from `update` whatever the row holds."""
    status = update.status
    at = update.occurred_at or now
    return (status.value, update.from_number or None,
            update.segments or None, update.error_code or None, update.error_message or None,
            at if RANK[status] >= _SENT_RANK else None,
            at if status is Status.DELIVERED else None,
            at if status in TERMINAL and status is not Status.DELIVERED else None,
            now, update.vendor_message_id, message_id, RANK[status])


def unapplied(update: StatusUpdate, status: str | None) -> Applied:
    """Why a status change that wrote nothing did not apply, from the row's status then."""
    if status is None:
        return Applied.UNKNOWN
    return Applied.DUPLICATE if STATUS_OF[status] is update.status else Applied.REGRESSED


def accepted_outcome(outcome: SendOutcome) -> bool:
    """The vendor took the message: news that may replace a stored ambiguous answer."""
    return outcome.response.status == 200 and not outcome.ambiguous


class _Errors:
    """`with store._errors() as db`: the connection, with any sqlite3.Error raised as
    StoreUnavailable. A plain class: @contextmanager's generator cost more than the read."""

    __slots__ = ("store",)

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        return self.store.db

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if isinstance(exc, sqlite3.Error):
            raise StoreUnavailable(f"store unavailable: {exc}") from exc


class SqliteStore:
    def __init__(self, path: Path, *, synchronous: str = "NORMAL", busy_timeout: float = 5.0,
                 retention: float = 7 * 86400.0) -> None:
        self.path = path
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._db: sqlite3.Connection | None = None
        # The group commit's own connection, which never waits for the file's write lock:
        # when another process holds it the batch is retried shortly, off the event loop's
        # critical path (SQLite's busy handler would sleep with the whole process stopped).
        self._writer: sqlite3.Connection | None = None
        self._busy_since: float | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._busy_tries = 0
        self._pending: list[_Pending] = []

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable("store is not open")
        return self._db

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, timeout=self._busy_timeout,
                             check_same_thread=False)
        # A new file gets 1 KiB pages (SQLite's default is 4 KiB). A commit writes every page
        # it changed whole into the WAL, checksummed, and a message's writes change one row in
        # each of several tables and indexes: -4% of a message's instructions end to end
        # (bench/instructions.py). A file made before keeps its size (the pragma is ignored).
        db.execute(f"PRAGMA page_size={_PAGE_BYTES}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._synchronous}")
        # Reads come from memory-mapped pages and a larger page cache: without them every
        # look-up by id paid read() system calls once the tables outgrew the 2 MB default.
        db.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
        db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        db.execute("PRAGMA foreign_keys=OFF")
        db.execute("PRAGMA wal_autocheckpoint=0")  # see _checkpoints
        self._db = db
        self._migrate()
        writer = sqlite3.connect(self.path, isolation_level=None, timeout=0,
                                 check_same_thread=False)
        writer.execute(f"PRAGMA synchronous={self._synchronous}")
        writer.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
        writer.execute(f"PRAGMA cache_size=-{_CACHE_KIB // 4}")
        writer.execute("PRAGMA wal_autocheckpoint=0")
        self._writer = writer
        self._checkpointer = asyncio.get_running_loop().create_task(self._checkpoints())

    async def _checkpoints(self) -> None:
        """Copy the WAL back into the database file from a thread, every so often.

        SQLite's automatic checkpoint runs inside whichever commit crosses 1,000 WAL pages,
        on the event loop, and with synchronous=NORMAL it ends in an fsync of the database
        file (0.4-5 ms on the disks measured here): every request in flight waited for it.
        A PASSIVE checkpoint takes no lock that writers or readers wait for.
        """
        checkpointer = sqlite3.connect(self.path, isolation_level=None, timeout=0,
                                       check_same_thread=False)
        try:
            while True:
                await asyncio.sleep(_CHECKPOINT_EVERY)
                job = asyncio.ensure_future(asyncio.to_thread(self._checkpoint, checkpointer))
                try:
                    await asyncio.shield(job)
                except asyncio.CancelledError:
                    await asyncio.wait([job])  # the thread lets go of the connection first
                    raise
                except sqlite3.Error as exc:  # busy or failing disk: the next round retries
                    log.warning("sqlite_checkpoint_failed", error=str(exc))
        finally:
            checkpointer.close()

    @staticmethod
    def _checkpoint(db: sqlite3.Connection) -> None:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def _migrate(self) -> None:
        # BEGIN IMMEDIATE serialises processes starting at once: each sees the version the
        # previous one left and applies only what is still missing.
        with self._tx() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={number}")

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    async def close(self) -> None:
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checkpointer
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"store unavailable: {exc}") from exc
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            db.execute("ROLLBACK")
            raise StoreUnavailable(f"store unavailable: {exc}") from exc

    async def _write(self, work: Callable[[sqlite3.Connection], T], *,
                     alone: bool = False) -> T:
        """Run `work` in the next group commit and return its result once it is durable.

        Writes that arrive in the same event-loop turn share one transaction: under load that
        is one WAL commit for many requests instead of one each (measured: the commits were
        a quarter of the service's CPU). Nothing awaits inside, so no other write interleaves.

        `alone`: `work` writes with one statement only (those before it change nothing, those
        after it read, and each copes with what another process may have committed in
        between), so when nothing else is waiting it runs in autocommit: the statement is its
        own transaction, without the BEGIN IMMEDIATE and COMMIT statements around it (#11).
        """
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._pending.append((work, future, alone))
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._commit_pending)
        return await future  # type: ignore[return-value]

    def _commit_alone(self, entry: _Pending) -> None:
        """A lone `alone` write, in autocommit: busy is retried as a batch's BEGIN is, as
        long as the work changed nothing yet (nothing before its one write changes anything,
        see _write)."""
        work, future, _ = entry
        try:
            db = self._writer or self.db
            before = db.total_changes
        except (sqlite3.Error, StoreUnavailable) as exc:  # closed meanwhile
            self._fail([entry], exc)
            return
        try:
            value = work(db)
        except sqlite3.Error as exc:
            if db.total_changes == before and self._busy_retry(exc):
                self._pending = [entry, *self._pending]  # with whatever arrives meanwhile
                return
            self._fail([entry], exc)
            return
        except Exception as exc:  # handed to its caller, as inside a batch
            if not future.done():
                future.set_exception(exc)
            return
        self._busy_since, self._busy_tries = None, 0
        if not future.done():
            future.set_result(value)

    def _commit_pending(self) -> None:
        batch, self._pending = self._pending, []
        if len(batch) == 1 and batch[0][2]:
            self._commit_alone(batch[0])
            return
        try:
            db = self._writer or self.db
            db.execute("BEGIN IMMEDIATE")
        except (sqlite3.Error, StoreUnavailable) as exc:  # busy, or closed meanwhile
            if isinstance(exc, sqlite3.Error) and self._busy_retry(exc):
                self._pending = batch + self._pending  # with whatever arrives meanwhile
                return
            self._fail(batch, exc)
            return
        self._busy_since, self._busy_tries = None, 0
        results: list[tuple[asyncio.Future[object], object, BaseException | None]] = []
        try:
            for work, future, _ in batch:
                try:
                    results.append((future, work(db), None))
                except sqlite3.Error:
                    raise
                except Exception as exc:  # handed to its own caller
                    results.append((future, None, exc))
            db.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            self._fail(batch, exc)
            return
        for future, value, error in results:
            if future.done():
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

    def _busy_retry(self, exc: sqlite3.Error) -> bool:
        """Another process holds the write lock: try again shortly (doubling the wait) until
        the busy timeout runs out, without stopping the event loop as SQLite's own busy
        handler would. True when a retry is scheduled."""
        busy = (isinstance(exc, sqlite3.OperationalError)
                and exc.sqlite_errorcode == sqlite3.SQLITE_BUSY)
        now = time.monotonic()
        if busy and self._busy_since is None:
            self._busy_since = now
        if not busy or self._busy_since is None or now - self._busy_since > self._busy_timeout:
            self._busy_since, self._busy_tries = None, 0
            return False
        delay = min(_BUSY_RETRY_MAX, _BUSY_RETRY_FIRST * 2 ** self._busy_tries)
        self._busy_tries += 1
        asyncio.get_running_loop().call_later(delay, self._commit_pending)
        return True

    @staticmethod
    def _fail(batch: list[_Pending], exc: Exception) -> None:
        failure = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(
            f"store unavailable: {exc}")
        for _, future, _alone in batch:
            if not future.done():
                future.set_exception(failure)

    def _errors(self) -> _Errors:
        return _Errors(self)

    async def ping(self) -> None:
        with self._errors() as db:
            db.execute("SELECT 1").fetchone()
        if self.schema_version != len(MIGRATIONS):
            raise StoreUnavailable("schema migrations are not applied")

    async def claim(self, message: NewMessage, now: float,
                    suppression: tuple[str, str] | None = None) -> Claim:
        found = await self._write(lambda db: self._claim(db, message, now, suppression),
                                  alone=True)
        if isinstance(found, Claim):
            return found
        return await self.claim(message, now, suppression)  # released meanwhile: again

    def _claim(self, db: sqlite3.Connection, m: NewMessage, now: float,
               suppression: tuple[str, str] | None) -> Claim | None:
        # The unique claim_key (the request_id within its tenant) decides who sends. Asked
        # about `suppression`, the INSERT adds only while the recipient is not listed for the
        # tenant: one statement answers both in the usual case, where a read of its own cost
        # the send about 1% of its instructions (#11). Nothing added: the claim is someone
        # else's, or the recipient is listed (then it is claimed as before, and says so).
        values = (m.id, m.request_id, m.claim_key, m.vendor, m.sealed_settings, m.sender,
                  m.to_number, m.custom_data, m.callback_url, m.metadata, m.segments,
                  m.encoding, m.claimed_until, now, now)
        if suppression is not None:
            account, credential = suppression
            if db.execute(_CLAIM_UNLISTED, (*values, account, m.to_number,
                                            credential)).rowcount == 1:
                return Claim(message_id=m.id, claimed=True, claimed_until=m.claimed_until,
                             suppressed=False)
            found = self._claimed(db, m.claim_key)
            if found is not None:
                return found
        if db.execute(_CLAIM, values).rowcount == 1:
            return Claim(message_id=m.id, claimed=True, claimed_until=m.claimed_until,
                         suppressed=None if suppression is None else True)
        return self._claimed(db, m.claim_key)

    @staticmethod
    def _claimed(db: sqlite3.Connection, claim_key: str | None) -> Claim | None:
        """The claim already made for `claim_key`, or None (there is none)."""
        found = db.execute(f"SELECT id, {_CLAIM_STATE} FROM messages WHERE claim_key = ?",
                           (claim_key,)).fetchone()
        return None if found is None else _claim(found[0], found[1:])

    async def poll_claim(self, message_id: str) -> Claim | None:
        with self._errors() as db:
            found = db.execute(f"SELECT {_CLAIM_STATE} FROM messages WHERE id = ?",
                               (message_id,)).fetchone()
        return None if found is None else _claim(message_id, found)

    async def take_over(self, message_id: str, now: float, claimed_until: float,
                        owner: str) -> bool:
        with self._errors() as db:
            cursor = db.execute(
                "UPDATE messages SET claimed_until = ?, claim_owner = ?, updated_at = ? "
                "WHERE id = ? AND response_status IS NULL AND status = 'pending' "
                "AND claimed_until < ?",
                (claimed_until, owner, now, message_id, now),
            )
        return cursor.rowcount == 1

    async def record_outcome(self, message_id: str, outcome: SendOutcome, now: float,
                             report: ReportBuilder, owner: str | None = None) -> bool:
        return await self._write(lambda db: self._record_outcome(
            db, message_id, outcome, now, report, owner or message_id), alone=True)

    def _record_outcome(self, db: sqlite3.Connection, message_id: str, o: SendOutcome,
                        now: float, report: ReportBuilder, owner: str) -> bool:
        errored = now if o.status.terminal else None
        values = (o.response.status, o.response.body, o.response.retry_after, o.ambiguous,
                  o.parts, o.status.value, o.vendor_message_id, o.segments, o.from_number,
                  o.error_code, o.error_message, errored, o.release, now, message_id, owner,
                  accepted_outcome(o))
        # Nearly always no part receipt is waiting: one plain UPDATE (RETURNING would gather
        # its row in a temporary table), which may run alone in autocommit.
        if db.execute(_OUTCOME + " AND parts_held = 0", values).rowcount == 1:
            return True
        # Not written: another holds the claim now, or part receipts that beat this answer
        # wait to be settled with it, in one transaction (its own when running alone; the
        # UPDATE above changed nothing, so a busy BEGIN is retried whole).
        own = not db.in_transaction
        if own:
            db.execute("BEGIN IMMEDIATE")
        try:
            held = db.execute(_OUTCOME + " RETURNING parts_held", values).fetchone()
            if held is not None and held[0]:
                self._settle_parts(db, message_id, now, report)
        except BaseException:
            if own:
                db.execute("ROLLBACK")
            raise
        if own:
            db.execute("COMMIT")
        return held is not None

    def _settle_parts(self, db: sqlite3.Connection, message_id: str, now: float,
                      report: ReportBuilder) -> None:
        """Part receipts that beat the answer, counted now that the number of parts is known."""
        row = _row(db.execute(f"SELECT {_ROW_COLUMNS} FROM messages WHERE id = ?",
                              (message_id,)).fetchone())
        db.execute("UPDATE messages SET parts_held = 0 WHERE id = ?", (message_id,))
        update = settled(row, self._parts(db, message_id))
        if update is not None:
            new = stamped(row, update, now)
            self._stamp(db, row, new, report(new, update, now), now)

    @staticmethod
    def _parts(db: sqlite3.Connection, message_id: str) -> list[Part]:
        return [(Status(s), code, text) for s, code, text in db.execute(
            "SELECT status, error_code, error_message FROM message_parts WHERE message_id = ? "
            "ORDER BY updated_at, part_id", (message_id,))]

    async def message(self, message_id: str) -> MessageRow | None:
        with self._errors() as db:
            found = db.execute(f"SELECT {_ROW_COLUMNS} FROM messages WHERE id = ?",
                               (message_id,)).fetchone()
        return None if found is None else _row(found)

    async def keep_text(self, message_id: str, text: str) -> None:
        await self._write(lambda db: db.execute(
            "UPDATE messages SET text = ? WHERE id = ?", (text, message_id)))

    async def message_text(self, message_id: str) -> str | None:
        with self._errors() as db:
            found = db.execute("SELECT text FROM messages WHERE id = ?",
                               (message_id,)).fetchone()
        return None if found is None else cast(str | None, found[0])

    async def find(self, key: str) -> MessageRow | None:
        row = await self.message(key)
        if row is not None:
            return row
        with self._errors() as db:
            found = db.execute(
                f"SELECT {_ROW_COLUMNS} FROM messages WHERE request_id = ? "
                "ORDER BY created_at DESC LIMIT 1", (key,),
            ).fetchone()
        return None if found is None else _row(found)

    async def find_by_vendor_id(self, vendor: str, vendor_message_id: str
                                ) -> MessageRow | None:
        with self._errors() as db:
            found = db.execute(
                f"SELECT {_ROW_COLUMNS} FROM messages WHERE vendor = ? AND vendor_message_id = ? "
                "ORDER BY created_at DESC LIMIT 1", (vendor, vendor_message_id),
            ).fetchone()
        return None if found is None else _row(found)

    async def apply_status(self, message_id: str, update: StatusUpdate, now: float,
                           report: ReportBuilder, seen: MessageRow | None = None) -> Applied:
        # With `seen`, the change is computed before the transaction and written on condition
        # that the row is unchanged (every write sets updated_at): no read inside the commit.
        fast = None
        if (seen is not None and seen.id == message_id and advances(update, seen)
                and (update.part_id is None or (seen.parts <= 1 and seen.answered))):
            new = stamped(seen, update, now)
            fast = (new, report(new, update, now), seen)

        def apply(db: sqlite3.Connection) -> Applied:
            if fast is not None and self._stamp(db, fast[2], fast[0], fast[1], now,
                                                if_unchanged=True):
                return Applied.APPLIED
            found = db.execute(f"SELECT {_ROW_COLUMNS} FROM messages WHERE id = ?",
                               (message_id,)).fetchone()
            if found is None:
                return Applied.UNKNOWN
            # A savepoint, so a failure here undoes this change alone, not the whole batch.
            db.execute("SAVEPOINT apply")
            try:
                applied = self._apply(db, _row(found), update, now, report)
            except BaseException:
                db.execute("ROLLBACK TO apply")
                raise
            finally:
                db.execute("RELEASE apply")
            return applied

        return await self._write(apply)

    def _apply(self, db: sqlite3.Connection, row: MessageRow, update: StatusUpdate, now: float,
               report: ReportBuilder) -> Applied:
        if update.part_id is not None and (row.parts > 1 or not row.answered):
            combined = self._apply_part(db, row, update, now)
            if not isinstance(combined, StatusUpdate):
                return combined
            update = combined
        if update.status is row.status:
            return Applied.DUPLICATE
        if not update.status.advances(row.status):
            return Applied.REGRESSED
        new = stamped(row, update, now)
        self._stamp(db, row, new, report(new, update, now), now)
        return Applied.APPLIED

    @staticmethod
    def _stamp(db: sqlite3.Connection, old: MessageRow, new: MessageRow,
               entry: OutboxEntry | None, now: float, *, if_unchanged: bool = False) -> bool:
        """Write the new status over `old` (the row as read) and queue its report; with
        `if_unchanged`, only when the row is still `old` (False, and nothing written, when it
        is not)."""
        new_id = new.vendor_message_id != old.vendor_message_id
        values: tuple[Any, ...] = (
            str(new.status), new.from_number, new.segments, new.error_code, new.error_message,
            new.handed_off_at, new.delivered_at, new.errored_at, now, new.id)
        if new_id:
            values = (values[0], new.vendor_message_id, *values[1:])
        if if_unchanged:
            values = (*values, old.updated_at, old.status.value)
        written = db.execute(_STAMPS[new_id, if_unchanged], values).rowcount
        if if_unchanged and written != 1:
            return False
        if entry is not None:
            _queue(db, new.id, entry, now)
        return True

    def _apply_part(self, db: sqlite3.Connection, row: MessageRow, update: StatusUpdate,
                    now: float) -> StatusUpdate | Applied:
        """Record one part's status; the message's status is what all parts add up to (before
        the send's answer, only what holds whatever the part count: see store/parts.py)."""
        found = db.execute("SELECT status FROM message_parts WHERE message_id = ? AND "
                           "part_id = ?", (row.id, update.part_id)).fetchone()
        if found is not None:
            previous = Status(found[0])
            if update.status is previous:
                return Applied.DUPLICATE
            if not update.status.advances(previous):
                return Applied.REGRESSED
        db.execute(
            "INSERT INTO message_parts (message_id, part_id, status, error_code, error_message, "
            "updated_at) VALUES (?,?,?,?,?,?) ON CONFLICT (message_id, part_id) DO UPDATE SET "
            "status = excluded.status, error_code = excluded.error_code, "
            "error_message = excluded.error_message, updated_at = excluded.updated_at",
            (row.id, update.part_id, update.status.value, update.error_code,
             update.error_message, now),
        )
        if not row.answered:  # the answer's write must settle this part (see _record_outcome)
            db.execute("UPDATE messages SET parts_held = 1, updated_at = ? WHERE id = ?",
                       (now, row.id))
        return part_update(row, update, self._parts(db, row.id))

    async def advance(self, message_id: str, update: StatusUpdate, now: float,
                      report: ReportBuilder, *, known_id: bool = False) -> Applied:
        if update.part_id is not None:  # the parts table decides: the full path
            return await self.apply_status(message_id, update, now, report)
        if may_report(report, update.status):
            # The report is built from the row: read it inside the write's transaction and
            # stamp it as apply_status does. Measured (callgrind) against the alternatives:
            # UPDATE ... RETURNING the row cost 27,000 instructions more than this read
            # (SQLite gathers RETURNING rows in a temporary table), and writing before the
            # builder runs needs a savepoint to undo a builder's failure (17,000 more).
            def apply(db: sqlite3.Connection) -> Applied:
                found = db.execute(f"SELECT {_ROW_COLUMNS} FROM messages WHERE id = ?",
                                   (message_id,)).fetchone()
                if found is None:
                    return Applied.UNKNOWN
                return self._apply(db, _row(found), update, now, report)
            return await self._write(apply)
        params = advance_parameters(message_id, update, now)
        # Without the vendor id (third from the end) first where the row likely has one;
        # a row without one, or a status that does not advance, leaves that to ADVANCE.
        kept = params[:-3] + params[-2:] if known_id else None

        def advance(db: sqlite3.Connection) -> Applied:
            if kept is not None and db.execute(ADVANCE_KEEPING_ID, kept).rowcount == 1:
                return Applied.APPLIED
            if db.execute(ADVANCE, params).rowcount == 1:
                return Applied.APPLIED
            return self._unapplied(db, message_id, update)

        return await self._write(advance, alone=True)

    @staticmethod
    def _unapplied(db: sqlite3.Connection, message_id: str, update: StatusUpdate) -> Applied:
        found = db.execute("SELECT status FROM messages WHERE id = ?", (message_id,)).fetchone()
        return unapplied(update, None if found is None else found[0])

    async def sent_via(self, message_id: str) -> SentVia | None:
        with self._errors() as db:
            found = db.execute("SELECT vendor, sealed_settings FROM messages WHERE id = ?",
                               (message_id,)).fetchone()
        return None if found is None else SentVia(found[0], found[1])

    async def expire_ambiguous(self, older_than: float, now: float,
                               report: ReportBuilder) -> int:
        with self._errors() as db:
            ids = [r[0] for r in db.execute(
                "SELECT id FROM messages WHERE status = 'pending' AND created_at < ? AND "
                "(ambiguous = 1 OR (response_status IS NULL AND claimed_until < ?)) LIMIT 1000",
                (older_than, now),
            )]
        update = StatusUpdate(status=Status.FAILED, error_code="ambiguous",
                              error_message="the vendor never confirmed this message")
        count = 0
        for message_id in ids:
            if await self.apply_status(message_id, update, now, report) is Applied.APPLIED:
                count += 1
        return count

    async def lease_reports(self, worker: str, now: float, limit: int, lease_seconds: float,
                            *, per_url: int | None = None,
                            skip_urls: Sequence[str] = ()) -> list[LeasedReport]:
        # One statement in autocommit: it takes the write lock as BEGIN IMMEDIATE would and
        # commits when done, without the two extra statements a transaction costs.
        with self._errors() as db:
            rows = db.execute(_LEASE, (
                now + lease_seconds, worker, now, now, json.dumps(list(skip_urls)),
                limit * LEASE_WINDOW, per_url or limit, limit)).fetchall()
        return [LeasedReport(id=r[0], event_id=r[1], url=r[2], payload=r[3], attempts=r[4],
                             created_at=r[5]) for r in rows]

    async def reports_done(self, worker: str,
                           results: list[tuple[int, ReportAttempt, float | None]],
                           now: float) -> int:
        # Only rows this worker still holds are written: after its lease expired another may
        # have delivered one, and this late word must not undo that. A POST's reports share
        # one attempt, so those it settles (delivered, dead) take two statements over a JSON
        # list of ids; retries (failures only) are bound row by row, each with its own time.
        if not results:
            return 0
        settled: dict[int, tuple[ReportAttempt, list[int]]] = {}
        retries = []
        for report_id, attempt, next_at in results:
            if attempt.outcome != "retry":
                settled.setdefault(id(attempt), (attempt, []))[1].append(report_id)
            else:
                retries.append((report_id, attempt, next_at))

        def record(db: sqlite3.Connection) -> int:
            written = 0
            for a, ids in settled.values():
                log, settle = _SETTLED_ONE if len(ids) == 1 else _SETTLED_MANY
                held = ids[0] if len(ids) == 1 else json.dumps(ids)
                db.execute(log, (a.at, a.outcome, a.status_code, a.error, held, worker))
                written += db.execute(settle, (a.outcome, a.error, now, held, worker)).rowcount
            if retries:
                db.executemany(_LOG_ATTEMPT, [
                    (a.at, a.outcome, a.status_code, a.error, report_id, worker)
                    for report_id, a, _ in retries])
                written += db.executemany(_RETRY, [
                    (next_at, a.error, report_id, worker)
                    for report_id, a, next_at in retries]).rowcount
            return written

        # In the group commit: one COMMIT with the status changes arriving meanwhile.
        return await self._write(record)

    async def release_reports(self, worker: str) -> None:
        with self._errors() as db:
            db.execute("UPDATE outbox SET lease_until = 0, leased_by = NULL "
                       "WHERE leased_by = ? AND state = 'pending'", (worker,))

    async def next_report_due(self) -> float | None:
        with self._errors() as db:
            found = db.execute("SELECT MIN(MAX(next_at, lease_until)) FROM outbox "
                               "WHERE state = 'pending'").fetchone()
        return None if found is None or found[0] is None else float(found[0])

    async def reports_for(self, message_id: str) -> list[ReportView]:
        with self._errors() as db:
            reports = db.execute(
                "SELECT id, event_id, url, state, next_at FROM outbox WHERE message_id = ? "
                "ORDER BY id", (message_id,),
            ).fetchall()
            views = []
            for report_id, event_id, url, state, next_at in reports:
                attempts = [ReportAttempt(at=a[0], outcome=a[1], status_code=a[2], error=a[3])
                            for a in db.execute(
                                "SELECT at, outcome, status_code, error FROM report_attempts "
                                "WHERE outbox_id = ? ORDER BY id", (report_id,))]
                views.append(ReportView(event_id=event_id, url=url, state=state,
                                        attempts=attempts,
                                        next_attempt_at=next_at if state == "pending" else None))
        return views

    async def outbox_stats(self) -> tuple[int, float | None, int]:
        with self._errors() as db:
            depth, oldest = db.execute("SELECT COUNT(*), MIN(COALESCE(replayed_at, "
                                       "created_at)) FROM outbox "
                                       "WHERE state = 'pending'").fetchone()
            (dead,) = db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'dead'").fetchone()
        return int(depth), oldest, int(dead)

    async def dead_letters(self, which: DeadLetterFilter, after: int, limit: int
                           ) -> list[DeadLetter]:
        query, params = deadletters.list_query(which, after, limit, postgres=False)
        with self._errors() as db:
            deadletters.prepare_sqlite(db)
            return deadletters.rows(db.execute(query, params).fetchall())

    async def replay_dead(self, which: DeadLetterFilter, ids: list[int] | None,
                          now: float) -> int:
        statement, params = deadletters.replay_statement(which, ids, now, postgres=False)
        with self._tx() as db:
            deadletters.prepare_sqlite(db)
            return int(db.execute(statement, params).rowcount)

    async def suppress(self, account: str, number: str, reason: str, vendor_code: str | None,
                       now: float, credential: str = "") -> None:
        await self._write(lambda db: db.execute(
            "INSERT INTO suppressions (account, number, credential, reason, vendor_code, "
            "created_at) VALUES (?,?,?,?,?,?) ON CONFLICT (account, number, credential) "
            "DO UPDATE SET reason = excluded.reason, vendor_code = excluded.vendor_code",
            (account, number, credential, reason, vendor_code, now)))

    async def is_suppressed(self, account: str, number: str, credential: str = "") -> bool:
        with self._errors() as db:
            found = db.execute(f"SELECT 1 FROM suppressions WHERE {_LISTED}",
                               (account, number, credential)).fetchone()
        return found is not None

    async def suppressions(self, account: str | None, limit: int, offset: int
                           ) -> list[Suppression]:
        with self._errors() as db:
            rows = db.execute(
                "SELECT account, number, reason, vendor_code, created_at, credential "
                "FROM suppressions WHERE ? IS NULL OR account = ? "
                "ORDER BY created_at DESC, account, number, credential LIMIT ? OFFSET ?",
                (account, account, limit, offset)).fetchall()
        return [Suppression(account=r[0], number=r[1], reason=r[2], vendor_code=r[3],
                            created_at=r[4], credential=r[5]) for r in rows]

    async def unsuppress(self, account: str, number: str) -> bool:
        removed = await self._write(lambda db: db.execute(
            "DELETE FROM suppressions WHERE account = ? AND number = ?",
            (account, number)).rowcount)
        return removed > 0

    async def remember_account(self, vendor: str, account: str, sealed: bytes,
                               now: float) -> None:
        await self._write(lambda db: db.execute(inbound.SQLITE["remember"],
                                                (vendor, account, sealed, now)))

    async def account_settings(self, vendor: str, account: str) -> bytes | None:
        with self._errors() as db:
            found = db.execute(inbound.SQLITE["settings"], (vendor, account)).fetchone()
        return None if found is None else bytes(found[0])

    async def purge_inbound(self, before: float) -> int:
        with self._tx() as db:
            removed = [db.execute(sql, (before,)).rowcount for sql in inbound.PURGE_SQLITE]
        return removed[-1]

    async def record_inbound(self, record: InboundRecord, now: float) -> bool:
        return await self._write(lambda db: inbound.record_sqlite(db, record, now))

    async def purge(self, before: float) -> int:
        """Forget messages created before `before` whose reports are finished, in batches."""
        removed = 0
        while True:
            with self._tx() as db:
                ids = [r[0] for r in db.execute(
                    "SELECT id FROM messages WHERE created_at < ? AND NOT EXISTS ("
                    "SELECT 1 FROM outbox WHERE outbox.message_id = messages.id "
                    "AND outbox.state = 'pending') LIMIT ?", (before, _PURGE_BATCH))]
                if not ids:
                    return removed
                marks = ",".join("?" * len(ids))
                db.execute("DELETE FROM report_attempts WHERE outbox_id IN (SELECT id FROM "
                           f"outbox WHERE message_id IN ({marks}))", ids)
                db.execute(f"DELETE FROM outbox WHERE message_id IN ({marks})", ids)
                db.execute(f"DELETE FROM message_parts WHERE message_id IN ({marks})", ids)
                db.execute(f"DELETE FROM messages WHERE id IN ({marks})", ids)
                removed += len(ids)
