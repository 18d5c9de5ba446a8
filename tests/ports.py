"""Ports for the servers a test starts as child processes, which must bind a number given
them in advance.

A port the kernel hands out for `bind(0)` lies in the ephemeral range, the same range it
draws from for every outgoing connection, so between choosing it and the child's bind a
client socket on this machine can take it (a flake CI met: "address already in use"). The
ports here lie below that range, where only another listener can be: the one run in this
process's test session that happened to choose the same number, which the caller's retry
covers."""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 10_000
# Not the module's shared generator: a test tool that seeds it (hypothesis does, within a
# test) would have every worker choose the same numbers.
_CHOOSE = random.SystemRandom()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def listen_port() -> int:
    """A port below the ephemeral range that nothing listens on now."""
    highest = max(LOWEST + 1_000, _ephemeral_start()) - 1
    for _ in range(100):
        port = _CHOOSE.randint(LOWEST, highest)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {LOWEST}-{highest}")
