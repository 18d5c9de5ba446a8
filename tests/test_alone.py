"""tests/conftest.py: an `alone` test holds the suite's lock exclusively, every other test shares it."""

from __future__ import annotations

import fcntl

import pytest

from tests.conftest import LOCK


def _can_lock(mode: int) -> bool:
    with LOCK.open("a") as other:  # another open file: flock conflicts even in this process
        try:
            fcntl.flock(other, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(other, fcntl.LOCK_UN)
        return True


def test_a_test_shares_the_lock() -> None:
    assert _can_lock(fcntl.LOCK_SH)  # the other worker's tests run meanwhile
    assert not _can_lock(fcntl.LOCK_EX)  # an `alone` test waits for this one


@pytest.mark.alone
def test_an_alone_test_holds_it_exclusively() -> None:
    assert not _can_lock(fcntl.LOCK_SH)
