"""The Store contract for claims that change hands and state kept per tenant (issue #15)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from connector.model import Status, StatusUpdate
from connector.store.base import SendOutcome, Store, StoredResponse
from connector.store.schema import MIGRATIONS
from connector.store.sqlite import SqliteStore
from tests.store.test_store import NOW, OK, new, report_all, report_none

AMBIGUOUS = SendOutcome(response=StoredResponse(status=502, body=b'{"ambiguous":1}'),
                        status=Status.PENDING, error_code="ambiguous", ambiguous=True)
RETRY = SendOutcome(response=StoredResponse(status=503, body=b"{}", retry_after=1.0),
                    status=Status.FAILED, release=True)


async def test_a_stale_sender_writes_nothing_after_a_take_over(store: Store) -> None:
    original = new(claimed_until=NOW + 1)
    await store.claim(original, NOW)
    assert await store.take_over(original.id, NOW + 2, NOW + 40, "taker")
    # The original's late answer loses: it neither answers repeats nor frees the id.
    assert not await store.record_outcome(original.id, RETRY, NOW + 3, report_none)
    polled = await store.poll_claim(original.id)
    assert polled is not None and polled.response is None
    assert not (await store.claim(new(), NOW + 3)).claimed
    assert await store.record_outcome(original.id, OK, NOW + 4, report_none, "taker")
    # A late ambiguous answer (the original's look-up found nothing) cannot replace it either.
    assert not await store.record_outcome(original.id, AMBIGUOUS, NOW + 5, report_none)
    polled = await store.poll_claim(original.id)
    assert polled is not None and polled.response == OK.response
    row = await store.message(original.id)
    assert row is not None and row.status is Status.ACCEPTED and not row.ambiguous


async def test_a_late_acceptance_settles_the_takers_ambiguous_answer(store: Store) -> None:
    original = new(claimed_until=NOW + 1)
    await store.claim(original, NOW)
    assert await store.take_over(original.id, NOW + 2, NOW + 40, "taker")
    assert await store.record_outcome(original.id, AMBIGUOUS, NOW + 3, report_none, "taker")
    assert not await store.record_outcome(original.id, RETRY, NOW + 4, report_none)  # no news: ignored
    assert await store.record_outcome(original.id, OK, NOW + 5, report_none)  # the vendor took it
    polled = await store.poll_claim(original.id)
    assert polled is not None and polled.response == OK.response and not polled.ambiguous
    assert polled.status is Status.ACCEPTED


async def test_a_claim_settled_by_a_callback_is_never_taken_over(store: Store) -> None:
    original = new(claimed_until=NOW + 1)
    await store.claim(original, NOW)  # its sender dies before recording the answer
    delivered = StatusUpdate(status=Status.DELIVERED, vendor_message_id="SM1")
    await store.apply_status(original.id, delivered, NOW + 2, report_all)
    repeat = await store.claim(new(), NOW + 3)
    assert not repeat.claimed and repeat.response is None
    assert repeat.status is Status.DELIVERED and repeat.claimed_until < NOW + 3
    assert not await store.take_over(original.id, NOW + 3, NOW + 40, "taker")
    polled = await store.poll_claim(original.id)
    assert polled is not None and polled.status is Status.DELIVERED


async def test_a_request_id_is_claimed_once_per_tenant(store: Store) -> None:
    owner = new(claim_key="twilio:AC1|owner|r1")
    stranger = new(claim_key="twilio:AC1|forged|r1")
    assert (await store.claim(owner, NOW)).claimed
    assert (await store.claim(stranger, NOW)).claimed  # never sees the owner's claim
    await store.record_outcome(owner.id, OK, NOW, report_none)
    repeat = await store.claim(new(claim_key="twilio:AC1|owner|r1"), NOW + 1)
    assert not repeat.claimed and repeat.response == OK.response
    other = await store.claim(new(claim_key="twilio:AC1|forged|r1"), NOW + 1)
    assert not other.claimed and other.message_id == stranger.id and other.response is None
    found = await store.find("r1")  # the operator still finds a message by request_id
    assert found is not None and found.request_id == "r1"


async def test_suppressions_are_kept_per_credential(store: Store) -> None:
    await store.suppress("twilio:AC1", "+447911123456", "STOP", "21610", NOW, "cred-a")
    assert await store.is_suppressed("twilio:AC1", "+447911123456", "cred-a")
    assert not await store.is_suppressed("twilio:AC1", "+447911123456", "cred-b")
    assert not await store.is_suppressed("twilio:AC1", "+447911123456")
    await store.suppress("twilio:AC1", "+447911123456", "STOP", "21610", NOW + 1, "cred-b")
    listed = await store.suppressions("twilio:AC1", 10, 0)
    assert sorted(e.credential for e in listed) == ["cred-a", "cred-b"]
    assert await store.unsuppress("twilio:AC1", "+447911123456")  # every credential's entry
    assert await store.suppressions(None, 10, 0) == []
    assert not await store.unsuppress("twilio:AC1", "+447911123456")


async def test_entries_from_before_credentials_still_hold(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    for script in MIGRATIONS[:4]:  # the schema as it was before suppressions had credentials
        old.executescript(script)
    old.execute("PRAGMA user_version=4")
    old.execute("INSERT INTO suppressions VALUES ('twilio:AC1', '+447911123456', 'STOP', "
                "'21610', ?)", (NOW,))
    old.commit()
    old.close()
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.is_suppressed("twilio:AC1", "+447911123456", "any-credential")
        (entry,) = await store.suppressions("twilio:AC1", 10, 0)
        assert entry.credential == "" and entry.reason == "STOP"
        assert await store.unsuppress("twilio:AC1", "+447911123456")
    finally:
        await store.close()


async def test_a_claim_asked_about_suppression_agrees_with_is_suppressed(store: Store) -> None:
    await store.suppress("twilio:AC1", "+447911123456", "STOP", "21610", NOW, "cred-a")
    await store.suppress("twilio:AC1", "+447911000000", "STOP", "21610", NOW, "")  # any credential
    cases = [("+447911123456", "cred-a"), ("+447911123456", "cred-b"),
             ("+447911000000", "cred-b"), ("+447922222222", "cred-a")]
    for n, (number, credential) in enumerate(cases):
        claim = await store.claim(new(f"s{n}", to_number=number), NOW,
                                  ("twilio:AC1", credential))
        assert claim.claimed
        listed = await store.is_suppressed("twilio:AC1", number, credential)
        # Both stores answer with the claim (no read of its own on the send's path, #11).
        assert claim.suppressed is listed, (number, credential)
    assert (await store.claim(new("s9"), NOW)).suppressed is None  # not asked


async def test_a_listed_recipient_is_still_claimed_once_per_request_id(store: Store) -> None:
    """Asking about suppression changes nothing about who owns a request_id: a listed
    recipient's message is claimed (and then refused by the sender), and its repeat, listed or
    not by then, is the same claim's repeat."""
    await store.suppress("twilio:AC1", "+447911123456", "STOP", "21610", NOW, "")
    asked = ("twilio:AC1", "cred-a")
    first = await store.claim(new("listed"), NOW, asked)
    assert first.claimed and first.suppressed is True
    assert await store.message(first.message_id) is not None
    repeat = await store.claim(new("listed"), NOW, asked)
    assert not repeat.claimed and repeat.message_id == first.message_id
    assert await store.unsuppress("twilio:AC1", "+447911123456")
    again = await store.claim(new("listed"), NOW, asked)
    assert not again.claimed and again.message_id == first.message_id
    # Without a request_id there is nothing to repeat: each is a claim of its own.
    await store.suppress("twilio:AC1", "+447911123456", "STOP", "21610", NOW, "cred-a")
    lone = [await store.claim(new(None), NOW, asked) for _ in range(2)]
    assert all(c.claimed and c.suppressed is True for c in lone)
    assert lone[0].message_id != lone[1].message_id
