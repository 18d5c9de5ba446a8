"""The connector's benchmark, one command: send path against a hand-written baseline, the
end-to-end pipeline, CPU per message per process, and memory over a long run.

    .venv/bin/python bench/run.py [--quick] [--seconds S] [--workers 1,2]
                                  [--db sqlite,postgresql] [--long N] [--json PATH]

Everything runs on 127.0.0.1 in child processes this script stops on exit (also on Ctrl-C);
each phase is bounded by a count and a time. Prints a table and writes JSON
(bench/results/latest.json by default).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

import common
import freshdb
import httpx
import kannel
import procs
import report
from stage import HERE, PY, ROOT, Stage, tail

PACKAGES = ("starlette", "uvicorn", "uvloop", "httptools", "aiohttp", "msgspec", "httpx")


def _interrupted(signum: int, frame: Any) -> NoReturn:
    raise KeyboardInterrupt  # SIGTERM too: the finally clauses stop every child


class Bench:
    """The plan: vendor alone, then per worker count the baseline and each database."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.stage = Stage(tmp, args.concurrency)

    def vendor_alone(self, rate: float) -> dict[str, Any]:
        self.stage.callbacks(False)
        url = self.stage.vendor_url + common.MESSAGES_PATH
        result = self.stage.load(f"vendor-{rate:g}", url, kind="vendor", rate=rate,
                                 seconds=self.args.seconds, count=10**9)
        result.pop("failed")
        print(f"  {'vendor fake alone @' + format(rate, 'g') + '/s':<28} "
              f"{report.phase_line(result)}", flush=True)
        return result

    def baseline(self, workers: int) -> dict[str, Any]:
        port = procs.free_port()
        log = self.tmp / f"baseline-w{workers}.log"
        process = self.stage.start_server(
            [PY, str(HERE / "baseline.py"), "--port", str(port), "--workers", str(workers),
             "--db", str(self.tmp / f"baseline-w{workers}.db")],
            None, port, workers, "/healthz", log)
        if process is None:
            raise RuntimeError(f"the baseline did not start: {tail(log)}")
        base = f"http://127.0.0.1:{port}"
        try:
            self.stage.callbacks(False)
            groups = {"server": procs.tree(process.pid), **self.stage.fake_pids}
            self.stage.load(f"baseline w{workers} warm-up", base + "/sms/send", seconds=30,
                            count=self.args.warmup)
            send = self.stage.send_phase(f"baseline w{workers} send", base, groups,
                                         seconds=self.args.seconds,
                                         count=self.args.seconds * 50_000)
        finally:
            procs.stop(process)
        return {"workers": workers, "send": send}

    def connector(self, db: str, workers: int, baseline: dict[str, Any]) -> dict[str, Any]:
        name = f"{db} w{workers}"
        run: dict[str, Any] = {"name": name, "db": db, "workers": workers, "status": "ok"}
        data = Path(tempfile.mkdtemp(prefix=f"{db}-w{workers}-", dir=self.tmp))
        port = procs.free_port()
        env = {**os.environ, "CONNECTOR_PORT": str(port), "CONNECTOR_HOST": "127.0.0.1",
               "CONNECTOR_DATA_DIR": str(data), "CONNECTOR_ALLOW_PRIVATE_NETWORKS": "true",
               "CONNECTOR_ALLOW_HTTP": "true", "CONNECTOR_VENDOR_HOSTS": "127.0.0.1",
               "CONNECTOR_REPORT_SECRET": common.REPORT_SECRET,
               "CONNECTOR_LOG_LEVEL": self.args.log_level,
               # count store statements per message (bench/hooks/sitecustomize.py)
               "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE / "hooks"),
                                                           os.environ.get("PYTHONPATH")])),
               "BENCH_STATEMENTS_DIR": str(data / "statements")}
        (data / "statements").mkdir()
        env.pop("PORT", None)
        database = None
        if db == "postgresql":
            database, why = freshdb.create(self.args.pg_url)
            if database is None:
                return self.skip(run, f"PostgreSQL runs skipped: {why}")
            env["CONNECTOR_DATABASE_URL"] = database
        log = data / "serve.log"
        try:
            process = self.stage.start_server(
                [PY, "-m", "connector.cli", "serve", "--workers", str(workers)],
                env, port, workers, "/readyz", log)
            if process is None:
                if db == "postgresql":
                    return self.skip(run, "PostgreSQL runs skipped: `connector serve` did not "
                                          f"start with {database}: {tail(log, 300)}")
                run |= {"status": "failed", "note": tail(log)}
                print(f"  {name}: connector serve did not start: {tail(log)}", flush=True)
                return run
            try:
                run |= self.measure(name, f"http://127.0.0.1:{port}", process.pid, baseline,
                                    data / "statements", database)
            except (RuntimeError, httpx.HTTPError) as exc:
                run |= {"status": "failed", "note": f"{exc}; connector log: {tail(log)}"}
                print(f"  {name}: failed: {exc}", flush=True)
            finally:
                procs.stop(process, timeout=20.0)
        finally:
            if database is not None:
                freshdb.drop(database)
        return run

    def skip(self, run: dict[str, Any], why: str) -> dict[str, Any]:
        self.stage.note(why)
        return run | {"status": "skipped", "note": why}

    def measure(self, name: str, base: str, serve: int, baseline: dict[str, Any],
                statements: Path, database: str | None) -> dict[str, Any]:
        a, stage = self.args, self.stage
        groups = {"connector": procs.tree(serve), **stage.fake_pids}
        roles = {str(pid): f"{procs.role(pid, serve)} {pid}" for pid in groups["connector"]}
        stage.callbacks(False)
        stage.load(f"{name} warm-up", base + "/sms/send", seconds=30, count=a.warmup)
        if database is not None:  # after the warm-up, every pooled connection is open
            groups["postgres"] = freshdb.server_pids(database)
        out: dict[str, Any] = {"processes": roles}
        saturate = a.seconds * 50_000  # the count bound; time ends these phases
        out["send"] = stage.send_phase(f"{name} send", base, groups, seconds=a.seconds,
                                       count=saturate)
        out["rates"] = {f"{r:g}": stage.send_phase(f"{name} send @{r:g}/s", base, groups,
                                                   rate=r, seconds=a.seconds, count=saturate)
                        for r in a.rates}
        out["e2e"] = stage.e2e_phase(f"{name} end to end", base, groups, rate=None,
                                     seconds=a.seconds, count=saturate, statements=statements)
        out["soak"] = self.soak(name, base, groups, out["e2e"]["rate_msg_s"])
        out["custom_data_ok"] = out["e2e"]["custom_data_ok"] and out["soak"]["custom_data_ok"]
        ratio = out["send"]["rps"] / max(1e-9, baseline["send"]["rps"])
        out["ratio_to_baseline"] = round(ratio, 3)
        return out

    def soak(self, name: str, base: str, groups: dict[str, list[int]], e2e_rate: float
             ) -> dict[str, Any]:
        """--long N messages at 80% of the measured end-to-end rate: memory, not speed."""
        rate = max(50.0, 0.8 * e2e_rate)
        pids = groups["connector"]
        start = sum(procs.memory_kb(pid)[0] for pid in pids)
        peak = [start]

        def sample() -> None:
            peak[0] = max(peak[0], sum(procs.memory_kb(pid)[0] for pid in pids))

        result = self.stage.e2e_phase(f"{name} long run ({self.args.long:,})", base, groups,
                                      rate=rate, seconds=self.args.long / rate + 5,
                                      count=self.args.long, during=sample)
        sample()
        end = sum(procs.memory_kb(pid)[0] for pid in pids)
        result["rss"] = {"start_kb": start, "end_kb": end, "peak_kb": peak[0],
                         "peak_hwm_kb": sum(procs.memory_kb(pid)[1] for pid in pids),
                         "growth_pct": round((end / start - 1) * 100, 2) if start else 0.0,
                         "rate": round(rate, 1)}
        return result

    def run(self) -> dict[str, Any]:
        a = self.args
        started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        load_before = os.getloadavg()
        self.stage.note(f"CONNECTOR_LOG_LEVEL={a.log_level}: the logging level changes these "
                        "results (info writes a line per request, callback and report)")
        if load_before[0] > 0.5:
            self.stage.note(f"load average {load_before[0]:.2f} before the run: other work "
                            "shares these cores, so the numbers are noisy")
        self.stage.start_fakes()
        vendor = {f"{r:g}": self.vendor_alone(r) for r in a.rates}
        baselines: dict[str, Any] = {}
        runs = []
        for workers in a.workers:
            baselines[str(workers)] = self.baseline(workers)
            for db in a.db:
                runs.append(self.connector(db, workers, baselines[str(workers)]))
        peer = (kannel.measure(a.seconds, a.kannel_reps, a.concurrency) if a.kannel
                else {"status": "skipped", "note": "run with --kannel"})
        if peer["status"] != "ok":
            self.stage.note(f"Kannel: {peer['status']}: {peer['note']}")
        result = {
            "started": started,
            "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(), "commit": _commit(),
                        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                        "packages": {p: _version(p) for p in PACKAGES}},
            "params": {k: getattr(a, k) for k in ("quick", "seconds", "workers", "db", "long",
                                                  "rates", "concurrency", "warmup", "log_level")}
            | {"body_bytes": len(common.send_body(common.request_id("x" * 9, 0, 10**15), 0,
                                                  self.stage.receiver_url + "/reports/bench"))},
            "notes": self.stage.notes, "vendor_alone": vendor, "baseline": baselines, "runs": runs,
            "kannel": peer,
            "all_custom_data_back": bool(runs) and all(
                r.get("custom_data_ok", False) for r in runs if r["status"] == "ok"),
        }
        result["targets"] = report.targets(result)
        return result

    def close(self) -> None:
        self.stage.close()


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, timeout=5,
                             capture_output=True, text=True, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _csv(kind: Any) -> Any:
    return lambda raw: [kind(part) for part in raw.split(",") if part.strip()]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short phases (for a smoke test)")
    p.add_argument("--seconds", type=int, help="length of each phase (default 10, quick 3)")
    p.add_argument("--workers", type=_csv(int), default=[1, 2], help="e.g. 1,2")
    p.add_argument("--db", type=_csv(str), default=["sqlite", "postgresql"],
                   help="sqlite,postgresql (PostgreSQL is skipped when it cannot run)")
    p.add_argument("--long", type=int, help="messages in the memory run (default 20000, "
                                            "quick 1000; e.g. 1000000)")
    p.add_argument("--rates", type=_csv(float), default=[200.0], help="fixed rates, req/s")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight at saturation")
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"),
                   help="CONNECTOR_LOG_LEVEL for the runs")
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432",
                   help="server for the PostgreSQL runs (a fresh database is made on it)")
    p.add_argument("--kannel", action="store_true",
                   help="also run ../shared/bench/peer_kannel.sh and print connector ÷ Kannel")
    p.add_argument("--kannel-reps", type=int, default=3)
    p.add_argument("--json", type=Path, default=HERE / "results" / "latest.json")
    args = p.parse_args(argv)
    args.seconds = args.seconds or (3 if args.quick else 10)
    args.long = args.long or (1000 if args.quick else 20_000)
    args.warmup = 300 if args.quick else 3000
    bad = set(args.db) - {"sqlite", "postgresql"}
    if bad or not args.workers or min(args.workers) < 1 or args.long < 1:
        p.error(f"unknown --db {', '.join(sorted(bad))}" if bad else "bad --workers or --long")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    tmp = Path(tempfile.mkdtemp(prefix="connector-bench-"))
    bench = Bench(args, tmp)
    try:
        result = bench.run()
    except KeyboardInterrupt:
        print("\ninterrupted: every process the benchmark started is being stopped",
              file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        bench.close()
        shutil.rmtree(tmp, ignore_errors=True)
    report.print_report(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    failed = any(r["status"] == "failed" for r in result["runs"])
    return 1 if failed or not result["all_custom_data_back"] else 0


if __name__ == "__main__":
    sys.exit(main())
