"""tests/conftest.py: an `alone` test holds the suite's lock exclusively, every other test shares it."""

from __future__ import annotations

import fcntl
from pathlib import Path

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


def test_the_suite_runs_every_case_of_a_shared_node_id() -> None:
    """schemathesis parametrizes tests/e2e/test_fuzz.py into 20 cases with one node id; xdist's
    loadgroup and loadscope modes schedule by node id and ran only one of them."""
    script = (Path(__file__).resolve().parent.parent / "scripts" / "test.sh").read_text()
    command = next(line for line in script.splitlines() if line.startswith("exec "))
    assert "--dist load " in command + " "
