"""Dead-letter listing and replay, as SQL for both stores (the filter is built once here)."""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Sequence
from typing import Any, Final

from connector.store.base import DeadLetter, DeadLetterFilter

# PostgreSQL's reading of a URL's host, the same as url_host's: after the scheme and any
# user-info (up to the netloc's last @), a bracketed IPv6 literal or up to a port or path.
_PG_HOST: Final = (
    "lower(btrim(substring(url from "
    "'^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#]*@)?(\\[[^]]*\\]|[^:/?#]*)'), '[]'))"
)
_SQLITE_HOST: Final = "connector_url_host(url)"
_COLUMNS: Final = "id, event_id, message_id, url, created_at, done_at, attempts, last_error"
MAX_IDS: Final = 1000


def url_host(url: str) -> str:
    """The host a callback URL names, lower case ('' when it names none)."""
    try:
        return urllib.parse.urlsplit(url).hostname or ""
    except ValueError:
        return ""


def prepare_sqlite(db: sqlite3.Connection) -> None:
    """Give SQLite the host function the filter uses (cheap to repeat)."""
    db.create_function("connector_url_host", 1, url_host, deterministic=True)


def where(which: DeadLetterFilter, ids: Sequence[int] | None, postgres: bool,
          first: int = 1) -> tuple[str, list[Any]]:
    """The WHERE clause for dead rows matching `which` (and `ids`), with its parameters."""
    params: list[Any] = []

    def mark(value: Any) -> str:
        params.append(value)
        return f"${first + len(params) - 1}" if postgres else "?"

    conditions = ["state = 'dead'"]
    if which.host is not None:
        conditions.append(f"{_PG_HOST if postgres else _SQLITE_HOST} = {mark(which.host)}")
    if which.since is not None:
        conditions.append(f"done_at >= {mark(which.since)}")
    if which.until is not None:
        conditions.append(f"done_at < {mark(which.until)}")
    if ids is not None:
        if postgres:
            conditions.append(f"id = ANY({mark(list(ids))}::bigint[])")
        else:
            conditions.append(f"id IN ({', '.join(mark(i) for i in ids) or 'NULL'})")
    return " AND ".join(conditions), params


def list_query(which: DeadLetterFilter, after: int, limit: int, postgres: bool
               ) -> tuple[str, list[Any]]:
    clause, params = where(which, None, postgres, first=3)
    query = f"SELECT {_COLUMNS} FROM outbox WHERE id > %s AND {clause} ORDER BY id LIMIT %s"
    if postgres:  # numbered: the cursor and limit are $1 and $2, the filter follows
        return query % ("$1", "$2"), [after, limit, *params]
    return query % ("?", "?"), [after, *params, limit]


def replay_statement(which: DeadLetterFilter, ids: Sequence[int] | None, now: float,
                     postgres: bool) -> tuple[str, list[Any]]:
    """Back to pending, due now, attempts from zero and the horizon from `now` (replayed_at).
    `state = 'dead'` in the WHERE makes a second replay of the same row change nothing."""
    clause, params = where(which, ids, postgres, first=2)
    now_mark = "$1" if postgres else "?"
    update = (f"UPDATE outbox SET state = 'pending', attempts = 0, next_at = {now_mark}, "
              f"lease_until = 0, leased_by = NULL, done_at = NULL, "
              f"replayed_at = {now_mark} WHERE {clause}")
    if postgres:
        return f"WITH r AS ({update} RETURNING 1) SELECT count(*) FROM r", [now, *params]
    # SQLite numbers repeated '?' separately: give `now` once per use.
    return update, [now, now, *params]


def rows(found: Sequence[Any]) -> list[DeadLetter]:
    return [DeadLetter(id=int(r[0]), event_id=r[1], message_id=r[2], url=r[3],
                       created_at=r[4], dead_at=r[5], attempts=r[6], last_error=r[7])
            for r in found]

