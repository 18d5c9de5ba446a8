"""Versioned PostgreSQL schema migrations, numbered as the SQLite ones in schema.py."""

from __future__ import annotations

from typing import Final

# Any constant both sides agree on: every replica takes this transaction-level advisory lock
# before it reads schema_version, so replicas starting at once migrate one after the other.
MIGRATION_LOCK: Final = 0x636F6E6E6563746F  # "connecto"

# Created before the migrations (under the lock): one row holding the applied version.
VERSION_TABLE: Final = """
    CREATE TABLE IF NOT EXISTS schema_version (
        only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
        version INTEGER NOT NULL
    );
    INSERT INTO schema_version (version) VALUES (0) ON CONFLICT DO NOTHING
"""

# Append only, and keep in step with MIGRATIONS in schema.py: migration N here does what
# migration N does there. Times are unix seconds (DOUBLE PRECISION), as in SQLite.
MIGRATIONS_PG: Final[tuple[str, ...]] = (
    """
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        request_id TEXT,
        claim_key TEXT UNIQUE,
        vendor TEXT NOT NULL,
        sealed_settings BYTEA NOT NULL,
        sender TEXT NOT NULL,
        to_number TEXT NOT NULL,
        custom_data TEXT NOT NULL,
        callback_url TEXT NOT NULL,
        metadata BYTEA,
        status TEXT NOT NULL,
        vendor_message_id TEXT,
        from_number TEXT,
        segments INTEGER,
        encoding TEXT,
        error_code TEXT,
        error_message TEXT,
        ambiguous BOOLEAN NOT NULL DEFAULT FALSE,
        response_status INTEGER,
        response_body BYTEA,
        response_retry_after DOUBLE PRECISION,
        claimed_until DOUBLE PRECISION NOT NULL DEFAULT 0,
        handed_off_at DOUBLE PRECISION,
        delivered_at DOUBLE PRECISION,
        errored_at DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX messages_request_id ON messages (request_id);
    CREATE INDEX messages_created_at ON messages (created_at);
    CREATE TABLE outbox (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        message_id TEXT NOT NULL,
        url TEXT NOT NULL,
        payload BYTEA NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at DOUBLE PRECISION NOT NULL,
        lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
        leased_by TEXT,
        last_error TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        done_at DOUBLE PRECISION
    );
    CREATE INDEX outbox_due ON outbox (next_at) WHERE state = 'pending';
    CREATE INDEX outbox_message ON outbox (message_id);
    CREATE TABLE report_attempts (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        outbox_id BIGINT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        outcome TEXT NOT NULL,
        status_code INTEGER,
        error TEXT
    );
    CREATE INDEX report_attempts_outbox ON report_attempts (outbox_id)
    """,
    # 2: callbacks matched by vendor id; multipart messages keep one status per part.
    """
    ALTER TABLE messages ADD COLUMN parts INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX messages_vendor_id ON messages (vendor, vendor_message_id);
    CREATE TABLE message_parts (
        message_id TEXT NOT NULL,
        part_id TEXT NOT NULL,
        status TEXT NOT NULL,
        error_code TEXT,
        error_message TEXT,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (message_id, part_id)
    )
    """,
    # 3: opted-out recipients per integration account (see schema.py).
    """
    CREATE TABLE suppressions (
        account TEXT NOT NULL,
        number TEXT NOT NULL,
        reason TEXT NOT NULL,
        vendor_code TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (account, number)
    );
    CREATE INDEX suppressions_created_at ON suppressions (created_at)
    """,
    # 4: token buckets shared by every replica (connector/throttle/postgres.py); times are the
    # database's clock. UNLOGGED: a bucket is worth no WAL flush per send, and losing them in
    # a crash only refills them. last_wait is the verdict of the latest acquire, which
    # RETURNING reads back (it cannot see the row as it was before the update).
    """
    CREATE UNLOGGED TABLE throttle_buckets (
        account TEXT PRIMARY KEY,
        tokens DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        paused_until DOUBLE PRECISION NOT NULL DEFAULT 0,
        last_wait DOUBLE PRECISION NOT NULL DEFAULT 0
    )
    """,
    # 5 (branch h14-ops): dead letters an operator replays (see schema.py).
    """
    ALTER TABLE outbox ADD COLUMN replayed_at DOUBLE PRECISION;
    CREATE INDEX outbox_dead ON outbox (id) WHERE state = 'dead'
    """,
    # 6 (branch h15-tenant): part receipts held until the part count is known (schema.py).
    "ALTER TABLE messages ADD COLUMN parts_held BOOLEAN NOT NULL DEFAULT FALSE",
    # 7 (branch h12-inbound): per-account sealed settings and inbound message ids (see schema.py).
    """
    CREATE TABLE vendor_accounts (
        vendor TEXT NOT NULL,
        account TEXT NOT NULL,
        sealed_settings BYTEA NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (vendor, account)
    );
    CREATE TABLE inbound_messages (
        vendor TEXT NOT NULL,
        vendor_message_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (vendor, vendor_message_id)
    );
    CREATE INDEX inbound_messages_received_at ON inbound_messages (received_at)
    """,
    # 8 (branch h13-contracts): the message text, kept only with CONNECTOR_KEEP_MESSAGE_TEXT
    # (SPEC §7); NULL otherwise. Purged with its row.
    "ALTER TABLE messages ADD COLUMN text TEXT",
    # 9 (branch h15-claims): claim owners and per-credential suppressions (see schema.py).
    """
    ALTER TABLE messages ADD COLUMN claim_owner TEXT;
    ALTER TABLE suppressions ADD COLUMN credential TEXT NOT NULL DEFAULT '';
    ALTER TABLE suppressions DROP CONSTRAINT suppressions_pkey;
    ALTER TABLE suppressions ADD PRIMARY KEY (account, number, credential)
    """,
    # 10 (branch h11-nul): the exact UTF-8 of a custom_data or kept text holding NUL, which
    # `text` cannot hold (store/nul.py); NULL for every other value. Adding a nullable column
    # without a default changes only the catalogue: no rewrite, no long lock.
    "ALTER TABLE messages ADD COLUMN custom_data_exact BYTEA, ADD COLUMN text_exact BYTEA",
)
