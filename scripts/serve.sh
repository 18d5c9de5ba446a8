#!/usr/bin/env bash
# Set up (first run) and start the connector with the SQLite default on 127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/connector serve "$@"
