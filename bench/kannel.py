"""Kannel (C) as the peer in the same run: `../shared/bench/peer_kannel.sh`, read back.

The script installs Debian's kannel and wrk when missing, runs bearerbox + smsbox against an
instant vendor stub that posts a delivery report per message, loads smsbox with wrk, and keeps
one JSON line per repetition in its work directory; this module runs it and takes medians.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

from stage import ROOT

SCRIPT = ROOT.parent / "shared" / "bench" / "peer_kannel.sh"


def measure(seconds: int, reps: int, conns: int, script: Path = SCRIPT) -> dict[str, Any]:
    """Kannel's medians, or {"status": "skipped", "note": why}."""
    if not script.exists():
        return {"status": "skipped", "note": f"{script} is not there"}
    env = {**os.environ, "DURATION": str(seconds), "REPS": str(reps), "CONNS": str(conns),
           "KEEP_DIR": "1"}
    print(f"  Kannel peer: {script} ({reps} x {seconds} s, wrk -c{conns})", flush=True)
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                          timeout=300 + reps * (seconds + 330), check=False)
    found = re.search(r"^work dir: (\S+)", done.stdout, re.M)
    if found is None:
        return {"status": "failed", "note": (done.stdout + done.stderr)[-1500:]}
    work = Path(found.group(1))
    try:
        rows = [json.loads(line) for line in (work / "results.jsonl").read_text().splitlines()
                if line.strip()]
    except OSError as exc:
        return {"status": "failed", "note": f"{exc}; {(done.stdout + done.stderr)[-1500:]}"}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if done.returncode != 0 or not rows:
        return {"status": "failed", "note": (done.stdout + done.stderr)[-1500:]}

    def med(key: str) -> float:
        return float(statistics.median(float(r[key]) for r in rows))

    return {
        "status": "ok", "reps": rows,
        "accept_rps": med("accept_rps"),
        # a message is done when its last report reached the dlr-url: two reports each
        # (the SMSC's and the vendor's), as the connector's report follows two callbacks
        "e2e_msg_s": statistics.median(r["dlr_e2e_rps"] / 2 for r in rows),
        "vendor_msg_s": med("fwd_e2e_rps"),
        "cpu_us_per_msg": med("cpu_kannel_us_per_msg"),
    }
