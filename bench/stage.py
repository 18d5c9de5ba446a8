"""The benchmark's stage: the fakes, servers started and checked, and one phase of load with
the CPU it cost each group of processes."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import common
import freshdb
import httpx
import procs
import report

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
DRAIN_STALL = 15.0  # an end-to-end drain with no new report this long is given up


class Stage:
    """The fakes (started once), the servers under test, and the load phases run against them."""

    def __init__(self, tmp: Path, concurrency: int) -> None:
        self.tmp = tmp
        self.concurrency = concurrency
        self.http = httpx.Client(timeout=10.0)
        self.run_id = uuid.uuid4().hex[:6]
        self.phases = 0
        self.notes: list[str] = []
        self.vendor_url = self.receiver_url = ""
        self.fake_pids: dict[str, list[int]] = {}

    def note(self, text: str) -> None:
        print(f"note: {text}", flush=True)
        self.notes.append(text)

    def get(self, url: str) -> dict[str, Any]:
        return dict(self.http.get(url).raise_for_status().json())

    def ready(self, url: str) -> bool:
        try:
            return self.http.get(url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    # ---- processes ----

    def start_fakes(self) -> None:
        for role in ("vendor", "receiver"):
            sock = procs.listening_socket()
            url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            log = self.tmp / f"{role}.log"
            process = procs.spawn([PY, str(HERE / "fakes.py"), role, "--fd", str(sock.fileno())],
                                  log=log, pass_fds=[sock.fileno()], cwd=ROOT)
            sock.close()
            if not procs.wait_until(lambda u=url: self.ready(u + "/_stats"), 30):
                raise RuntimeError(f"the {role} fake did not start: {tail(log)}")
            self.fake_pids["vendor_fake" if role == "vendor" else "receiver"] = [process.pid]
            if role == "vendor":
                self.vendor_url = url
            else:
                self.receiver_url = url

    def start_server(self, args: list[str], env: dict[str, str] | None, port: int, workers: int,
                     health: str, log: Path) -> subprocess.Popen[Any] | None:
        """A server and its workers, ready; None (stopped again) when it did not come up."""
        process = procs.spawn(args, env=env, log=log, cwd=ROOT)
        url = f"http://127.0.0.1:{port}{health}"

        def up() -> bool:
            if process.poll() is not None:
                return True
            workers_up = workers == 1 or sum(
                procs.role(pid, process.pid) == "worker" for pid in procs.tree(process.pid)
            ) >= workers
            return workers_up and all(self.ready(url) for _ in range(4 * workers))

        procs.wait_until(up, 45, interval=0.2)
        if process.poll() is not None or not self.ready(url):
            procs.stop(process)
            return None
        return process

    def start_connector(self, data: Path, *, db: str = "sqlite", pg_url: str = "",
                        wrap: list[str] | None = None, extra_env: dict[str, str] | None = None
                        ) -> tuple[subprocess.Popen[Any], str, str | None]:
        """`connector serve` (one worker, optionally under `wrap`, e.g. valgrind) on a free
        port with the fakes' settings: (process, base URL, the database created for it, to
        drop). Exits with the reason when it cannot start."""
        port = procs.free_port()
        env = {**os.environ, "CONNECTOR_PORT": str(port), "CONNECTOR_DATA_DIR": str(data),
               "CONNECTOR_ALLOW_PRIVATE_NETWORKS": "true", "CONNECTOR_ALLOW_HTTP": "true",
               "CONNECTOR_VENDOR_HOSTS": "127.0.0.1", "CONNECTOR_LOG_LEVEL": "warning",
               "CONNECTOR_REPORT_SECRET": common.REPORT_SECRET, **(extra_env or {})}
        database = None
        if db == "postgresql":
            database, why = freshdb.create(pg_url)
            if database is None:
                raise SystemExit(f"no PostgreSQL: {why}")
            env["CONNECTOR_DATABASE_URL"] = database
        log = data / "serve.log"
        process = self.start_server([*(wrap or []), PY, "-m", "connector.cli", "serve"], env,
                                    port, 1, "/readyz", log)
        if process is None:
            if database is not None:
                freshdb.drop(database)
            raise SystemExit(f"connector serve did not start: {tail(log)}")
        return process, f"http://127.0.0.1:{port}", database

    def stop_connector(self, process: subprocess.Popen[Any] | None, database: str | None,
                       timeout: float) -> None:
        """Undo start_connector and start_fakes: every child stopped, the database dropped."""
        if process is not None:
            procs.stop(process, timeout=timeout)
        self.close()
        procs.stop_all()
        if database is not None:
            freshdb.drop(database)

    def callbacks(self, on: bool) -> None:
        self.http.post(f"{self.vendor_url}/_control?callbacks={int(on)}").raise_for_status()

    # ---- load ----

    def load(self, prefix: str, url: str, *, kind: str = "send", rate: float | None = None,
             seconds: float, count: int, meter: procs.CpuMeter | None = None,
             during: Any = None) -> dict[str, Any]:
        """Run one generator process; the meter covers exactly its sending."""
        self.phases += 1  # request ids are `<run><phase>-<seq>-<µs>`: short, unique per phase
        spec = {"prefix": f"{self.run_id}p{self.phases}", "url": url, "kind": kind, "rate": rate,
                "seconds": seconds, "count": count, "concurrency": self.concurrency,
                "callback_url": f"{self.receiver_url}/reports/bench",
                "headers": (common.send_headers(self.vendor_url) if kind == "send" else
                            {"Authorization": common.BASIC,
                             "Content-Type": "application/x-www-form-urlencoded"})}
        process = procs.spawn([PY, str(HERE / "load.py"), json.dumps(spec)], pipes=True, cwd=ROOT)
        try:
            if _line(process, 30.0) != "ready":
                raise RuntimeError("the load generator did not start")
            if meter is not None:
                meter.start()
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
            deadline = time.monotonic() + seconds + 120
            while not _readable(process, 0.5):
                if during is not None:
                    during()
                if time.monotonic() > deadline or process.poll() not in (None, 0):
                    raise RuntimeError(f"the load generator failed or overran ({prefix})")
            result: dict[str, Any] = json.loads(_line(process, 5.0))
        finally:
            procs.stop(process)
        result |= {"prefix": spec["prefix"], "phase": prefix}
        return result

    def send_phase(self, name: str, base: str, groups: dict[str, list[int]], *,
                   rate: float | None = None, seconds: float, count: int) -> dict[str, Any]:
        meter = procs.CpuMeter(groups)
        result = self.load(name, base + "/sms/send", rate=rate, seconds=seconds, count=count,
                           meter=meter)
        result["cpu"] = _per_message(meter.stop(), result["ok"])
        result.pop("failed")
        print(f"  {name:<28} {report.phase_line(result)}", flush=True)
        return result

    def e2e_phase(self, name: str, base: str, groups: dict[str, list[int]], *,
                  rate: float | None, seconds: float, count: int, during: Any = None,
                  statements: Path | None = None) -> dict[str, Any]:
        """Sends with callbacks on, then waits until every report is back (or stalls).

        `statements`: the folder bench/hooks/sitecustomize.py counts store statements into."""
        self.callbacks(True)
        counted = statement_count(statements)
        meter = procs.CpuMeter(groups)
        result = self.load(name, base + "/sms/send", rate=rate, seconds=seconds, count=count,
                           meter=meter, during=during)
        result["drained"] = self.drain(result["prefix"], result["ok"], during)
        cpu = meter.stop()
        check = self.http.post(f"{self.receiver_url}/_check", json={
            "prefix": result["prefix"], "sent": result["sent"], "failed": result.pop("failed"),
        }).raise_for_status().json()
        span = max(1e-6, check["last_report"] - result["first_send_ts"])
        result |= {"check": check, "span_s": round(span, 3),
                   "vendor_fake": self.get(self.vendor_url + "/_stats"),
                   "rate_msg_s": round(check["delivered"] / span, 1) if check["delivered"] else 0,
                   "cpu": _per_message(cpu, check["delivered"]),
                   "statements_per_msg": None if statements is None or not check["delivered"]
                   else round((statement_count(statements) - counted) / check["delivered"], 2),
                   "custom_data_ok": (check["missing"] == 0 and check["accepted"] > 0
                                      and check["custom_data_mismatches"] == 0
                                      and check["auth_failures"] == 0 and result["drained"])}
        self.callbacks(False)
        print(f"  {name:<28} {report.e2e_line(result)}", flush=True)
        return result

    def drain(self, prefix: str, accepted: int, during: Any = None) -> bool:
        seen, changed = -1, time.monotonic()
        hard = time.monotonic() + 120 + accepted / 50
        while time.monotonic() < hard:
            track = self.get(self.receiver_url + "/_stats")["tracks"].get(prefix, {})
            delivered = int(track.get("delivered", 0))
            if delivered >= accepted and self.get(self.vendor_url + "/_stats")["pending"] == 0:
                return True
            if delivered != seen:
                seen, changed = delivered, time.monotonic()
            elif time.monotonic() - changed > DRAIN_STALL:
                break
            if during is not None:
                during()
            time.sleep(0.1)
        self.note(f"{prefix}: reports stopped arriving ({seen} of {accepted})")
        return False

    def close(self) -> None:
        self.http.close()


def statement_count(folder: Path | None) -> int:
    """Store statements the connector's processes have run so far (see bench/hooks)."""
    if folder is None:
        return 0
    time.sleep(0.5)  # the counters are written every 0.2 s
    return sum(int(f.read_text() or 0) for f in folder.iterdir() if f.suffix != ".tmp")


def _per_message(cpu: dict[str, Any], n: int) -> dict[str, Any]:
    """Add µs per message for each group and each connector process."""
    for group in cpu.values():
        if isinstance(group, dict):
            group["us_per_msg"] = round(group["cpu_s"] / n * 1e6, 1) if n else None
            group["per_process_us_per_msg"] = {
                pid: round(s / n * 1e6, 1) if n else None
                for pid, s in group["per_process"].items()}
    return cpu


def _readable(process: subprocess.Popen[Any], timeout: float) -> bool:
    assert process.stdout is not None
    return bool(select.select([process.stdout], [], [], timeout)[0])


def _line(process: subprocess.Popen[Any], timeout: float) -> str:
    if not _readable(process, timeout):
        raise RuntimeError("no answer from the load generator")
    assert process.stdout is not None
    return str(process.stdout.readline()).strip()


def tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].strip() or "(empty log)"
    except OSError:
        return "(no log)"
