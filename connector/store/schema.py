"""Versioned schema migrations; migration N brings a store from version N-1 to N."""

from __future__ import annotations

from typing import Final

# Append only: a released migration never changes, a new one is added after it.
MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        request_id TEXT,
        claim_key TEXT UNIQUE,          -- the dedupe claim, NULL once released or absent
        vendor TEXT NOT NULL,
        sealed_settings BLOB NOT NULL,  -- Chan-* settings, encrypted (never in clear)
        sender TEXT NOT NULL,
        to_number TEXT NOT NULL,
        custom_data TEXT NOT NULL,
        callback_url TEXT NOT NULL,
        metadata BLOB,
        status TEXT NOT NULL,
        vendor_message_id TEXT,
        from_number TEXT,
        segments INTEGER,
        encoding TEXT,
        error_code TEXT,
        error_message TEXT,
        ambiguous INTEGER NOT NULL DEFAULT 0,
        response_status INTEGER,
        response_body BLOB,
        response_retry_after REAL,
        claimed_until REAL NOT NULL DEFAULT 0,
        handed_off_at REAL,
        delivered_at REAL,
        errored_at REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX messages_request_id ON messages (request_id);
    CREATE INDEX messages_created_at ON messages (created_at);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        message_id TEXT NOT NULL,
        url TEXT NOT NULL,
        payload BLOB NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL,
        lease_until REAL NOT NULL DEFAULT 0,
        leased_by TEXT,
        last_error TEXT,
        created_at REAL NOT NULL,
        done_at REAL
    );
    CREATE INDEX outbox_due ON outbox (next_at) WHERE state = 'pending';
    CREATE INDEX outbox_message ON outbox (message_id);
    CREATE TABLE report_attempts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        outbox_id INTEGER NOT NULL,
        at REAL NOT NULL,
        outcome TEXT NOT NULL,
        status_code INTEGER,
        error TEXT
    );
    CREATE INDEX report_attempts_outbox ON report_attempts (outbox_id)
    """,
    # 2: vendors without URL tokens match callbacks by vendor id; multipart messages (Vonage)
    # keep one status per part.
    """
    ALTER TABLE messages ADD COLUMN parts INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX messages_vendor_id ON messages (vendor, vendor_message_id);
    CREATE TABLE message_parts (
        message_id TEXT NOT NULL,
        part_id TEXT NOT NULL,
        status TEXT NOT NULL,
        error_code TEXT,
        error_message TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (message_id, part_id)
    )
    """,
    # 3: recipients a vendor reported as opted out, per integration account; a send to one is
    # refused before any vendor call until an operator removes the entry.
    """
    CREATE TABLE suppressions (
        account TEXT NOT NULL,
        number TEXT NOT NULL,           -- E.164
        reason TEXT NOT NULL,
        vendor_code TEXT,
        created_at REAL NOT NULL,
        PRIMARY KEY (account, number)
    );
    CREATE INDEX suppressions_created_at ON suppressions (created_at)
    """,
    # 4: nothing here. PostgreSQL's migration 4 adds the token buckets replicas share; a
    # SQLite deployment counts rates per process. Kept so the numbers match.
    "",
    # 5 (branch h14-ops): an operator may queue a dead letter again; its retry horizon then
    # runs from replayed_at. The partial index serves the dead-letter list and its count.
    """
    ALTER TABLE outbox ADD COLUMN replayed_at REAL;
    CREATE INDEX outbox_dead ON outbox (id) WHERE state = 'dead'
    """,
    # 6 (branch h15-tenant): a part receipt that lands before the send's answer is held in
    # message_parts (the part count is not known yet); this says some are waiting, so the
    # outcome's write settles them in its own transaction.
    "ALTER TABLE messages ADD COLUMN parts_held INTEGER NOT NULL DEFAULT 0",
    # 7 (branch h12-inbound): the latest sealed settings per vendor account (inbound webhooks carry no
    # per-message credentials), and the vendor message ids of inbound messages already taken
    # (a vendor's retry is acknowledged, not forwarded again).
    """
    CREATE TABLE vendor_accounts (
        vendor TEXT NOT NULL,
        account TEXT NOT NULL,
        sealed_settings BLOB NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (vendor, account)
    );
    CREATE TABLE inbound_messages (
        vendor TEXT NOT NULL,
        vendor_message_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        received_at REAL NOT NULL,
        PRIMARY KEY (vendor, vendor_message_id)
    );
    CREATE INDEX inbound_messages_received_at ON inbound_messages (received_at)
    """,
    # 8 (branch h13-contracts): the message text, kept only with CONNECTOR_KEEP_MESSAGE_TEXT
    # (SPEC §7); NULL otherwise. Purged with its row.
    "ALTER TABLE messages ADD COLUMN text TEXT",
    # 9 (branch h15-claims): a claim's owner (NULL: the message's own send; a take-over
    # writes its token) so only the holder records an outcome; suppressions per credential
    # (a keyed hash of the account's secret, '' for entries stored before), so a caller with
    # a wrong secret cannot read an account's list. SQLite cannot change a primary key in
    # place: the table is rebuilt.
    """
    ALTER TABLE messages ADD COLUMN claim_owner TEXT;
    CREATE TABLE suppressions_v5 (
        account TEXT NOT NULL,
        number TEXT NOT NULL,
        credential TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL,
        vendor_code TEXT,
        created_at REAL NOT NULL,
        PRIMARY KEY (account, number, credential)
    );
    INSERT INTO suppressions_v5 (account, number, credential, reason, vendor_code, created_at)
        SELECT account, number, '', reason, vendor_code, created_at FROM suppressions;
    DROP TABLE suppressions;
    ALTER TABLE suppressions_v5 RENAME TO suppressions;
    CREATE INDEX suppressions_created_at ON suppressions (created_at)
    """,
    # 10 (branch h11-nul): PostgreSQL only (schema_pg.py): SQLite text holds NUL as it is.
    "",
)
