"""Where the connector's CPU goes: one end-to-end phase with py-spy sampling `connector serve`.

    .venv/bin/pip install py-spy   # once; not a project dependency
    .venv/bin/python bench/profile.py [--db sqlite|postgresql] [--seconds S] [--top N]

Starts the same stage as bench/run.py (vendor fake firing signed callbacks, report receiver,
`connector serve --workers 1`), warms up, then samples the server while it carries the
end-to-end load. Prints the functions with the most samples, inclusive and self, and keeps the
collapsed stacks (flamegraph input) in bench/results/profile-<db>.txt.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import tempfile
from pathlib import Path

import procs
from stage import HERE, PY, ROOT, Stage


def _frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rpartition(" ")
    return stack.split(";"), int(count)


def summarise(collapsed: Path, top: int) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        if not line.strip():
            continue
        frames, count = _frames(line)
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    out = [f"{total} samples", "", "inclusive %  function"]
    out += [f"{n / total:10.1%}  {f}" for f, n in inclusive.most_common(top)]
    out += ["", "self %       function"]
    out += [f"{n / total:10.1%}  {f}" for f, n in own.most_common(top)]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", default="sqlite", choices=("sqlite", "postgresql"))
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--top", type=int, default=45)
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432")
    args = p.parse_args()
    spy = shutil.which("py-spy", path=str(Path(PY).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    tmp = Path(tempfile.mkdtemp(prefix="connector-profile-"))
    stage = Stage(tmp, 64)
    database = None
    process = None
    try:
        stage.start_fakes()
        process, base, database = stage.start_connector(tmp, db=args.db, pg_url=args.pg_url)
        stage.callbacks(True)
        stage.load("warm-up", base + "/sms/send", seconds=30, count=2000)
        out = HERE / "results" / f"profile-{args.db}.txt"
        out.parent.mkdir(exist_ok=True)
        spy_proc = subprocess.Popen(
            [spy, "record", "--format", "raw", "--rate", "250", "--nonblocking",
             "--output", str(out), "--pid", str(process.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            groups = {"connector": procs.tree(process.pid), **stage.fake_pids}
            result = stage.e2e_phase("profiled end to end", base, groups, rate=None,
                                     seconds=args.seconds, count=args.seconds * 50_000)
        finally:
            spy_proc.send_signal(2)
            spy_proc.wait(30)
        connector = result["cpu"]["connector"]
        print(f"\n{result['rate_msg_s']} msg/s, connector {connector['us_per_msg']} µs/msg, "
              f"{connector['kernel_share']:.0%} of it in the kernel (sampling slows it)\n")
        print(summarise(out, args.top))
        print(f"\ncollapsed stacks: {out.relative_to(ROOT)}")
    finally:
        stage.stop_connector(process, database, timeout=20.0)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
