"""Benchmark-only: count the SQL statements each process sends to its store.

Loaded into `connector serve` (and its workers) through PYTHONPATH by bench/stage.py when
BENCH_STATEMENTS_DIR is set; never part of the connector. Every statement SQLite runs (its
trace callback) and every asyncpg call that goes to the server adds one to a per-process
counter, which a daemon thread writes to BENCH_STATEMENTS_DIR/<pid> every 0.2 s.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

_DIR = os.environ.get("BENCH_STATEMENTS_DIR")
_count = [0]


def _bump(*_: Any) -> None:
    _count[0] += 1


def _writer(path: Path) -> None:
    last = -1
    while True:
        if _count[0] != last:
            last = _count[0]
            tmp = path.with_suffix(".tmp")
            tmp.write_text(str(last))
            tmp.replace(path)
        time.sleep(0.2)


def _patch_sqlite() -> None:
    connect = sqlite3.connect

    def counted(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(_bump)  # one call per statement executed
        return conn

    sqlite3.connect = counted  # type: ignore[assignment]


def _patch_asyncpg() -> None:
    try:
        from asyncpg import connection
    except ImportError:
        return
    cls = connection.Connection
    for name in ("execute", "executemany", "fetch", "fetchrow", "fetchval", "fetchmany"):
        original = getattr(cls, name, None)
        if original is None:
            continue

        def wrap(fn: Any) -> Any:
            async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
                _bump()
                return await fn(self, *args, **kwargs)
            return counted

        setattr(cls, name, wrap(original))


if _DIR:
    _patch_sqlite()
    _patch_asyncpg()
    threading.Thread(target=_writer, args=(Path(_DIR) / str(os.getpid()),),
                     daemon=True, name="bench-statements").start()


# Benchmark-only, for bench/calls.py: with BENCH_PROFILE_OUT set, SIGUSR1 starts cProfile in
# the process and SIGUSR2 stops it and writes BENCH_PROFILE_OUT.<pid>.
_PROFILE = os.environ.get("BENCH_PROFILE_OUT")
_profiler: list[Any] = []


def _profile_on(*_: Any) -> None:
    import cProfile

    _profiler[:] = [cProfile.Profile()]
    _profiler[0].enable()


def _profile_off(*_: Any) -> None:
    if _profiler:
        _profiler[0].disable()
        _profiler[0].dump_stats(f"{_PROFILE}.{os.getpid()}")


if _PROFILE:
    import signal

    signal.signal(signal.SIGUSR1, _profile_on)
    signal.signal(signal.SIGUSR2, _profile_off)
