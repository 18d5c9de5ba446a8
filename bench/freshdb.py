"""A fresh PostgreSQL database for each benchmark run, or the reason there cannot be one."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import uuid
from urllib.parse import urlsplit


def create(server: str) -> tuple[str | None, str]:
    """(URL of a new empty database on `server`, "") or (None, why not)."""
    parts = urlsplit(server)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    try:
        socket.create_connection((host, port), timeout=2.0).close()
    except OSError as exc:
        return None, f"nothing answers on {host}:{port} ({exc.strerror or exc})"
    name = f"connector_bench_{uuid.uuid4().hex[:10]}"
    error = _execute(server, f'CREATE DATABASE "{name}"')
    if error is not None:
        return None, f"cannot create a database on {server}: {error}"
    return f"{server.rstrip('/')}/{name}", ""


def drop(database: str) -> None:
    server, name = database.rsplit("/", 1)
    _execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _execute(server: str, statement: str) -> str | None:
    """Run one statement in the `postgres` database; the error text, or None."""
    target = f"{server.rstrip('/')}/postgres"
    psql = shutil.which("psql")
    if psql is not None:
        try:
            done = subprocess.run([psql, target, "-v", "ON_ERROR_STOP=1", "-qc", statement],
                                  capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
        return None if done.returncode == 0 else done.stderr.strip()
    try:
        import asyncpg  # optional: only without psql
    except ImportError:
        return "neither psql nor asyncpg is installed"

    async def run() -> None:
        conn = await asyncpg.connect(target, timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    try:
        asyncio.run(run())
    except Exception as exc:  # any failure just means: no PostgreSQL runs
        return str(exc)
    return None


def server_pids(database: str) -> list[int]:
    """The PostgreSQL processes that work for `database`: its backends and the shared writers
    (WAL writer, checkpointer, background writer) whose CPU a commit also costs."""
    _server, name = database.rsplit("/", 1)

    async def run() -> list[int]:
        import asyncpg

        conn = await asyncpg.connect(database, timeout=10)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE (datname = $1 AND pid <> pg_backend_pid())"
                " OR backend_type IN ('walwriter', 'checkpointer', 'background writer')", name)
        finally:
            await conn.close()
        return [int(r["pid"]) for r in rows]

    try:
        return asyncio.run(run())
    except Exception:  # the figure is then missing, not wrong
        return []
