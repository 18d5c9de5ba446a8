"""The SQLite store's parameter adapters bind exactly what sqlite3 bound without them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import connector.store.sqlite  # noqa: F401  (registers the adapters)


def test_adapted_types_bind_as_before(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "binding.db")
    db.execute("CREATE TABLE t (v)")
    values = [None, b"", b"\x00\xffraw", True, False]
    db.executemany("INSERT INTO t (v) VALUES (?)", [(v,) for v in values])
    stored = db.execute("SELECT v, typeof(v) FROM t ORDER BY rowid").fetchall()
    assert stored == [(None, "null"), (b"", "blob"), (b"\x00\xffraw", "blob"),
                      (1, "integer"), (0, "integer")]
    # A NULL bound through the adapter compares as NULL, not as some stand-in value.
    assert db.execute("SELECT count(*) FROM t WHERE v IS ?", (None,)).fetchone() == (1,)
    assert db.execute("SELECT ? IS NULL, ? = x'00ff7261', ?", (None, b"\x00\xffra", True)
                      ).fetchone() == (1, 1, 1)
    db.close()


def test_adapters_are_registered_for_the_types_that_missed() -> None:
    # Without an entry here sqlite3 falls back to a failing attribute look-up per parameter.
    for kind in (type(None), bytes, bool):
        assert (kind, sqlite3.PrepareProtocol) in sqlite3.adapters
