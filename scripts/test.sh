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
# and data dirs are unique per test); tests that ever must run on one worker, one after another,
# say so with @pytest.mark.xdist_group(name), which --dist loadgroup honours.
exec .venv/bin/python -m pytest -n 2 --dist loadgroup "$@"
