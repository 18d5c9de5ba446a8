"""Storage backends behind the Store protocol, chosen by CONNECTOR_DATABASE_URL."""

from __future__ import annotations

from connector.settings import Settings
from connector.store.base import Store
from connector.store.sqlite import SqliteStore


def open_store(settings: Settings) -> Store:
    if settings.database_url.startswith(("postgresql://", "postgres://")):
        # Imported here: a SQLite deployment never loads the PostgreSQL driver.
        from connector.store.postgres import PostgresStore

        return PostgresStore(settings.database_url, min_size=settings.db_pool_min,
                             max_size=settings.db_pool_max)
    return SqliteStore(settings.sqlite_path, synchronous=settings.sqlite_synchronous)
