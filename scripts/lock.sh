#!/usr/bin/env bash
# Re-resolve every dependency from PyPI and write the hashed locks in requirements/.
# Run after changing dependencies in pyproject.toml (or requirements/tools.in), then commit.
#   test.txt     runtime + the `test` extras: what scripts/setup.sh test and .ci/run install
#   runtime.txt  runtime only, the same versions as test.txt: what the Containerfile installs
#   tools.txt    the installer itself (uv), pip and the build backend (setuptools)
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-uv}
# --no-config and an explicit index: no local wheel folder or index from this machine's
# configuration can end up in the lock; every hash is PyPI's.
common=(--no-config --default-index https://pypi.org/simple --universal --python-version 3.11
        --generate-hashes --quiet --custom-compile-command scripts/lock.sh)
"$UV" pip compile "${common[@]}" pyproject.toml --extra test -o requirements/test.txt
"$UV" pip compile "${common[@]}" pyproject.toml -c requirements/test.txt -o requirements/runtime.txt
"$UV" pip compile "${common[@]}" requirements/tools.in -o requirements/tools.txt
