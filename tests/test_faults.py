"""The fault suite's short version (faults/run.py --short), one scenario per test.

Each scenario runs as its own process against the real `connector serve` processes, fakes
and PostgreSQL on loopback, prints its table of counts and exits non-zero when a count is
wrong; a failing test shows that table. About 75 s in all on two cores. `db_restart` stops
and starts the local PostgreSQL cluster (pg_ctlcluster, as root).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# db_restart stops the machine's PostgreSQL: no test on another xdist worker may run meanwhile.
SCENARIOS = ["dup_storm", "crash", "receiver_outage",
             pytest.param("db_restart", marks=pytest.mark.alone), "vendor_faults"]


@pytest.mark.e2e
@pytest.mark.parametrize("name", SCENARIOS)
def test_fault_scenario_counts_hold(name: str, tmp_path: Path) -> None:
    out = tmp_path / "faults.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "faults" / "run.py"), "--short", "--only", name,
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    shown = done.stdout[-6000:] + done.stderr[-3000:]
    assert out.exists(), shown
    report = json.loads(out.read_text())
    [result] = report["results"]
    assert result["rows"], shown  # it counted something
    assert done.returncode == 0 and result["ok"], (
        f"{name}: wrong counts {result['failures']}\n{shown}")
