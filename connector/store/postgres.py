"""The PostgreSQL store: one database shared by any number of replicas and dispatchers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from types import TracebackType
from typing import Any, Final, TypeAlias, cast

import asyncpg
import msgspec

from connector.errors import StoreUnavailable
from connector.model import Applied, Status, StatusUpdate
from connector.store import deadletters, inbound, nul
from connector.store.base import (
    LEASE_WINDOW,
    Claim,
    DeadLetter,
    DeadLetterFilter,
    InboundRecord,
    LeasedReport,
    MessageRow,
    NewMessage,
    ReportAttempt,
    ReportBuilder,
    ReportView,
    SendOutcome,
    SentVia,
    StoredResponse,
    Suppression,
    may_report,
)
from connector.store.batch import Batcher
from connector.store.parts import Part, part_update, settled
from connector.store.pgpool import Connection, Pool
from connector.store.schema_pg import MIGRATION_LOCK, MIGRATIONS_PG, VERSION_TABLE
from connector.store.sqlite import (
    STATUS_OF,
    accepted_outcome,
    advance_parameters,
    advances,
    rank_sql,
    stamped,
    unapplied,
)
from connector.throttle import postgres as throttle_pg

Conn: TypeAlias = Connection
# Named as MessageRow's fields, so a row converts by keyword; then custom_data's exact copy
# (store/nul.py), which _row takes out.
_ROW_COLUMNS: Final = ", ".join(
    "response_status IS NOT NULL AS answered" if name == "answered" else name
    for name in MessageRow.__struct_fields__) + ", custom_data_exact"
_PURGE_BATCH: Final = 5000
# Everything the driver raises: server errors, a lost or refused connection, a timeout
# (TimeoutError is an OSError), a closed pool. All of them are "try again later" to a caller.
_DRIVER_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError,
                         asyncpg.InternalClientError, OSError)
# The connection itself is gone (server restart, failover, terminated backend, reset socket).
_CONNECTION_LOST: Final = (asyncpg.PostgresConnectionError, asyncpg.AdminShutdownError,
                           asyncpg.CrashShutdownError, asyncpg.CannotConnectNowError,
                           asyncpg.InterfaceError, asyncpg.InternalClientError,
                           ConnectionError)
_CLAIM_TRIES: Final = 5

# One round trip: the insert wins, or the SELECT shows the row that beat it. A winner that
# committed after this statement's snapshot conflicts yet is invisible to it; then no row
# comes back and claim() runs the statement again, whose new snapshot sees the winner.
_CLAIM: Final = (
    "WITH ins AS (INSERT INTO messages (id, request_id, claim_key, vendor, sealed_settings, "
    "sender, to_number, custom_data, callback_url, metadata, status, segments, encoding, "
    "claimed_until, created_at, updated_at, custom_data_exact) "
    "VALUES ($1,$2,$14,$3,$4,$5,$6,$7,$8,$9,'pending',$10,$11,$12,$13,$13,$15) "
    "ON CONFLICT (claim_key) DO NOTHING RETURNING id) "
    "SELECT TRUE AS claimed, id, NULL::integer, NULL::bytea, NULL::double precision, "
    "$12 AS claimed_until, 'pending', FALSE FROM ins UNION ALL "
    "SELECT FALSE, id, response_status, response_body, response_retry_after, claimed_until, "
    "status, ambiguous FROM messages WHERE claim_key = $14 AND NOT EXISTS (SELECT 1 FROM ins)"
)
# Group commit (see batch.py): many claims in one statement. Rows go in claim_key order, so
# two replicas inserting overlapping keys wait on each other in one order, never in a cycle.
# A claim whose row is not returned (a duplicate within the batch, or a winner committed after
# the snapshot) runs _CLAIM alone afterwards. The batch comes as one JSON array of _ClaimRow
# objects (bytes in base64): see _fetch_json for why not one array per column.
_CLAIM_MANY: Final = (
    "WITH input AS (SELECT id, request_id, vendor, decode(sealed_settings, 'base64') "
    "AS sealed_settings, sender, to_number, custom_data, callback_url, "
    "decode(metadata, 'base64') AS metadata, segments, encoding, claimed_until, now, claim_key, "
    "sup_account, sup_credential, decode(custom_data_exact, 'base64') AS custom_data_exact "
    "FROM json_to_recordset($1::json) AS i(id text, request_id text, vendor text, "
    "sealed_settings text, sender text, to_number text, custom_data text, callback_url text, "
    "metadata text, segments integer, encoding text, claimed_until double precision, "
    "now double precision, claim_key text, sup_account text, sup_credential text, "
    "custom_data_exact text)), "
    "ins AS (INSERT INTO messages (id, request_id, claim_key, vendor, sealed_settings, "
    "sender, to_number, custom_data, callback_url, metadata, status, segments, encoding, "
    "claimed_until, created_at, updated_at, custom_data_exact) "
    "SELECT id, request_id, claim_key, vendor, sealed_settings, sender, to_number, "
    "custom_data, callback_url, metadata, 'pending', segments, encoding, claimed_until, now, "
    "now, custom_data_exact FROM input ORDER BY claim_key ON CONFLICT (claim_key) DO NOTHING "
    "RETURNING id) "
    "SELECT i.id AS mine, TRUE, i.id, NULL::integer, NULL::bytea, NULL::double precision, "
    "i.claimed_until, 'pending', FALSE, "
    # The send's suppression check (is_suppressed's), answered with the claim it follows.
    "CASE WHEN i.sup_account IS NOT NULL THEN EXISTS (SELECT 1 FROM suppressions s "
    "WHERE s.account = i.sup_account AND s.number = i.to_number "
    "AND s.credential IN (i.sup_credential, '')) END "
    "FROM input i WHERE i.id IN (SELECT id FROM ins) "
    "UNION ALL SELECT i.id, FALSE, m.id, m.response_status, m.response_body, "
    "m.response_retry_after, m.claimed_until, m.status, m.ambiguous, NULL FROM input i "
    "JOIN messages m ON m.claim_key = i.claim_key WHERE i.id NOT IN (SELECT id FROM ins)"
)
# Only the claim's holder writes (claim_owner NULL: the message's own send); an acceptance
# also settles a stored ambiguous answer ($17). A callback may have arrived before this
# answer: never move the status back.
_RECORD_OUTCOME: Final = (
    "UPDATE messages SET response_status = $1, response_body = $2, response_retry_after = $3, "
    "claimed_until = 0, ambiguous = $4, parts = $5, "
    "status = CASE WHEN status = 'pending' THEN $6 ELSE status END, "
    "vendor_message_id = COALESCE(vendor_message_id, $7), segments = COALESCE($8, segments), "
    "from_number = COALESCE(from_number, $9), error_code = COALESCE($10, error_code), "
    "error_message = COALESCE($11, error_message), errored_at = COALESCE(errored_at, $12), "
    "claim_key = CASE WHEN $13 THEN NULL ELSE claim_key END, updated_at = $14 WHERE id = $15 "
    "AND (COALESCE(claim_owner, id) = $16 OR (ambiguous AND $17))"
)
# Many outcomes in one statement, as one JSON array of _OutcomeRow objects (see _CLAIM_MANY).
_RECORD_OUTCOMES: Final = (
    "UPDATE messages SET response_status = o.status, response_body = o.body, "
    "response_retry_after = o.retry_after, claimed_until = 0, ambiguous = o.ambiguous, "
    "parts = o.parts, "
    "status = CASE WHEN messages.status = 'pending' THEN o.new_status ELSE messages.status END, "
    "vendor_message_id = COALESCE(messages.vendor_message_id, o.vendor_message_id), "
    "segments = COALESCE(o.segments, messages.segments), "
    "from_number = COALESCE(messages.from_number, o.from_number), "
    "error_code = COALESCE(o.error_code, messages.error_code), "
    "error_message = COALESCE(o.error_message, messages.error_message), "
    "errored_at = COALESCE(messages.errored_at, o.errored_at), "
    "claim_key = CASE WHEN o.release THEN NULL ELSE messages.claim_key END, updated_at = o.now "
    "FROM (SELECT id, status, decode(body, 'base64') AS body, retry_after, ambiguous, parts, "
    "new_status, vendor_message_id, segments, from_number, error_code, error_message, "
    "errored_at, release, now, owner, accepted FROM json_to_recordset($1::json) AS o(id text, "
    "status integer, body text, retry_after double precision, ambiguous boolean, "
    "parts integer, new_status text, vendor_message_id text, segments integer, "
    "from_number text, error_code text, error_message text, errored_at double precision, "
    "release boolean, now double precision, owner text, accepted boolean) "
    "ORDER BY id) AS o WHERE messages.id = o.id AND (COALESCE(messages.claim_owner, "
    "messages.id) = o.owner OR (messages.ambiguous AND o.accepted)) "
    # A row with part receipts held (set under its row lock, so this sees it even after
    # waiting for that lock) is left to _record_outcome_alone, which settles them too.
    "AND NOT messages.parts_held RETURNING messages.id"
)
# The kept text (CONNECTOR_KEEP_MESSAGE_TEXT) only helps the operator's look-up (SPEC §7):
# its commit need not wait for the WAL flush, so synchronous_commit is off for this one
# transaction (set_config's is_local; a single statement is its own transaction). A crash of
# the database host may lose the last such writes (up to 3 x wal_writer_delay, 0.6 s by
# default), and the look-up then shows no text; a server crash alone loses nothing. Claims,
# outcomes and statuses commit in other transactions, at the server's setting, and any later
# synchronous commit flushes this one's WAL with its own.
_KEEP_TEXT: Final = (
    "UPDATE messages SET text = $1, text_exact = $3 FROM (SELECT "
    "set_config('synchronous_commit', 'off', true)) AS async_commit WHERE id = $2"
)
_STAMP: Final = (
    "UPDATE messages SET status = $1, vendor_message_id = $2, from_number = $3, segments = $4, "
    "error_code = $5, error_message = $6, handed_off_at = $7, delivered_at = $8, "
    "errored_at = $9, updated_at = $10 WHERE id = $11"
)
# The status change and its report in one statement: one round trip less under the row lock.
_STAMP_AND_REPORT: Final = (
    f"WITH changed AS ({_STAMP} RETURNING id) "
    "INSERT INTO outbox (event_id, message_id, url, payload, next_at, created_at) "
    "SELECT $12, id, $13, $14, $10, $10 FROM changed ON CONFLICT (event_id) DO NOTHING"
)
# Many callbacks' changes in one statement, each on condition that its row is as read. The
# batch comes as one JSON array of _Stamp objects (the payload in base64): see _fetch_json.
_STAMP_MANY_IF_UNCHANGED: Final = (
    "WITH d AS (SELECT id, seen_at, seen_status, status, vendor_message_id, from_number, "
    "segments, "    "error_code, error_message, handed_off_at, delivered_at, errored_at, now, event_id, url, "
    "decode(payload, 'base64') AS payload FROM json_to_recordset($1::json) AS d(id text, "
    "seen_at double precision, seen_status text, status text, vendor_message_id text, "
    "from_number text, "
    "segments integer, error_code text, error_message text, handed_off_at double precision, "
    "delivered_at double precision, errored_at double precision, now double precision, "
    "event_id text, url text, payload text) ORDER BY id), "
    "changed AS (UPDATE messages m SET status = d.status, "
    "vendor_message_id = d.vendor_message_id, from_number = d.from_number, "
    "segments = d.segments, error_code = d.error_code, error_message = d.error_message, "
    "handed_off_at = d.handed_off_at, delivered_at = d.delivered_at, "
    "errored_at = d.errored_at, updated_at = d.now FROM d "
    # Two writes may share one `now`, never one status (a status only moves forward).
    "WHERE m.id = d.id AND m.updated_at = d.seen_at AND m.status = d.seen_status "
    "RETURNING m.id), "
    "queued AS (INSERT INTO outbox (event_id, message_id, url, payload, next_at, created_at) "
    "SELECT d.event_id, d.id, d.url, d.payload, d.now, d.now FROM d JOIN changed c "
    "ON c.id = d.id WHERE d.event_id IS NOT NULL ON CONFLICT (event_id) DO NOTHING) "
    "SELECT id FROM changed"
)
# Many callbacks' status changes that queue no report, computed in SQL as sqlite.ADVANCE
# computes them (see there), each only where it moves the status forward. The batch comes as
# one JSON array of _Advance objects (see _fetch_json).
_ADVANCE_MANY: Final = (
    "WITH d AS (SELECT * FROM json_to_recordset($1::json) AS d(status text, "
    "vendor_message_id text, from_number text, segments integer, error_code text, "
    "error_message text, handed_off_at double precision, delivered_at double precision, "
    "errored_at double precision, now double precision, id text, rank integer) ORDER BY id) "
    "UPDATE messages m SET status = d.status, vendor_message_id = CASE WHEN "
    "m.vendor_message_id IS NULL OR m.vendor_message_id = '' THEN d.vendor_message_id "
    "ELSE m.vendor_message_id END, from_number = COALESCE(d.from_number, m.from_number), "
    "segments = COALESCE(d.segments, m.segments), "
    "error_code = COALESCE(d.error_code, m.error_code), "
    "error_message = COALESCE(d.error_message, m.error_message), "
    "handed_off_at = CASE WHEN m.handed_off_at IS NULL OR m.handed_off_at = 0 "
    "THEN d.handed_off_at ELSE m.handed_off_at END, "
    "delivered_at = COALESCE(d.delivered_at, m.delivered_at), "
    "errored_at = COALESCE(d.errored_at, m.errored_at), updated_at = d.now "
    f"FROM d WHERE m.id = d.id AND {rank_sql('m.status')} < d.rank RETURNING m.id"
)
# Candidates locked in due order (SKIP LOCKED keeps replicas apart), then at most `per_url` of
# one URL leased, none of the URLs the worker is still busy with. The window cannot sit in
# the locking SELECT itself (no FOR UPDATE beside window functions); the other candidates'
# locks end with the statement.
_LEASE: Final = (
    "WITH c AS (SELECT id, url, next_at FROM outbox WHERE state = 'pending' "
    "AND next_at <= $3 AND lease_until <= $3 AND url <> ALL($5::text[]) "
    "ORDER BY next_at LIMIT $6 FOR UPDATE SKIP LOCKED), "
    "pick AS (SELECT id FROM (SELECT id, next_at, row_number() OVER (PARTITION BY url "
    "ORDER BY next_at) AS n FROM c) w WHERE n <= $7 ORDER BY next_at LIMIT $4) "
    "UPDATE outbox SET lease_until = $1, leased_by = $2 WHERE id IN (SELECT id FROM pick) "
    "RETURNING id, event_id, url, payload, attempts, COALESCE(replayed_at, created_at)"
)
# A chunk's results in one statement; only rows the worker still holds are written, and only
# their attempts recorded (a worker whose lease expired must not undo another's delivery).
# The results come as one JSON array of _ReportDone objects (see _fetch_json), attempts
# logged in their order.
_REPORTS_DONE: Final = (
    "WITH r AS (SELECT * FROM ROWS FROM (json_to_recordset($1::json) AS (id bigint, "
    "outcome text, next_at double precision, error text, at double precision, "
    "status_code integer)) WITH ORDINALITY AS r(id, outcome, next_at, error, at, "
    "status_code, n)), "
    "done AS (UPDATE outbox o SET attempts = o.attempts + 1, lease_until = 0, leased_by = NULL, "
    "state = CASE r.outcome WHEN 'retry' THEN 'pending' ELSE r.outcome END, "
    "next_at = COALESCE(r.next_at, o.next_at), last_error = r.error, "
    "done_at = CASE r.outcome WHEN 'retry' THEN NULL ELSE $2::double precision END "
    "FROM r WHERE o.id = r.id AND o.leased_by = $3 AND o.state = 'pending' RETURNING o.id), "
    "logged AS (INSERT INTO report_attempts (outbox_id, at, outcome, status_code, error) "
    "SELECT r.id, r.at, r.outcome, r.status_code, r.error FROM r JOIN done ON done.id = r.id "
    "ORDER BY r.n) "
    "SELECT count(*) FROM done"
)
# Purge in two statements of one transaction. The first locks old messages with no pending
# report. A status change locks its message before it queues a report, so from then on none
# can be added; the second statement, with a snapshot taken after the locks, sees every report
# committed before them and deletes messages and their reports together. (In one statement a
# report committed between its snapshot and its lock went unseen: its message was deleted and
# the report left behind.)
_PURGE_PICK: Final = (
    "SELECT id FROM messages m WHERE created_at < $1 AND NOT EXISTS ("
    "SELECT 1 FROM outbox o WHERE o.message_id = m.id AND o.state = 'pending') "
    "LIMIT $2 FOR UPDATE SKIP LOCKED"
)
_PURGE: Final = (
    "WITH doomed AS (SELECT d.id FROM unnest($1::text[]) AS d(id) WHERE NOT EXISTS ("
    "SELECT 1 FROM outbox o WHERE o.message_id = d.id AND o.state = 'pending')), "
    "reports AS (DELETE FROM outbox WHERE message_id IN (SELECT id FROM doomed) RETURNING id), "
    "attempts AS (DELETE FROM report_attempts WHERE outbox_id IN (SELECT id FROM reports)), "
    "parts AS (DELETE FROM message_parts WHERE message_id IN (SELECT id FROM doomed)), "
    "gone AS (DELETE FROM messages WHERE id IN (SELECT id FROM doomed) RETURNING 1) "
    "SELECT count(*) FROM gone"
)


class _ClaimRow(msgspec.Struct):
    """One claim in _CLAIM_MANY's JSON: the columns json_to_recordset reads, by name."""

    id: str
    request_id: str | None
    vendor: str
    sealed_settings: bytes
    sender: str
    to_number: str
    custom_data: str
    callback_url: str
    metadata: bytes | None
    segments: int
    encoding: str
    claimed_until: float
    now: float
    claim_key: str | None
    custom_data_exact: bytes | None  # when custom_data holds NUL (store/nul.py)
    sup_account: str | None  # the tenant whose suppression list to check; None: no check
    sup_credential: str | None


class _OutcomeRow(msgspec.Struct):
    """One outcome in _RECORD_OUTCOMES's JSON, by name."""

    id: str
    status: int
    body: bytes
    retry_after: float | None
    ambiguous: bool
    parts: int
    new_status: str
    vendor_message_id: str | None
    segments: int | None
    from_number: str | None
    error_code: str | None
    error_message: str | None
    errored_at: float | None
    release: bool
    now: float
    owner: str
    accepted: bool


class _ReportDone(msgspec.Struct):
    """One report's result in _REPORTS_DONE's JSON, by name."""

    id: int
    outcome: str
    next_at: float | None
    error: str | None
    at: float
    status_code: int | None


_encode_json: Final = msgspec.json.Encoder().encode


class _Stamp(msgspec.Struct, frozen=True, kw_only=True):
    """One callback's change in _STAMP_MANY_IF_UNCHANGED's JSON, by name."""

    id: str
    seen_at: float
    seen_status: str
    status: str
    vendor_message_id: str | None
    from_number: str | None
    segments: int | None
    error_code: str | None
    error_message: str | None
    handed_off_at: float | None
    delivered_at: float | None
    errored_at: float | None
    now: float
    event_id: str | None
    url: str | None
    payload: bytes | None


class _Advance(msgspec.Struct, frozen=True):
    """One status change in _ADVANCE_MANY's JSON, by name: sqlite.advance_parameters."""

    status: str
    from_number: str | None
    segments: int | None
    error_code: str | None
    error_message: str | None
    handed_off_at: float | None
    delivered_at: float | None
    errored_at: float | None
    now: float
    vendor_message_id: str | None
    id: str
    rank: int


def _row(record: asyncpg.Record) -> MessageRow:
    fields = dict(record.items())
    fields["status"] = STATUS_OF[fields["status"]]
    exact = fields.pop("custom_data_exact")
    if exact is not None:
        fields["custom_data"] = bytes(exact).decode()
    return MessageRow(**fields)


def _claim(values: Sequence[Any], suppressed: bool | None = None) -> Claim:
    claimed, message_id, status, body, retry_after, claimed_until, state, ambiguous = values
    response = None if status is None else StoredResponse(status=status, body=body,
                                                          retry_after=retry_after)
    return Claim(message_id=message_id, claimed=claimed, response=response,
                 claimed_until=claimed_until, status=Status(state), ambiguous=ambiguous,
                 suppressed=suppressed)


class _Lent:
    """`async with store._conn() as conn`: a pooled connection, with every driver error
    inside raised as StoreUnavailable. A plain class: @asynccontextmanager's generator cost
    more than the pool itself."""

    __slots__ = ("conn", "pool")

    def __init__(self, pool: Pool | None) -> None:
        self.pool = pool

    async def __aenter__(self) -> Conn:
        if self.pool is None:
            raise StoreUnavailable("store is not open")
        try:
            self.conn = await self.pool.acquire()
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"store unavailable: {_describe(exc)}") from exc
        return self.conn

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        pool = cast(Pool, self.pool)
        if exc is None:
            pool.release(self.conn)
            return
        pool.release(self.conn, broken=isinstance(exc, TimeoutError | asyncio.CancelledError))
        if isinstance(exc, _CONNECTION_LOST):
            # Whatever dropped this connection most likely dropped its idle siblings too:
            # replace them all on their next use instead of failing once each.
            pool.expire()
        if isinstance(exc, _DRIVER_ERRORS):
            raise StoreUnavailable(f"store unavailable: {_describe(exc)}") from exc


class PostgresStore:
    def __init__(self, dsn: str, *, min_size: int = 2, max_size: int = 10,
                 command_timeout: float = 5.0, acquire_timeout: float = 5.0,
                 connect_timeout: float = 5.0, migrate_timeout: float = 60.0,
                 statement_cache_size: int = 100) -> None:
        self.dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._command_timeout = command_timeout
        self._acquire_timeout = acquire_timeout
        self._connect_timeout = connect_timeout
        self._migrate_timeout = migrate_timeout
        # 0 behind a transaction-mode pooler (PgBouncer), where prepared statements break.
        self._statement_cache_size = statement_cache_size
        self._pool: Pool | None = None
        # Group commit for the per-message writes (see batch.py); one row per batch at most.
        self._claims: Batcher[tuple[NewMessage, float, tuple[str, str] | None],
                              Claim | None] = Batcher(
            self._claim_many, key=lambda item: item[0].claim_key or item[0].id)
        self._outcomes: Batcher[tuple[str, SendOutcome, float, ReportBuilder, str], bool] = (
            Batcher(self._record_outcomes, key=lambda item: item[0]))
        self._stamps: Batcher[_Stamp, bool] = Batcher(self._stamp_many, key=lambda s: s.id)
        self._advances: Batcher[_Advance, bool | None] = Batcher(self._advance_many,
                                                          key=lambda a: a.id)

    def __repr__(self) -> str:
        return f"PostgresStore(pool={self._min_size}..{self._max_size})"  # the DSN may hold a password

    async def open(self) -> None:
        pool = Pool(self._connect, min_size=self._min_size, max_size=self._max_size,
                    acquire_timeout=self._acquire_timeout)
        try:
            await pool.open()
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"store unavailable: {_describe(exc)}") from exc
        self._pool = pool
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    def _connect(self) -> Awaitable[Conn]:
        return asyncpg.connect(
            self.dsn, timeout=self._connect_timeout, command_timeout=self._command_timeout,
            statement_cache_size=self._statement_cache_size,
            server_settings={"application_name": "connector"})

    async def _migrate(self) -> None:
        # The transaction-level advisory lock serialises replicas starting at once: each sees
        # the version the previous one committed and applies only what is still missing.
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK,
                               timeout=self._migrate_timeout)
            await conn.execute(VERSION_TABLE)
            version = await conn.fetchval("SELECT version FROM schema_version")
            for number, script in enumerate(MIGRATIONS_PG[version:], start=version + 1):
                await conn.execute(script, timeout=self._migrate_timeout)
                await conn.execute("UPDATE schema_version SET version = $1", number)

    async def schema_version(self) -> int:
        async with self._conn() as conn:
            return int(await conn.fetchval("SELECT version FROM schema_version"))

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), self._command_timeout * 2)
        except _DRIVER_ERRORS:
            pool.terminate()  # a connection that will not close politely is dropped
        except asyncio.CancelledError:
            pool.terminate()
            raise

    def _conn(self) -> _Lent:
        """A pooled connection; every driver error inside becomes StoreUnavailable."""
        return _Lent(self._pool)

    def connection(self) -> _Lent:
        """A pooled connection for tables other modules own (the shared throttle buckets)."""
        return self._conn()

    async def ping(self) -> None:
        try:
            version = await self.schema_version()
        except StoreUnavailable as exc:
            if isinstance(exc.__cause__, asyncpg.UndefinedTableError):
                raise StoreUnavailable("schema migrations are not applied") from exc
            raise
        if version != len(MIGRATIONS_PG):
            raise StoreUnavailable("schema migrations are not applied")

    async def claim(self, message: NewMessage, now: float,
                    suppression: tuple[str, str] | None = None) -> Claim:
        found = await self._claims.submit((message, now, suppression))
        # Claimed alone, the suppression check is left to the sender (Claim.suppressed None).
        return found if found is not None else await self._claim_alone(message, now)

    async def _claim_many(self, items: Sequence[tuple[NewMessage, float,
                                                      tuple[str, str] | None]]
                          ) -> list[Claim | None]:
        rows = await self._fetch_json(_CLAIM_MANY, [
            _ClaimRow(m.id, m.request_id, m.vendor, m.sealed_settings, m.sender, m.to_number,
                      nul.shown(m.custom_data), m.callback_url, m.metadata, m.segments,
                      m.encoding, m.claimed_until, now, m.claim_key, nul.exact(m.custom_data),
                      *(check or (None, None)))
            for m, now, check in items])
        if rows is None:
            return [None] * len(items)  # each claims alone instead
        found = {row[0]: _claim(row[1:9], row[9]) for row in rows}
        return [found.get(m.id) for m, _, _ in items]

    async def _fetch_json(self, statement: str, rows: Sequence[msgspec.Struct]
                          ) -> list[asyncpg.Record] | None:
        """Run a group-commit statement with `rows` passed as one JSON array of objects
        (bytes in base64).

        None when the database broke a deadlock by aborting it: the caller then does each
        row alone, which cannot wait in a cycle. Other failures raise StoreUnavailable.

        Not one array per column: asyncpg checks every array and every element of one
        against collections.abc (three and one or two isinstance calls through ABCMeta,
        each a Python call): with a column per field that was about 140 calls per message
        sent, more than the statements' own encoding. One JSON text costs one msgspec call;
        the server's parse is microseconds."""
        return await self._fetch_batch(statement, [_encode_json(rows).decode()])

    async def _fetch_batch(self, statement: str, args: Sequence[Any]
                           ) -> list[asyncpg.Record] | None:
        try:
            async with self._conn() as conn:
                return list(await conn.fetch(statement, *args))
        except StoreUnavailable as exc:
            if isinstance(exc.__cause__, asyncpg.DeadlockDetectedError):
                return None
            raise

    async def _claim_alone(self, message: NewMessage, now: float) -> Claim:
        m = message
        async with self._conn() as conn:
            for _ in range(_CLAIM_TRIES):
                found = await conn.fetchrow(
                    _CLAIM, m.id, m.request_id, m.vendor, m.sealed_settings, m.sender,
                    m.to_number, nul.shown(m.custom_data), m.callback_url, m.metadata,
                    m.segments, m.encoding, m.claimed_until, now, m.claim_key,
                    nul.exact(m.custom_data))
                if found is not None:
                    return _claim(tuple(found))
        raise StoreUnavailable("request_id claim kept changing hands")

    async def poll_claim(self, message_id: str) -> Claim | None:
        async with self._conn() as conn:
            found = await conn.fetchrow(
                "SELECT FALSE, id, response_status, response_body, response_retry_after, "
                "claimed_until, status, ambiguous FROM messages WHERE id = $1", message_id)
        return None if found is None else _claim(tuple(found))

    async def take_over(self, message_id: str, now: float, claimed_until: float,
                        owner: str) -> bool:
        async with self._conn() as conn:
            status = await conn.execute(
                "UPDATE messages SET claimed_until = $1, claim_owner = $4, updated_at = $2 "
                "WHERE id = $3 AND response_status IS NULL AND status = 'pending' "
                "AND claimed_until < $2", claimed_until, now, message_id, owner)
        return status == "UPDATE 1"

    async def record_outcome(self, message_id: str, outcome: SendOutcome, now: float,
                             report: ReportBuilder, owner: str | None = None) -> bool:
        return await self._outcomes.submit(
            (message_id, nul.cleaned_outcome(outcome), now, report, owner or message_id))

    async def _record_outcomes(self, items: Sequence[tuple[str, SendOutcome, float,
                                                           ReportBuilder, str]]) -> list[bool]:
        rows = await self._fetch_json(_RECORD_OUTCOMES, [
            _OutcomeRow(message_id, o.response.status, o.response.body, o.response.retry_after,
                        o.ambiguous, o.parts, o.status.value, o.vendor_message_id, o.segments,
                        o.from_number, o.error_code, o.error_message,
                        now if o.status.terminal else None, o.release, now, owner,
                        accepted_outcome(o))
            for message_id, o, now, _, owner in items])
        done = set() if rows is None else {row["id"] for row in rows}
        # Held parts, a deadlock broken, another holder, or no such row: one by one, where the
        # holder check and the parts are settled under the row lock.
        return [message_id in done or await self._record_outcome_alone(*item)
                for item in items for message_id in (item[0],)]

    async def _record_outcome_alone(self, message_id: str, o: SendOutcome, now: float,
                                    report: ReportBuilder, owner: str) -> bool:
        async with self._conn() as conn, conn.transaction():
            held = await conn.fetchval(
                "SELECT parts_held FROM messages WHERE id = $1 FOR UPDATE", message_id)
            if held is None:
                return False
            status = await conn.execute(
                _RECORD_OUTCOME, o.response.status, o.response.body, o.response.retry_after,
                o.ambiguous, o.parts, o.status.value, o.vendor_message_id, o.segments,
                o.from_number, o.error_code, o.error_message,
                now if o.status.terminal else None, o.release, now, message_id, owner,
                accepted_outcome(o))
            if status != "UPDATE 1":
                return False  # another holds the claim now: nothing changed
            if held:
                await self._settle_parts(conn, message_id, now, report)
        return True

    async def _settle_parts(self, conn: Conn, message_id: str, now: float,
                            report: ReportBuilder) -> None:
        """Part receipts that beat the answer, counted now that the number of parts is known."""
        found = await conn.fetchrow(
            f"UPDATE messages SET parts_held = FALSE WHERE id = $1 RETURNING {_ROW_COLUMNS}",
            message_id)
        assert found is not None  # the caller holds its row lock
        row = _row(found)
        update = settled(row, await self._parts(conn, message_id))
        if update is not None:
            await self._stamp_row(conn, row, update, now, report)

    @staticmethod
    async def _parts(conn: Conn, message_id: str) -> list[Part]:
        return [(Status(s), code, text) for s, code, text in await conn.fetch(
            "SELECT status, error_code, error_message FROM message_parts "
            "WHERE message_id = $1 ORDER BY updated_at, part_id", message_id)]

    async def message(self, message_id: str) -> MessageRow | None:
        if "\x00" in message_id:  # a vendor's echo of an id, never one of ours
            return None
        async with self._conn() as conn:
            found = await conn.fetchrow(f"SELECT {_ROW_COLUMNS} FROM messages WHERE id = $1",
                                        message_id)
        return None if found is None else _row(found)

    async def keep_text(self, message_id: str, text: str) -> None:
        async with self._conn() as conn:
            await conn.execute(_KEEP_TEXT, nul.shown(text), message_id, nul.exact(text))

    async def message_text(self, message_id: str) -> str | None:
        async with self._conn() as conn:
            found = await conn.fetchrow("SELECT text, text_exact FROM messages WHERE id = $1",
                                        message_id)
        return None if found is None or found[0] is None else nul.restored(found[0], found[1])

    async def find(self, key: str) -> MessageRow | None:
        async with self._conn() as conn:
            found = await conn.fetchrow(
                f"SELECT {_ROW_COLUMNS} FROM messages WHERE id = $1 OR request_id = $1 "
                "ORDER BY id = $1 DESC, created_at DESC LIMIT 1", nul.shown(key))
        return None if found is None else _row(found)

    async def find_by_vendor_id(self, vendor: str, vendor_message_id: str
                                ) -> MessageRow | None:
        async with self._conn() as conn:
            found = await conn.fetchrow(
                f"SELECT {_ROW_COLUMNS} FROM messages WHERE vendor = $1 "
                "AND vendor_message_id = $2 ORDER BY created_at DESC LIMIT 1",
                vendor, nul.clean(vendor_message_id))
        return None if found is None else _row(found)

    async def apply_status(self, message_id: str, update: StatusUpdate, now: float,
                           report: ReportBuilder, seen: MessageRow | None = None) -> Applied:
        update = nul.cleaned_update(update)  # text cannot hold a vendor's NUL
        if seen is not None and seen.id == message_id:
            if await self._apply_if_unchanged(seen, update, now, report):
                return Applied.APPLIED
            # The row changed since the caller read it: most often the send's answer, written
            # while its first callback was on the way. Read it again and try once more: two
            # statements where the locking path takes four (BEGIN, SELECT, UPDATE, COMMIT).
            if self._unlocked(seen, update):
                seen = await self.message(message_id)
                if seen is None:
                    return Applied.UNKNOWN
                if await self._apply_if_unchanged(seen, update, now, report):
                    return Applied.APPLIED
        async with self._conn() as conn, conn.transaction():
            # The row lock orders concurrent callbacks for one message across replicas.
            found = await conn.fetchrow(
                f"SELECT {_ROW_COLUMNS} FROM messages WHERE id = $1 FOR UPDATE", message_id)
            if found is None:
                return Applied.UNKNOWN
            return await self._apply(conn, _row(found), update, now, report)

    @staticmethod
    def _unlocked(seen: MessageRow, update: StatusUpdate) -> bool:
        """Whether _apply_if_unchanged may write `update` over `seen`: it moves the status
        forward, and is not one part's status of a message with several parts."""
        return ((update.part_id is None or (seen.parts <= 1 and seen.answered))
                and advances(update, seen))

    async def _apply_if_unchanged(self, seen: MessageRow, update: StatusUpdate, now: float,
                                  report: ReportBuilder) -> bool:
        """The common case in one autocommitted statement instead of a locking transaction
        (BEGIN, SELECT ... FOR UPDATE, UPDATE, COMMIT): write the change computed from the row
        the caller read, on condition that the row is still that row (every write to a
        message sets updated_at). False when nothing was written and the locking path must
        decide: the row changed, the update does not move the status forward, or the message
        has several parts."""
        if not self._unlocked(seen, update):
            return False
        new = stamped(seen, update, now)
        entry = report(new, update, now)
        stamp = _Stamp(
            id=seen.id, seen_at=seen.updated_at, seen_status=seen.status.value,
            status=str(new.status),
            vendor_message_id=new.vendor_message_id, from_number=new.from_number,
            segments=new.segments, error_code=new.error_code, error_message=new.error_message,
            handed_off_at=new.handed_off_at, delivered_at=new.delivered_at,
            errored_at=new.errored_at, now=now,
            event_id=None if entry is None else entry.event_id,
            url=None if entry is None else entry.url,
            payload=None if entry is None else entry.payload)
        return await self._stamps.submit(stamp)

    async def _stamp_many(self, stamps: Sequence[_Stamp]) -> list[bool]:
        rows = await self._fetch_json(_STAMP_MANY_IF_UNCHANGED, stamps)
        if rows is None:
            return [False] * len(stamps)  # the locking path decides each one
        changed = {row["id"] for row in rows}
        return [s.id in changed for s in stamps]

    async def advance(self, message_id: str, update: StatusUpdate, now: float,
                      report: ReportBuilder, *, known_id: bool = False) -> Applied:
        # `known_id` changes nothing here: PostgreSQL leaves an index alone when an UPDATE
        # sets its column to the value it had.
        if update.part_id is not None:  # the parts table decides: the locking path
            return await self.apply_status(message_id, update, now, report)
        if "\x00" in message_id:  # a vendor's echo of an id, never one of ours
            return Applied.UNKNOWN
        update = nul.cleaned_update(update)
        if may_report(report, update.status):
            # The report is built from the row, and queued in the write's own statement: a
            # read, then the conditional write (apply_status's `seen` path), as before.
            seen = await self.message(message_id)
            if seen is None:
                return Applied.UNKNOWN
            return await self.apply_status(message_id, update, now, report, seen=seen)
        changed = await self._advances.submit(
            _Advance(*advance_parameters(message_id, update, now)))
        if changed is None:  # a deadlock broken: the locking path decides
            return await self.apply_status(message_id, update, now, report)
        if changed:
            return Applied.APPLIED
        async with self._conn() as conn:
            status = await conn.fetchval("SELECT status FROM messages WHERE id = $1",
                                         message_id)
        return unapplied(update, status)

    async def _advance_many(self, items: Sequence[_Advance]) -> list[bool | None]:
        rows = await self._fetch_json(_ADVANCE_MANY, items)
        if rows is None:
            return [None] * len(items)
        changed = {row["id"] for row in rows}
        return [a.id in changed for a in items]

    async def sent_via(self, message_id: str) -> SentVia | None:
        if "\x00" in message_id:
            return None
        async with self._conn() as conn:
            found = await conn.fetchrow(
                "SELECT vendor, sealed_settings FROM messages WHERE id = $1", message_id)
        return None if found is None else SentVia(found[0], bytes(found[1]))

    async def _apply(self, conn: Conn, row: MessageRow, update: StatusUpdate, now: float,
                     report: ReportBuilder) -> Applied:
        if update.part_id is not None and (row.parts > 1 or not row.answered):
            combined = await self._apply_part(conn, row, update, now)
            if not isinstance(combined, StatusUpdate):
                return combined
            update = combined
        if update.status is row.status:
            return Applied.DUPLICATE
        if not update.status.advances(row.status):
            return Applied.REGRESSED
        await self._stamp_row(conn, row, update, now, report)
        return Applied.APPLIED

    @staticmethod
    async def _stamp_row(conn: Conn, row: MessageRow, update: StatusUpdate, now: float,
                         report: ReportBuilder) -> None:
        new = stamped(row, update, now)
        stamp: list[Any] = [
            str(new.status), new.vendor_message_id, new.from_number, new.segments,
            new.error_code, new.error_message, new.handed_off_at, new.delivered_at,
            new.errored_at, now, row.id]
        entry = report(new, update, now)
        if entry is None:
            await conn.execute(_STAMP, *stamp)
        else:
            await conn.execute(_STAMP_AND_REPORT, *stamp, entry.event_id, entry.url,
                               entry.payload)

    async def _apply_part(self, conn: Conn, row: MessageRow, update: StatusUpdate,
                          now: float) -> StatusUpdate | Applied:
        """Record one part's status; the message's status is what all parts add up to (before
        the send's answer, only what holds whatever the part count: see store/parts.py)."""
        previous = await conn.fetchval(
            "SELECT status FROM message_parts WHERE message_id = $1 AND part_id = $2",
            row.id, update.part_id)
        if previous is not None:
            if update.status is Status(previous):
                return Applied.DUPLICATE
            if not update.status.advances(Status(previous)):
                return Applied.REGRESSED
        parts = await conn.fetch(
            "WITH up AS (INSERT INTO message_parts (message_id, part_id, status, error_code, "
            "error_message, updated_at) VALUES ($1,$2,$3,$4,$5,$6) "
            "ON CONFLICT (message_id, part_id) DO UPDATE SET status = excluded.status, "
            "error_code = excluded.error_code, error_message = excluded.error_message, "
            "updated_at = excluded.updated_at RETURNING part_id, status, error_code, "
            "error_message, updated_at) "
            "SELECT status, error_code, error_message FROM ("
            "SELECT * FROM up UNION ALL SELECT part_id, status, error_code, error_message, "
            "updated_at FROM message_parts WHERE message_id = $1 AND part_id <> $2) p "
            "ORDER BY updated_at, part_id",
            row.id, update.part_id, update.status.value, update.error_code,
            update.error_message, now)
        if not row.answered:  # under the row lock: the answer's write will see it
            await conn.execute("UPDATE messages SET parts_held = TRUE, updated_at = $2 "
                               "WHERE id = $1", row.id, now)
        return part_update(row, update, [(Status(s), code, text) for s, code, text in parts])

    async def expire_ambiguous(self, older_than: float, now: float,
                               report: ReportBuilder) -> int:
        async with self._conn() as conn:
            ids = [r[0] for r in await conn.fetch(
                "SELECT id FROM messages WHERE status = 'pending' AND created_at < $1 AND "
                "(ambiguous OR (response_status IS NULL AND claimed_until < $2)) LIMIT 1000",
                older_than, now)]
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
        async with self._conn() as conn:
            rows = await conn.fetch(_LEASE, now + lease_seconds, worker, now, limit,
                                    list(skip_urls), limit * LEASE_WINDOW, per_url or limit)
        return [LeasedReport(id=r[0], event_id=r[1], url=r[2], payload=r[3], attempts=r[4],
                             created_at=r[5]) for r in rows]

    async def reports_done(self, worker: str,
                           results: list[tuple[int, ReportAttempt, float | None]],
                           now: float) -> int:
        if not results:
            return 0
        async with self._conn() as conn:
            return int(await conn.fetchval(_REPORTS_DONE, _encode_json([
                _ReportDone(report_id, a.outcome, next_at, a.error, a.at, a.status_code)
                for report_id, a, next_at in results]).decode(), now, worker))

    async def release_reports(self, worker: str) -> None:
        async with self._conn() as conn:
            await conn.execute("UPDATE outbox SET lease_until = 0, leased_by = NULL "
                               "WHERE leased_by = $1 AND state = 'pending'", worker)

    async def next_report_due(self) -> float | None:
        async with self._conn() as conn:
            due = await conn.fetchval("SELECT MIN(GREATEST(next_at, lease_until)) FROM outbox "
                                      "WHERE state = 'pending'")
        return None if due is None else float(due)

    async def reports_for(self, message_id: str) -> list[ReportView]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT o.id, o.event_id, o.url, o.state, o.next_at, a.at, a.outcome, "
                "a.status_code, a.error FROM outbox o "
                "LEFT JOIN report_attempts a ON a.outbox_id = o.id "
                "WHERE o.message_id = $1 ORDER BY o.id, a.id", message_id)
        views: dict[int, ReportView] = {}
        for report_id, event_id, url, state, next_at, at, outcome, status_code, error in rows:
            view = views.get(report_id)
            if view is None:
                view = views[report_id] = ReportView(
                    event_id=event_id, url=url, state=state, attempts=[],
                    next_attempt_at=next_at if state == "pending" else None)
            if at is not None:
                view.attempts.append(ReportAttempt(at=at, outcome=outcome,
                                                   status_code=status_code, error=error))
        return list(views.values())

    async def outbox_stats(self) -> tuple[int, float | None, int]:
        async with self._conn() as conn:
            stats = await conn.fetchrow(
                "SELECT COUNT(*) FILTER (WHERE state = 'pending'), "
                "MIN(COALESCE(replayed_at, created_at)) FILTER (WHERE state = 'pending'), "
                "COUNT(*) FILTER (WHERE state = 'dead') FROM outbox")
        depth, oldest, dead = stats if stats is not None else (0, None, 0)
        return int(depth), oldest, int(dead)

    async def dead_letters(self, which: DeadLetterFilter, after: int, limit: int
                           ) -> list[DeadLetter]:
        query, params = deadletters.list_query(nul.cleaned_filter(which), after, limit,
                                               postgres=True)
        async with self._conn() as conn:
            return deadletters.rows(await conn.fetch(query, *params))

    async def replay_dead(self, which: DeadLetterFilter, ids: list[int] | None,
                          now: float) -> int:
        statement, params = deadletters.replay_statement(nul.cleaned_filter(which), ids, now,
                                                         postgres=True)
        async with self._conn() as conn:
            return int(await conn.fetchval(statement, *params))

    async def purge(self, before: float) -> int:
        """Forget messages created before `before` whose reports are finished, in batches,
        and the throttle buckets idle since then."""
        async with self._conn() as conn:
            await conn.execute(throttle_pg.PRUNE, before)
        removed = 0
        while True:
            # One short transaction per batch: no long lock over a big table.
            async with self._conn() as conn, conn.transaction():
                ids = [r[0] for r in await conn.fetch(_PURGE_PICK, before, _PURGE_BATCH)]
                if ids:
                    removed += int(await conn.fetchval(_PURGE, ids))
            if len(ids) < _PURGE_BATCH:
                return removed

    async def suppress(self, account: str, number: str, reason: str, vendor_code: str | None,
                       now: float, credential: str = "") -> None:
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO suppressions (account, number, credential, reason, vendor_code, "
                "created_at) VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (account, number, "
                "credential) DO UPDATE SET reason = excluded.reason, "
                "vendor_code = excluded.vendor_code",
                account, nul.clean(number), credential, nul.clean(reason),
                nul.clean(vendor_code), now)

    async def is_suppressed(self, account: str, number: str, credential: str = "") -> bool:
        async with self._conn() as conn:
            found = await conn.fetchval(
                "SELECT TRUE FROM suppressions WHERE account = $1 AND number = $2 "
                "AND credential IN ($3, '') LIMIT 1", account, number, credential)
        return found is not None

    async def suppressions(self, account: str | None, limit: int, offset: int
                           ) -> list[Suppression]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT account, number, reason, vendor_code, created_at, credential "
                "FROM suppressions WHERE $1::text IS NULL OR account = $1 "
                "ORDER BY created_at DESC, account, number, credential LIMIT $2 OFFSET $3",
                nul.clean(account), limit, offset)
        return [Suppression(account=r[0], number=r[1], reason=r[2], vendor_code=r[3],
                            created_at=r[4], credential=r[5]) for r in rows]

    async def unsuppress(self, account: str, number: str) -> bool:
        async with self._conn() as conn:
            status = await conn.execute(
                "DELETE FROM suppressions WHERE account = $1 AND number = $2",
                nul.clean(account), nul.clean(number))
        return bool(status != "DELETE 0")

    async def remember_account(self, vendor: str, account: str, sealed: bytes,
                               now: float) -> None:
        async with self._conn() as conn:
            await conn.execute(inbound.PG["remember"], vendor, account, sealed, now)

    async def account_settings(self, vendor: str, account: str) -> bytes | None:
        async with self._conn() as conn:
            found = await conn.fetchval(inbound.PG["settings"], vendor, account)
        return None if found is None else bytes(found)

    async def purge_inbound(self, before: float) -> int:
        async with self._conn() as conn, conn.transaction():
            statuses = [await conn.execute(sql, before) for sql in inbound.PURGE_PG]
        return int(statuses[-1].rsplit(" ", 1)[-1])

    async def record_inbound(self, record: InboundRecord, now: float) -> bool:
        async with self._conn() as conn, conn.transaction():
            return await inbound.record_pg(conn, nul.cleaned_record(record), now)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
