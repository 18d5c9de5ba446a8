"""A replayed dead letter through the real dispatcher: a fresh horizon, the same event."""

from __future__ import annotations

import json
import time

from connector.outbox import Dispatcher
from connector.store.base import DeadLetterFilter
from connector.store.sqlite import SqliteStore
from tests.fakes.receiver import ReportReceiver
from tests.test_outbox import delivered, drain

# pytest fixtures, imported by name so this file can use them
from tests.test_outbox import parts as parts
from tests.test_outbox import receiver as receiver


async def test_a_replay_retries_within_a_fresh_horizon(
        parts: tuple[SqliteStore, Dispatcher], receiver: ReportReceiver) -> None:
    store, dispatcher = parts
    dispatcher.settings = dispatcher.settings.replace(report_horizon=60.0)
    receiver.script([404])
    message_id = await delivered(store, dispatcher, receiver.url(), "x")
    await drain(dispatcher)
    (dead,) = await store.dead_letters(DeadLetterFilter(), 0, 10)
    # The report is a day old: far past its horizon, had the horizon not restarted.
    store.db.execute("UPDATE outbox SET created_at = created_at - 86400 WHERE id = ?",
                     (dead.id,))
    assert await store.replay_dead(DeadLetterFilter(), [dead.id], time.time()) == 1
    receiver.script([503])  # still flaky after the fix: retried, not dead-lettered again
    await drain(dispatcher)
    (view,) = await store.reports_for(message_id)
    assert view.state == "delivered"
    assert [(a.outcome, a.status_code) for a in view.attempts] == [
        ("dead", 404), ("retry", 503), ("delivered", 200)]
    first, *_, last = receiver.posts
    assert json.loads(json.dumps(first.events)) == last.events  # the same event, same event_id
