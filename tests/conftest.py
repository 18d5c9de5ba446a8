"""Tests marked `alone` run while no other test does, also across pytest-xdist workers.

`faults` db_restart stops and starts this machine's PostgreSQL cluster: any test using
PostgreSQL on another worker meanwhile fails with "the database system is shutting down".
Every test holds a shared lock on a file for its whole protocol (set-up, call, tear-down, so
module fixtures too); an `alone` test holds it exclusively. A gate taken before the lock keeps
a waiting `alone` test from being starved by tests that follow each other without a gap.
The files are per machine, as the cluster is.
"""

from __future__ import annotations

import fcntl
import gc
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

LOCK = Path(tempfile.gettempdir()) / "channel-api-connector-tests.lock"
GATE = LOCK.with_suffix(".gate")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    alone = item.get_closest_marker("alone") is not None
    with GATE.open("a") as gate, LOCK.open("a") as lock:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
            if not alone:
                fcntl.flock(gate, fcntl.LOCK_UN)
            return (yield)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            fcntl.flock(gate, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def _collect_garbage_after() -> Iterator[None]:
    """A socket or transport a test leaks is found by the garbage collector at some later
    moment, and its ResourceWarning (an error here) then fails whichever test is running:
    collecting after each test pins the leak on the test that made it."""
    yield
    gc.collect()
