"""One store suite, run against every backend: a SQLite file and a fresh PostgreSQL database."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from connector.store.base import Store
from connector.store.postgres import PostgresStore
from connector.store.sqlite import SqliteStore

# CI starts this server; when it is down the PostgreSQL tests fail rather than skip, so a
# green run always means both backends passed.
SERVER = os.environ.get("CONNECTOR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """The URL of a new, empty database, dropped (with any connections left) afterwards."""
    name = f"connector_test_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(f"{SERVER}/postgres", timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{SERVER}/{name}"
        finally:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def pg_dsn() -> AsyncIterator[str]:
    async with fresh_database() as dsn:
        yield dsn


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with contextlib.AsyncExitStack() as stack:
        backend: Store
        if request.param == "sqlite":
            backend = SqliteStore(tmp_path / "connector.db")
        else:
            dsn = await stack.enter_async_context(fresh_database())
            backend = PostgresStore(dsn, min_size=1, max_size=4)
        await backend.open()
        stack.push_async_callback(backend.close)
        yield backend
