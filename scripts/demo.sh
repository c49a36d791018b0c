#!/usr/bin/env bash
# The main job, from a fresh clone: sets up .venv, then runs the demo: a small KAT
# (KAT-style modules) trained under backend="flashkat", with its rewrites, loss,
# accuracy and step time against backend="inductor" and eager (examples/train_kat.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
exec python examples/train_kat.py "$@"
