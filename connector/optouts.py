"""Opt-outs a vendor reports late, in a status callback, feed the suppression list."""

from __future__ import annotations

import time
from typing import Final

import structlog

from connector.errors import StoreUnavailable
from connector.model import Applied, StatusUpdate
from connector.services import Services
from connector.store.base import MessageRow

log = structlog.get_logger("connector.optouts")

# The callback's news stands when the store applied it now or had applied it before: a
# vendor's retry of the same callback suppresses again, harmlessly, in case the first try
# could not. A regressed update (the message already ended otherwise) is not acted on.
_STANDS: Final = frozenset({Applied.APPLIED, Applied.DUPLICATE})


def acts_on(services: Services, update: StatusUpdate, applied: Applied) -> bool:
    """Whether suppress_reported would act on this callback's result (before a row is read)."""
    return update.opted_out and applied in _STANDS and services.settings.suppress_opt_outs


async def suppress_reported(services: Services, row: MessageRow, update: StatusUpdate,
                            applied: Applied) -> bool:
    """Put the recipient of a verified callback's opt-out on its vendor account's list.

    Best effort, like a refused send: the callback is answered the same either way, and a
    failed write only costs one more refused vendor call later. True when it was listed.
    """
    if not acts_on(services, update, applied):
        return False
    settings = services.box.open(row.sealed_settings)
    if settings is None:  # sealed under another secret key: the account cannot be named
        log.warning("suppress_skipped", reason="stored vendor settings cannot be opened")
        return False
    # The same tenant the send was checked under: the callback is verified with the secret
    # stored with the message, so the entry binds to that credential.
    tenant = services.sender.tenants.of(row.vendor, settings)
    account = tenant.account
    reason = f"{row.vendor}: {update.error_message or 'the recipient opted out'} (status callback)"
    try:
        await services.store.suppress(account, row.to_number, reason[:500], update.error_code,
                                      time.time(), tenant.credential)
    except StoreUnavailable as failed:
        log.warning("suppress_failed", error=failed.message)
        return False
    log.info("recipient_suppressed", account=account, source="callback")
    return True
