#!/usr/bin/env bash
# Set up (first run), check style and types, and run the whole test suite.
# Extra arguments go to pytest (a later -n overrides the two workers; -n 0 runs in this process).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/ruff check connector tests bench
.venv/bin/mypy --strict connector
# Two workers (pytest-xdist): most of the time is `connector serve` starting per end-to-end
# test, one process at a time. Tests share no fixed resource (databases, Redis accounts, ports
# and data dirs are unique per test); a test that must run while no other does is marked
# `alone` (tests/conftest.py's file lock). Plain --dist load: loadgroup and loadscope key tests
# by node id, and schemathesis gives its 20 cases one id, so they ran 1 of them (tests/test_alone.py).
exec .venv/bin/python -m pytest -n 2 --dist load "$@"
