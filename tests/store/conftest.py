"""One store suite, run against every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connector.store.base import Store
from connector.store.sqlite import SqliteStore


@pytest.fixture(params=["sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Store = SqliteStore(tmp_path / "connector.db")
    await backend.open()
    yield backend
    await backend.close()
