"""Token buckets in the PostgreSQL store, shared by every replica: one statement per acquire.

Times come from the database's clock (clock_timestamp()), never the caller's: every replica
then refills from the same clock, so a replica whose clock runs ahead cannot mint tokens and
one running behind cannot starve the others. Only durations (waits, pause lengths) cross the
wire. ON CONFLICT DO UPDATE works on the row's latest version under its lock, so concurrent
acquires from any number of replicas queue on the row and never admit more than the bucket
holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from connector.store.postgres import PostgresStore

_NOW: Final = "now AS MATERIALIZED (SELECT extract(epoch FROM clock_timestamp())::float8 AS t)"
# What the bucket holds at this statement's time ($2 rate, $3 capacity), and whether the
# vendor's pause still holds it.
_REFILLED: Final = ("LEAST($3::float8, b.tokens + GREATEST(0, EXCLUDED.updated_at - b.updated_at)"
                    " * $2::float8)")
_PAUSED: Final = "b.paused_until > EXCLUDED.updated_at"
_REFUSED: Final = f"{_PAUSED} OR {_REFILLED} < $4::float8"
# A refused acquire leaves tokens and updated_at as they were: refill is computed from them
# whenever asked, so there is nothing to write but the verdict.
_TAKE: Final = (
    f"WITH {_NOW}, bucket AS ("
    "INSERT INTO throttle_buckets AS b (account, tokens, updated_at) "
    "SELECT $1, $3::float8 - $4::float8, t FROM now "
    "ON CONFLICT (account) DO UPDATE SET "
    f"tokens = CASE WHEN {_REFUSED} THEN b.tokens ELSE {_REFILLED} - $4::float8 END, "
    f"updated_at = CASE WHEN {_REFUSED} THEN b.updated_at "
    "ELSE GREATEST(b.updated_at, EXCLUDED.updated_at) END, "
    f"last_wait = CASE WHEN {_PAUSED} THEN b.paused_until - EXCLUDED.updated_at "
    f"WHEN {_REFILLED} < $4::float8 THEN ($4::float8 - {_REFILLED}) / $2::float8 ELSE 0 END "
    "RETURNING last_wait, paused_until) "
    "SELECT bucket.last_wait, bucket.paused_until > now.t FROM bucket, now"
)
# A bucket first made by a pause starts empty; it has refilled by the time the pause ends.
_PAUSE: Final = (
    f"WITH {_NOW} "
    "INSERT INTO throttle_buckets AS b (account, tokens, updated_at, paused_until) "
    "SELECT $1, 0, t, t + $2::float8 FROM now "
    "ON CONFLICT (account) DO UPDATE SET "
    "paused_until = GREATEST(b.paused_until, EXCLUDED.paused_until)"
)
# Buckets idle since `before` (the store's retention cutoff) and not paused: an idle bucket
# is a full one, and a missing bucket starts full, so forgetting it changes no verdict. The
# keys are whatever account and credential callers send, so without this the table grows
# with every one ever seen. A cutoff days back makes the callers' clock good enough here.
PRUNE: Final = "DELETE FROM throttle_buckets WHERE updated_at < $1 AND paused_until < $1"
_PAUSED_NOW: Final = (
    f"WITH {_NOW} SELECT account, paused_until - now.t FROM throttle_buckets, now "
    "WHERE paused_until > now.t"
)


class PgBuckets:
    shared = True

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    async def take(self, account: str, rate: float, capacity: float,
                   cost: float) -> tuple[float, bool]:
        async with self.store.connection() as conn:
            row = await conn.fetchrow(_TAKE, account, rate, capacity, cost)
        assert row is not None  # an upsert always returns its row
        return float(row[0]), bool(row[1])

    async def pause(self, account: str, seconds: float) -> None:
        async with self.store.connection() as conn:
            await conn.execute(_PAUSE, account, seconds)

    async def paused(self) -> dict[str, float]:
        async with self.store.connection() as conn:
            rows = await conn.fetch(_PAUSED_NOW)
        return {row[0]: float(row[1]) for row in rows}

    async def close(self) -> None:
        """The store owns the pool."""
