"""Python calls per message, by module: where the interpreter's work goes, deterministically.

    .venv/bin/python bench/calls.py [--db sqlite|postgresql] [--messages N] [--send-only]

callgrind (bench/instructions.py) puts three quarters of a message's instructions in the
Python interpreter but cannot say which Python code they run. This starts the same stage,
warms `connector serve` up, then has cProfile (bench/hooks/sitecustomize.py, switched by
signals) record every Python and built-in call while it carries N messages end to end, and
prints calls and profiled time per message, by module and by function. Call counts are
repeatable; the times carry cProfile's own overhead (call-heavy code looks dearer than it is).
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import pstats
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from stage import HERE, Stage

_MARKS = ("site-packages/", "/connector/", "lib/python3.11/")


def _module(file: str) -> str:
    if file == "~":
        return "(built-in)"
    for mark in _MARKS:
        if mark in file:
            return ("connector/" if mark == "/connector/" else "") + file.split(mark, 1)[1]
    return file


def summarise(stats: pstats.Stats, n: int, top: int) -> str:
    table: Any = stats.stats  # type: ignore[attr-defined]
    calls: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for (file, _line, _fn), (_cc, nc, tt, _ct, _callers) in table.items():
        calls[_module(file)] += nc
        own[_module(file)] += tt
    total = sum(calls.values())
    out = [f"{total / n:,.0f} Python and built-in calls per message", "",
           "calls/msg  profiled µs/msg  module"]
    out += [f"{c / n:9.1f}  {own[m] / n * 1e6:15.1f}  {m}" for m, c in calls.most_common(top)]
    out += ["", "calls/msg  own µs/msg  incl µs/msg  function"]
    rows = sorted(table.items(), key=lambda kv: -kv[1][1])[:top]
    out += [f"{v[1] / n:9.1f}  {v[2] / n * 1e6:10.1f}  {v[3] / n * 1e6:11.1f}  "
            f"{_module(k[0])}:{k[1]} {k[2]}" for k, v in rows]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", default="sqlite", choices=("sqlite", "postgresql"))
    p.add_argument("--messages", type=int, default=400)
    p.add_argument("--rate", type=float, default=40.0)
    p.add_argument("--send-only", action="store_true")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="connector-calls-"))
    stage = Stage(tmp, 16)
    out = tmp / "profile"
    process = database = None
    try:
        stage.start_fakes()
        process, base, database = stage.start_connector(tmp, db=args.db, pg_url=args.pg_url,
            extra_env={"BENCH_PROFILE_OUT": str(out), "PYTHONHASHSEED": "0",
                       "PYTHONPATH": os.pathsep.join(filter(None, [
                           str(HERE / "hooks"), os.environ.get("PYTHONPATH")]))})
        groups = {"connector": [process.pid], **stage.fake_pids}
        stage.e2e_phase("warm-up (not counted)", base, groups, rate=args.rate,
                        seconds=200 / args.rate + 5, count=200)
        os.kill(process.pid, signal.SIGUSR1)
        seconds = args.messages / args.rate + 5
        if args.send_only:
            stage.callbacks(False)
            n = stage.send_phase("counted (sends only)", base, groups, rate=args.rate,
                                 seconds=seconds, count=args.messages)["ok"]
        else:
            n = stage.e2e_phase("counted", base, groups, rate=args.rate, seconds=seconds,
                                count=args.messages)["check"]["delivered"]
        os.kill(process.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not glob.glob(f"{out}.*") and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        stats = pstats.Stats(glob.glob(f"{out}.*")[0])
        print(summarise(stats, max(1, n), args.top))
    finally:
        stage.stop_connector(process, database, timeout=30.0)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
