"""Child processes the benchmark starts (and always stops), and what /proc says they cost."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

TICK = 1.0 / os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # resolved here: the child only calls it
_started: list[subprocess.Popen[Any]] = []


def _die_with_parent() -> None:
    # Even a SIGKILLed benchmark takes its servers down with it.
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(args: Sequence[str], *, env: dict[str, str] | None = None, log: Path | None = None,
          pipes: bool = False, pass_fds: Iterable[int] = (), cwd: Path | None = None
          ) -> subprocess.Popen[Any]:
    """Start a child in its own process group (so stop() reaches its workers too)."""
    out: IO[bytes] | int | None = subprocess.PIPE if pipes else None
    handle = log.open("ab") if log is not None else None
    try:
        process = subprocess.Popen(
            list(args), env=env, stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=handle or out, stderr=handle or None, start_new_session=True,
            preexec_fn=_die_with_parent, pass_fds=tuple(pass_fds), text=pipes, cwd=cwd,
        )
    finally:
        if handle is not None:
            handle.close()
    _started.append(process)
    return process


def stop(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM the child's process group, SIGKILL it if it lingers."""
    group = process.pid  # start_new_session: the child leads its own group
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)  # workers that outlived their supervisor
    process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()
    if process in _started:
        _started.remove(process)


def stop_all() -> None:
    for process in reversed(list(_started)):
        stop(process, timeout=5.0)


def listening_socket() -> socket.socket:
    """A bound, listening socket on loopback for a child to inherit: no free-port race."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=2048)
    sock.set_inheritable(True)
    return sock


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # the name may hold spaces and parentheses


def tree(root: int) -> list[int]:
    """`root` and every live descendant (uvicorn's workers are children of `connector serve`)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if _stat(pid) is not None:
            found.append(pid)
        todo.extend(parents.get(pid, ()))
    return sorted(found)


def cpu_seconds(pid: int) -> float:
    """utime + stime so far, in seconds (0 once the process is gone)."""
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) * TICK


def kernel_seconds(pid: int) -> float:
    """stime so far: the system calls and, on loopback, the TCP stack working for it."""
    fields = _stat(pid)
    return 0.0 if fields is None else int(fields[12]) * TICK


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM): resident now and its peak, in kB."""
    rss = hwm = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def role(pid: int, root: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    if pid == root:
        return "serve"
    if "resource_tracker" in cmd:
        return "resource_tracker"
    return "worker" if "multiprocessing" in cmd else cmd[:40]


class CpuMeter:
    """CPU used by named groups of processes between start() and stop()."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self._before: dict[int, float] = {}
        self._kernel: dict[int, float] = {}
        self._started = 0.0

    def start(self) -> None:
        self._before = {pid: cpu_seconds(pid) for pids in self.groups.values() for pid in pids}
        self._kernel = {pid: kernel_seconds(pid) for pids in self.groups.values()
                        for pid in pids}
        self._started = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self._started
        out: dict[str, Any] = {"wall_s": round(wall, 3)}
        for name, pids in self.groups.items():
            per = {pid: cpu_seconds(pid) - self._before.get(pid, 0.0) for pid in pids}
            total = sum(per.values())
            kernel = sum(kernel_seconds(pid) - self._kernel.get(pid, 0.0) for pid in pids)
            out[name] = {"cpu_s": round(total, 3), "cores": round(total / wall, 3),
                         "kernel_share": round(kernel / total, 3) if total else None,
                         "per_process": {str(pid): round(s, 3) for pid, s in per.items()}}
        return out


def wait_until(check: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return False
