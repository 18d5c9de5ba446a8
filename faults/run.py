"""The connector's fault suite (issue #4), one command:

    .venv/bin/python faults/run.py [--short] [--only NAME[,NAME...]] [--json PATH] [--keep]

Scenarios: dup_storm, crash, receiver_outage, db_restart, vendor_faults (and, in the full run,
crash_sqlite). Each prints what it did and what it counted, with the expected count beside
it; any wrong count fails the scenario and the run (exit status 1). Everything runs on
127.0.0.1 in child processes that are stopped on exit, also on Ctrl-C or SIGTERM (and killed
with this process if it is killed). db_restart stops and starts the local PostgreSQL cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from scenarios import FULL_ONLY, SCENARIOS, Ctx


def _interrupted(signum: int, frame: Any) -> NoReturn:
    raise KeyboardInterrupt  # SIGTERM too: the finally clauses stop every child


async def run(names: list[str], short: bool, tmp: Path) -> list[harness.Result]:
    fakes = harness.Fakes(tmp)
    results = []
    try:
        ctx = Ctx(tmp=tmp, fakes=fakes, short=short)
        table = {**SCENARIOS, **FULL_ONLY}
        for name in names:
            print(f"-- {name} ({ctx.mode}) ...", flush=True)
            try:
                result = await asyncio.wait_for(table[name](ctx), 1800)
            except Exception as exc:  # a scenario that breaks is a failed scenario
                result = harness.Result(name, "crashed", ctx.mode)
                result.fail(f"{type(exc).__name__}: {exc}")
                result.note(traceback.format_exc()[-1500:])
            result.finish()
            print(result.table(), flush=True)
            results.append(result)
    finally:
        await fakes.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="the quick version (about 90 s)")
    parser.add_argument("--only", default="", help="comma list of scenario names")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args()
    available = list(SCENARIOS) + ([] if args.short else list(FULL_ONLY))
    names = [n for n in args.only.split(",") if n] or available
    unknown = [n for n in names if n not in {**SCENARIOS, **FULL_ONLY}]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {available + list(FULL_ONLY)}")
    signal.signal(signal.SIGTERM, _interrupted)
    tmp = Path(tempfile.mkdtemp(prefix="connector-faults-"))
    began = time.monotonic()
    results: list[harness.Result] = []
    try:
        results = asyncio.run(run(names, args.short, tmp))
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 130
    finally:
        harness.restart_pg_if_we_stopped_it()
        harness.stop_all()
        if args.keep or any(not r.ok for r in results):
            print(f"logs kept in {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.monotonic() - began
    print(f"\n== summary ({'short' if args.short else 'full'}, {total:.0f} s)")
    for result in results:
        print(f"   {'PASS' if result.ok else 'FAIL'}  {result.name:<16} {result.seconds:6.1f} s"
              + ("" if result.ok else f"  ({len(result.failures)} wrong counts)"))
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=harness.ROOT,
                                capture_output=True, text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "connector"], cwd=harness.ROOT,
                               capture_output=True, text=True, check=False).stdout.strip()
        args.json.write_text(json.dumps({
            "mode": "short" if args.short else "full", "seconds": round(total, 1),
            "commit": commit + ("+dirty" if dirty else ""), "cpus": os.cpu_count(),
            "ok": all(r.ok for r in results), "results": [r.as_json() for r in results],
        }, indent=2))
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
