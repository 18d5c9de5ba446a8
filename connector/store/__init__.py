"""Storage backends behind the Store protocol, chosen by CONNECTOR_DATABASE_URL."""

from __future__ import annotations

from connector.settings import Settings
from connector.store.base import Store
from connector.store.sqlite import SqliteStore


def open_store(settings: Settings) -> Store:
    return SqliteStore(settings.sqlite_path, synchronous=settings.sqlite_synchronous)
