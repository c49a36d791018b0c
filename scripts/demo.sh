#!/usr/bin/env bash
# The main job, from a fresh clone: sets up .venv, then runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
exec python -m flashkat_inductor.demo "$@"
