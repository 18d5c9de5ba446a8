"""The fault suite's machinery: child processes (always stopped), the fakes, `connector serve`
processes, fresh PostgreSQL databases, a platform that retries, and the result table."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import asyncpg
import shared

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
# The connector under test: this checkout, or another copy of it (to try a fix, or to run
# against a frozen snapshot while the working tree changes).
CONNECTOR_DIR = Path(os.environ.get("FAULTS_CONNECTOR_DIR") or ROOT).resolve()
PG_SERVER = os.environ.get("CONNECTOR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
RETRYABLE = frozenset({429, 502, 503, 504})

_LIBC = ctypes.CDLL(None, use_errno=True)
_started: list[subprocess.Popen[Any]] = []


def _die_with_parent() -> None:
    _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: a killed suite takes its children along


def spawn(args: list[str], env: dict[str, str] | None, log: Path | None,
          stdout_pipe: bool = False) -> subprocess.Popen[Any]:
    handle: IO[bytes] | None = log.open("ab") if log is not None else None
    try:
        process = subprocess.Popen(
            args, env=env, cwd=CONNECTOR_DIR, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else handle, stderr=handle,
            start_new_session=True, preexec_fn=_die_with_parent)
    finally:
        if handle is not None:
            handle.close()
    _started.append(process)
    return process


def stop(process: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0
         ) -> None:
    """Signal the child's process group (it leads one), SIGKILL it if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    if process.stdout is not None:
        process.stdout.close()
    if process in _started:
        _started.remove(process)


def stop_all() -> None:
    for process in reversed(list(_started)):
        stop(process, timeout=5.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].strip() or "(empty log)"
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------- the fakes


class Fakes:
    """faults/fakes.py in its own process: vendor, receiver and control ports."""

    def __init__(self, tmp: Path) -> None:
        self.log = tmp / "fakes.log"
        self.process = spawn([PY, str(HERE / "fakes.py")], None, self.log, stdout_pipe=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fakes did not start: {tail(self.log)}")
        ports = json.loads(line)
        self.vendor_url = f"http://127.0.0.1:{ports['vendor']}"
        self.receiver_url = f"http://127.0.0.1:{ports['receiver']}"
        self.control_url = f"http://127.0.0.1:{ports['control']}"
        self.session: aiohttp.ClientSession | None = None

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        if self.session is None:
            self.session = aiohttp.ClientSession(trust_env=False)
        async with self.session.request(method, self.control_url + path, json=body,
                                        timeout=aiohttp.ClientTimeout(total=30)) as answer:
            data = await answer.json(content_type=None)
            if answer.status != 200:
                raise RuntimeError(f"fakes {path}: {answer.status} {data}")
            return dict(data)

    async def vendor(self, **ask: Any) -> dict[str, Any]:
        return await self._call("POST", "/_vendor", ask)

    async def receiver(self, **ask: Any) -> dict[str, Any]:
        return await self._call("POST", "/_receiver", ask)

    async def stats(self) -> dict[str, Any]:
        return await self._call("GET", "/_stats")

    async def state(self) -> dict[str, Any]:
        return await self._call("GET", "/_state")

    async def reset(self) -> None:
        await self.vendor(reset=True, plan={}, delay=0.0, slow=0.3, hold=2.0,
                          callback_delay=0.0, callback_retry_for=180.0, listening=True)
        await self.receiver(reset=True, mode="ok", retry_after=None)

    def report_url(self, name: str) -> str:
        return f"{self.receiver_url}/reports/{name}"

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        stop(self.process)


# ---------------------------------------------------------------- connector processes


class Connector:
    """One `connector serve` process; restartable on the same port after a kill."""

    def __init__(self, name: str, tmp: Path, env: dict[str, str], command: str = "serve"
                 ) -> None:
        self.name = name
        self.data_dir = tmp / name
        self.port = free_port()
        self.command = command
        self.log = tmp / f"{name}.log"
        self.env = {**os.environ,
                    "CONNECTOR_DATA_DIR": str(self.data_dir),
                    "CONNECTOR_PORT": str(self.port),
                    "CONNECTOR_ALLOW_PRIVATE_NETWORKS": "true",
                    "CONNECTOR_ALLOW_HTTP": "true",
                    "CONNECTOR_VENDOR_HOSTS": "127.0.0.1",
                    "CONNECTOR_SECRET_KEY": shared.SECRET_KEY,
                    "CONNECTOR_REPORT_SECRET": shared.REPORT_SECRET,
                    "CONNECTOR_ADMIN_KEY": shared.ADMIN_KEY,
                    "CONNECTOR_REPORT_LINGER": "0.01",
                    "CONNECTOR_LOG_FORMAT": "json",
                    "CONNECTOR_LOG_LEVEL": os.environ.get("FAULTS_LOG_LEVEL", "warning"),
                    **env}
        self.env.pop("PORT", None)
        self.process: subprocess.Popen[Any] | None = None
        self.starts = 0
        self.kills = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, within: float = 30.0) -> Connector:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as log:
            log.write(f"--- start {self.starts} at {time.time():.3f}\n")
        self.process = spawn([PY, "-m", "connector.cli", self.command], self.env, self.log)
        self.starts += 1
        if self.command == "serve":
            await self.wait_ready(within)
        return self

    async def wait_ready(self, within: float) -> None:
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession(trust_env=False) as session:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: {tail(self.log)}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(self.url + "/readyz",
                                           timeout=aiohttp.ClientTimeout(total=1)) as answer:
                        if answer.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready in {within}s: {tail(self.log)}")

    def kill(self) -> None:
        """kill -9: no shutdown, no lease release, nothing flushed."""
        if self.process is not None:
            stop(self.process, signal.SIGKILL)
            self.process = None
            self.kills += 1

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, signal.SIGTERM, timeout=20.0)
            self.process = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def operator(self, session: aiohttp.ClientSession, key: str) -> dict[str, Any] | None:
        async with session.get(f"{self.url}/api/v1/messages/{key}",
                               headers={"Auth-Key": shared.ADMIN_KEY},
                               timeout=aiohttp.ClientTimeout(total=10)) as answer:
            if answer.status == 404:
                return None
            answer.raise_for_status()
            return dict(await answer.json())

    async def metric(self, session: aiohttp.ClientSession, prefix: str) -> float:
        """Sum of every sample of the metric lines starting with `prefix`."""
        async with session.get(self.url + "/metrics",
                               timeout=aiohttp.ClientTimeout(total=10)) as answer:
            text = await answer.text()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(prefix))


# ---------------------------------------------------------------- PostgreSQL


async def pg_available() -> str | None:
    """None when the server answers, else why not."""
    try:
        conn = await asyncpg.connect(f"{PG_SERVER}/postgres", timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"PostgreSQL at {PG_SERVER} does not answer: {exc}"
    await conn.close()
    return None


@contextlib.asynccontextmanager
async def fresh_database() -> Any:
    """The URL of a new empty database, dropped afterwards (with connections left)."""
    name = f"connector_faults_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(f"{PG_SERVER}/postgres", timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        for _ in range(20):  # the server may be restarting (the database scenario)
            try:
                admin = await asyncpg.connect(f"{PG_SERVER}/postgres", timeout=5)
                try:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                finally:
                    await admin.close()
                break
            except (OSError, asyncpg.PostgresError):
                await asyncio.sleep(0.5)


async def outbox_probe(dsn: str) -> dict[str, int]:
    """What the PostgreSQL outbox holds: pending reports, those leased now, and those due
    for more than 5 s that no dispatcher has leased (none should be, while one runs)."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        now = time.time()
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE state = 'pending'), "
            "count(*) FILTER (WHERE state = 'pending' AND lease_until > $1), "
            "count(*) FILTER (WHERE state = 'pending' AND lease_until <= $1 "
            "AND next_at < $1 - 5), count(*) FILTER (WHERE state = 'dead') FROM outbox", now)
    finally:
        await conn.close()
    assert row is not None
    return {"pending": row[0], "leased": row[1], "overdue_unleased": row[2], "dead": row[3]}


_pg_stopped_by_us = False


def pg_ctl(action: str) -> tuple[int, str]:
    """`pg_ctlcluster <version> main stop|start` on this machine (root)."""
    global _pg_stopped_by_us
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    tool = shutil.which("pg_ctlcluster")
    if not versions or tool is None:
        return 127, "pg_ctlcluster or /etc/postgresql is missing"
    if action == "stop":
        _pg_stopped_by_us = True
    done = subprocess.run([tool, "--skip-systemctl-redirect", versions[-1], "main", action],
                          capture_output=True, text=True, timeout=60, check=False)
    if action == "start" and done.returncode == 0:
        _pg_stopped_by_us = False
    return done.returncode, (done.stdout + done.stderr).strip()


def restart_pg_if_we_stopped_it() -> None:
    """Safety net for an interrupted run: never leave the local cluster down."""
    if _pg_stopped_by_us:
        code, out = pg_ctl("start")
        print(f"PostgreSQL started again after an interrupted run: {code} {out}", flush=True)


# ---------------------------------------------------------------- the platform


@dataclass
class Attempt:
    t: float  # wall time the answer came
    target: str
    status: int | str  # HTTP status, or the name of a transport error
    body: bytes = b""
    retry_after: str | None = None


@dataclass
class Send:
    """One request_id's life at the platform: every attempt, and how it ended."""

    rid: str
    attempts: list[Attempt] = field(default_factory=list)
    final: int | str | None = None

    @property
    def acked(self) -> bool:
        return self.final == 200


def send_body(rid: str, seq: int, callback_url: str) -> bytes:
    return json.dumps({"sender": "FaultCo", "recipient": shared.recipient(seq),
                       "message": shared.text(rid), "request_id": rid,
                       "custom_data": shared.custom_data(rid), "callback_url": callback_url,
                       "metadata": {"suite": "faults"}}).encode()


class Platform:
    """Bloomreach-style caller: POST /sms/send; retries 429 and 5xx (and a connector that
    does not answer) with backoff until 200 or a permanent status, within bounds."""

    def __init__(self, vendor_url: str, *, timeout: float = 20.0) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512, force_close=False), trust_env=False)
        self.headers = {"Chan-Account-Sid": shared.SID, "Chan-Auth-Token": shared.TOKEN,
                        "Chan-Base-Url": vendor_url, "Content-Type": "application/json"}
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def post(self, base: str, body: bytes) -> Attempt:
        try:
            async with self.session.post(base + "/sms/send", data=body, headers=self.headers,
                                         timeout=self.timeout) as answer:
                raw = await answer.read()
                return Attempt(time.time(), base, answer.status, raw,
                               answer.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Attempt(time.time(), base, type(exc).__name__)

    async def send(self, rid: str, seq: int, targets: list[Connector], callback_url: str, *,
                   retry: bool = True, max_attempts: int = 12, budget: float = 30.0,
                   record: Send | None = None) -> Send:
        """Send one request_id, retrying like the platform. A 502 `ambiguous_outcome` that
        comes back twice byte for byte is the connector's final word (at_most_once)."""
        body = send_body(rid, seq, callback_url)
        life = record or Send(rid)
        start = random.randrange(len(targets))
        deadline = time.monotonic() + budget
        pause = 0.1
        for n in range(max_attempts):
            target = targets[(start + n) % len(targets)]  # a load balancer's round robin
            attempt = await self.post(target.url, body)
            life.attempts.append(attempt)
            status = attempt.status
            if status == 200 or (isinstance(status, int) and status not in RETRYABLE
                                 and status < 500):
                life.final = status
                return life
            if not retry:
                life.final = status
                return life
            if (status == 502 and b"ambiguous_outcome" in attempt.body
                    and sum(a.body == attempt.body for a in life.attempts) >= 2):
                life.final = status
                return life
            wait = pause
            if attempt.retry_after is not None:
                with contextlib.suppress(ValueError):
                    wait = max(wait, float(attempt.retry_after))
            pause = min(pause * 2, 1.0)
            if time.monotonic() + wait > deadline:
                break
            await asyncio.sleep(wait)
        life.final = life.attempts[-1].status
        return life

    async def close(self) -> None:
        await self.session.close()


async def bounded_gather(jobs: list[Any], concurrency: int) -> list[Any]:
    """Run coroutine factories with at most `concurrency` in flight; results in order."""
    results: list[Any] = [None] * len(jobs)
    position = 0

    async def worker() -> None:
        nonlocal position
        while position < len(jobs):
            index = position
            position += 1
            results[index] = await jobs[index]()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(jobs)) or 1)))
    return results


# ---------------------------------------------------------------- what came back


class Reports:
    """The receiver's record, by request_id: distinct event_ids, deliveries, refusals."""

    def __init__(self, posts: list[dict[str, Any]], names: set[str] | None = None) -> None:
        self.events: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        self.deliveries: Counter[str] = Counter()  # event_id -> times accepted (2xx)
        self.first_ok: dict[str, float] = {}  # event_id -> first 2xx time
        self.error_codes: dict[str, str | None] = {}
        self.mismatches = 0
        self.refused_posts = 0
        for post in posts:
            if names is not None and post["name"] not in names:
                continue
            if post["status"] != 200:
                self.refused_posts += 1
                continue
            for event_id, rid, _message_id, status, error_code, ok in post["events"]:
                self.events[rid][status].add(event_id)
                self.deliveries[event_id] += 1
                self.first_ok.setdefault(event_id, post["t"])
                self.error_codes[event_id] = error_code
                self.mismatches += not ok

    def delivered(self, rid: str) -> bool:
        return bool(self.events.get(rid, {}).get("delivered"))

    def status_of(self, rid: str) -> set[str]:
        return set(self.events.get(rid, {}))

    def split_events(self) -> int:
        """(rid, status) pairs that came with more than one event_id: a real duplicate."""
        return sum(len(ids) > 1 for by in self.events.values() for ids in by.values())

    def redeliveries(self) -> int:
        """Deliveries of an event_id already delivered once (allowed: at least once)."""
        return sum(n - 1 for n in self.deliveries.values())


def vendor_counts(calls: list[dict[str, Any]]) -> tuple[Counter[str], Counter[str]]:
    """(create calls per rid, messages created per rid) at the vendor."""
    calls_by, created_by = Counter[str](), Counter[str]()
    for call in calls:
        calls_by[call["rid"]] += 1
        created_by[call["rid"]] += bool(call["created"])
    return calls_by, created_by


async def wait_for(check: Any, within: float, interval: float = 0.25) -> bool:
    """Poll an async predicate until true or `within` seconds pass."""
    deadline = time.monotonic() + within
    while True:
        if await check():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)


# ---------------------------------------------------------------- results


class Result:
    """A scenario's table: what it did and what it counted, each count with its expectation."""

    def __init__(self, name: str, title: str, mode: str) -> None:
        self.name, self.title, self.mode = name, title, mode
        self.rows: list[tuple[str, Any, str, bool | None]] = []
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.started = time.monotonic()
        self.seconds = 0.0
        self.figures: dict[str, Any] = {}

    def did(self, what: str, value: Any) -> None:
        self.rows.append((what, value, "", None))
        self.figures[what] = value

    def count(self, what: str, value: Any, expected: str, ok: bool) -> None:
        self.rows.append((what, value, expected, ok))
        self.figures[what] = value
        if not ok:
            self.failures.append(f"{what}: counted {value}, expected {expected}")

    def note(self, text: str) -> None:
        self.notes.append(text)

    def fail(self, text: str) -> None:
        self.failures.append(text)

    @property
    def ok(self) -> bool:
        return not self.failures

    def finish(self) -> Result:
        self.seconds = round(time.monotonic() - self.started, 1)
        return self

    def table(self) -> str:
        width = min(max([len(r[0]) for r in self.rows] + [30]), 66)
        vals = [_fmt(r[1]) for r in self.rows]
        vwidth = min(max([len(v) for v in vals] + [7]), 24)
        lines = [f"== {self.name}: {self.title} [{self.mode}] "
                 f"{'PASS' if self.ok else 'FAIL'} in {self.seconds:.1f} s"]
        lines.append(f"   {'':{width}}  {'counted':>{vwidth}}  expected")
        for (what, _value, expected, ok), shown in zip(self.rows, vals, strict=True):
            mark = "  " if ok is None else ("ok" if ok else "!!")
            lines.append(f"{mark} {what:{width}}  {shown:>{vwidth}}  {expected}")
        for note in self.notes:
            lines.append(f"   note: {note}")
        for failure in self.failures:
            lines.append(f"!! FAIL: {failure}")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "mode": self.mode, "ok": self.ok,
                "seconds": self.seconds, "failures": self.failures, "notes": self.notes,
                "rows": [{"what": w, "counted": _plain(v), "expected": e, "ok": o}
                         for w, v, e, o in self.rows]}


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}:{v}" for k, v in value.items()) or "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    return value


def statuses(sends: list[Send]) -> Counter[str]:
    """Every answer the platform saw, by status (transport errors by name)."""
    return Counter(str(a.status) for s in sends for a in s.attempts)
