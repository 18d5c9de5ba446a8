"""`connector demo` shows a newcomer the whole round trip."""

from __future__ import annotations

import subprocess
import sys


def test_demo_prints_the_lifecycle_and_the_report() -> None:
    done = subprocess.run([sys.executable, "-m", "connector.cli", "demo"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for step in ("POST http://127.0.0.1", "answered 200", "status callback 'sent' -> HTTP 204",
                 "status callback 'delivered' -> HTTP 204", "report received (JWT ok"):
        assert step in out, step
    assert '"custom_data": "campaign=42"' in out
    assert '"status": "delivered"' in out
