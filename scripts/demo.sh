#!/usr/bin/env bash
# Set up (first run) and show one message's round trip on loopback: no vendor account needed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/connector demo
