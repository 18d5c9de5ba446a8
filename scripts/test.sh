#!/usr/bin/env bash
# Set up (first run), check style and types, and run the whole test suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/ruff check connector tests bench
.venv/bin/mypy --strict connector
exec .venv/bin/python -m pytest "$@"
