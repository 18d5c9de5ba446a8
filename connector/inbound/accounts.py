"""The latest sealed settings per vendor account, kept for verifying inbound webhooks."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Final

import structlog

from connector.errors import StoreUnavailable
from connector.inbound.registry import INBOUND
from connector.store.base import Store

log = structlog.get_logger("connector.accounts")
_MAX_REMEMBERED: Final = 10_000  # accounts this process remembers writing; then it starts over


class Accounts:
    """Writes an account's sealed settings when a send or verify call worked with settings
    other than the ones this process last wrote for it (latest wins across processes).

    The comparison is on the sealed bytes, which SecretBox reuses for equal settings, so an
    unchanged account costs a dictionary look-up per send and no store round trip.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._written: dict[tuple[str, str], bytes] = {}

    async def remember(self, vendor: str, settings: Mapping[str, str], sealed: bytes) -> None:
        adapter = INBOUND.get(vendor)
        account = adapter.settings_account(settings) if adapter else None
        if account is None:
            return
        key = (vendor, account)
        if self._written.get(key) == sealed:
            return
        try:
            await self.store.remember_account(vendor, account, sealed, time.time())
        except StoreUnavailable as exc:  # the send stands; the next one tries again
            log.warning("account_not_remembered", error=exc.message)
            return
        if len(self._written) >= _MAX_REMEMBERED:
            self._written.clear()
        self._written[key] = sealed
