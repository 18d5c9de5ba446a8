#!/usr/bin/env bash
# Create .venv (once) and install the locked dependencies (requirements/*.txt, hashed; see
# scripts/lock.sh) plus the connector itself, editable; "test" also installs the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# The installer is locked too: pip fetches the pinned, hashed uv only when it is missing.
uv_pin=$(sed -n 's/^uv==\([^ ]*\).*/\1/p' requirements/tools.txt)
if [ "$(.venv/bin/uv --version 2>/dev/null)" != "uv $uv_pin" ]; then
    # A venv made by uv (or --without-pip) has no pip yet.
    .venv/bin/python -m pip --version >/dev/null 2>&1 || .venv/bin/python -m ensurepip --default-pip >/dev/null
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
        --require-hashes -r requirements/tools.txt
fi
lock=requirements/runtime.txt
if [ "${1:-}" = "test" ]; then
    lock=requirements/test.txt
fi
# sync: exactly the locked set (anything else in .venv is removed), verified against the hashes.
.venv/bin/uv pip sync --quiet --python .venv/bin/python --require-hashes "$lock" requirements/tools.txt
# The project on top, editable, built by the locked setuptools (no unpinned build environment).
.venv/bin/uv pip install --quiet --python .venv/bin/python --no-deps --no-build-isolation -e .
