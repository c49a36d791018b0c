#!/usr/bin/env bash
# The test suite, from a fresh clone: sets up .venv, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
exec python -m pytest -q "$@"
