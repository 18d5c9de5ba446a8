"""CPU instructions per message, end to end: a repeatable figure on a shared machine.

    .venv/bin/python bench/instructions.py [--messages N] [--rate R] [--db sqlite|postgresql]
                                           [--send-only] [--keep DIR] [--against REV]

Runs `connector serve` under valgrind's callgrind with instrumentation off, warms it up with
callgrind off, then counts the instructions its process executes while it carries N messages
end to end (send, vendor call, `sent` and `delivered` callbacks, delivery report) from the same
stage as bench/run.py. Wall-clock figures move with whatever else the machine is doing;
instruction counts do not (within a percent or two here), so this is the figure to compare
commits by. It is slow (callgrind runs the server ~50x slower) and needs valgrind.

Under callgrind the connector nears saturation at the default 40 msg/s: requests queue and
share group commits, report POSTs and leases, so that figure moves with how near (with the
commit, and with what else the machine runs). At 10 msg/s nothing queues and every message
pays its own way. `--against REV` measures commit REV (a temporary git worktree, run with this
virtualenv) at the same time, on the same load, and prints the ratio: compare commits so.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stage import ROOT, Stage


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def _instructions(tmp: Path) -> int:
    """Instructions in every dump written while instrumentation was on."""
    total = 0
    for dump in tmp.glob("callgrind.out*"):
        for line in dump.read_text(errors="replace").splitlines():
            found = re.match(r"^totals:\s+(\d+)", line)
            if found:
                total += int(found.group(1))
                break
    return total


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind (with callgrind_control) is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="connector-instr-"))
    stage = Stage(tmp, args.concurrency)
    database = process = None
    try:
        stage.start_fakes()
        out = tmp / "callgrind.out"
        process, base, database = stage.start_connector(
            tmp, db=args.db, pg_url=args.pg_url,
            wrap=["valgrind", "--tool=callgrind", "--instr-atstart=no",
                  f"--callgrind-out-file={out}"],
            extra_env={"CONNECTOR_VENDOR_TIMEOUT": "60", "PYTHONHASHSEED": "0"})
        groups = {"connector": [process.pid], **stage.fake_pids}
        stage.e2e_phase("warm-up (not counted)", base, groups, rate=args.rate,
                        seconds=args.warmup / args.rate + 5, count=args.warmup)
        posts = stage.get(stage.receiver_url + "/_stats")["posts"]
        _control(process.pid, "--instr=on")
        started = time.monotonic()
        if args.send_only:  # the send path alone: no callbacks, so no reports either
            stage.callbacks(False)
            result = stage.send_phase("counted (sends only)", base, groups, rate=args.rate,
                                      seconds=args.messages / args.rate + 5,
                                      count=args.messages)
            result["custom_data_ok"] = None
        else:
            result = stage.e2e_phase("counted", base, groups, rate=args.rate,
                                     seconds=args.messages / args.rate + 5,
                                     count=args.messages)
        _control(process.pid, "--instr=off")
        _control(process.pid, "--dump")
        delivered = result["ok"] if args.send_only else result["check"]["delivered"]
        posts = stage.get(stage.receiver_url + "/_stats")["posts"] - posts
        time.sleep(1.0)
        total = _instructions(tmp)
        return {"db": args.db, "messages": delivered, "instructions": total,
                "per_message": round(total / max(1, delivered)),
                "seconds": round(time.monotonic() - started, 1),
                "reports_per_post": round(delivered / posts, 2) if posts else None,
                "custom_data_ok": result["custom_data_ok"]}
    finally:
        stage.stop_connector(process, database, timeout=60.0)
        if args.keep is not None:  # the dumps, for callgrind_annotate or bench/instr_objects.py
            args.keep.mkdir(parents=True, exist_ok=True)
            for dump in tmp.glob("callgrind.out*"):
                shutil.copy(dump, args.keep / dump.name)
        shutil.rmtree(tmp, ignore_errors=True)


class Baseline:
    """Commit `rev`'s own bench/instructions.py, run from a temporary worktree meanwhile."""

    def __init__(self, rev: str, args: argparse.Namespace) -> None:
        self.rev = rev
        self.tmp = Path(tempfile.mkdtemp(prefix="connector-against-"))
        self.tree = self.tmp / "tree"
        made = subprocess.run(["git", "worktree", "add", "--detach", str(self.tree), rev],
                              cwd=ROOT, text=True, capture_output=True, check=False)
        if made.returncode != 0:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise SystemExit(f"--against {rev}: {made.stderr.strip()}")
        command = [sys.executable, "bench/instructions.py", "--db", args.db,
                   "--messages", str(args.messages), "--warmup", str(args.warmup),
                   "--rate", str(args.rate), "--concurrency", str(args.concurrency),
                   "--pg-url", args.pg_url, *(["--send-only"] if args.send_only else [])]
        self.process = subprocess.Popen(command, cwd=self.tree, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def result(self) -> int:
        """Its instructions per message; exits with its output when it printed none."""
        try:
            output, _ = self.process.communicate(timeout=1800)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(self.tree)],
                           cwd=ROOT, capture_output=True, check=False)
            shutil.rmtree(self.tmp, ignore_errors=True)
        found = re.search(r"^\w+: ([\d,]+) instructions per", output, re.MULTILINE)
        if found is None:
            raise SystemExit(f"--against {self.rev} printed no figure:\n{output[-3000:]}")
        return int(found.group(1).replace(",", ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", default="sqlite", choices=("sqlite", "postgresql"))
    p.add_argument("--messages", type=int, default=400)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--rate", type=float, default=40.0, help="messages per second offered")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432")
    p.add_argument("--send-only", action="store_true",
                   help="count the sends alone (vendor callbacks off, so no reports)")
    p.add_argument("--keep", type=Path, help="copy the callgrind dumps into this folder")
    p.add_argument("--against", metavar="REV",
                   help="measure this commit too, at the same time, and print the ratio")
    args = p.parse_args()
    baseline = Baseline(args.against, args) if args.against else None
    result = measure(args)
    what = "send" if args.send_only else "message"
    print(f"\n{result['db']}: {result['per_message']:,} instructions per {what} "
          f"({result['messages']:,} messages, {result['instructions']:,} in all, "
          f"{result['seconds']} s, {result['reports_per_post']} reports per POST); "
          f"every custom_data back: {result['custom_data_ok']}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True, check=False).stdout.strip()
    print(f"commit {commit} (plus any uncommitted changes)")
    if baseline is not None:
        theirs = baseline.result()
        print(f"{args.against}: {theirs:,} instructions per {what}, measured at the same time; "
              f"this commit ÷ {args.against} = {result['per_message'] / theirs:.3f}")


if __name__ == "__main__":
    main()
