"""Status ranks: statuses only move forward, and a terminal status is final."""

import pytest

from connector.model import REPORT_STATUS, TERMINAL, Status

S = Status


@pytest.mark.parametrize(("current", "new", "advances"), [
    pytest.param(S.PENDING, S.ACCEPTED, True, id="pending-accepted"),
    pytest.param(S.PENDING, S.DELIVERED, True, id="pending-delivered-early-callback"),
    pytest.param(S.ACCEPTED, S.SENT, True, id="accepted-sent"),
    pytest.param(S.SENT, S.DELIVERED, True, id="sent-delivered"),
    pytest.param(S.ACCEPTED, S.UNDELIVERED, True, id="accepted-undelivered"),
    pytest.param(S.SENT, S.ACCEPTED, False, id="sent-accepted-late"),
    pytest.param(S.SENT, S.SENT, False, id="sent-sent-repeat"),
    pytest.param(S.DELIVERED, S.SENT, False, id="delivered-sent-late"),
    pytest.param(S.DELIVERED, S.FAILED, False, id="delivered-failed-terminal-is-final"),
    pytest.param(S.UNDELIVERED, S.DELIVERED, False, id="undelivered-delivered-terminal-final"),
    pytest.param(S.REJECTED, S.SENT, False, id="rejected-sent"),
])
def test_advances(current: Status, new: Status, advances: bool) -> None:
    assert new.advances(current) is advances


def test_every_terminal_status_reports_as_failed_or_delivered() -> None:
    assert {REPORT_STATUS[s] for s in TERMINAL} == {"delivered", "failed"}
    assert REPORT_STATUS[S.DELIVERED] == "delivered"
    assert S.PENDING not in REPORT_STATUS and S.ACCEPTED not in REPORT_STATUS
