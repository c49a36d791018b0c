#!/usr/bin/env bash
# Tuning probe on one H200 (see bench/probe_kernels.py):
#
#     run(command="bash bench/run_h200_probe.sh", kind="nvidia-h200", timeout_s=600)
#
#   1. forward: the compiled pointwise rational under Inductor option sets (bf16 at 192 / 768,
#      float32 at 768), with the generated code; backward: the eager kernel's tiles x row programs
#   2. KAT-T bf16 training step under flashkat with FLASHKAT_OPTIONS (JSON, Inductor options),
#      --profile, for the GPU-busy time against the plain run of bench/run_h200_diagnose.sh
set -u
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-$PWD/h200_probe_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT/pip_install.log" 2>&1
echo "== forward probe ($(date -u +%T))"
timeout -k 5 "${FWD_S:-150}" python3 bench/probe_kernels.py --parts fwd --widths 192,768 --dtypes bfloat16 \
    --out "$OUT/probe_fwd_bf16.json" --code-dir "$OUT" >"$OUT/probe_fwd.log" 2>&1
echo "   rc $?"; grep -E "^fwd|^ +\(" "$OUT/probe_fwd.log" | cut -c1-200
echo "== backward probe ($(date -u +%T))"
timeout -k 5 "${BWD_S:-150}" python3 bench/probe_kernels.py --parts bwd --widths 192,768,3072 \
    --out "$OUT/probe_bwd.json" >"$OUT/probe_bwd.log" 2>&1
echo "   rc $?"; grep -E "^ +\(|Error" "$OUT/probe_bwd.log" | cut -c1-200
echo "== train ($(date -u +%T))"
timeout -k 5 "${TRAIN_S:-150}" python3 bench/bench_train.py --models kat_t --dtypes bfloat16 \
    --methods flashkat --steps 10 --warmup 3 --profile 3 \
    --flashkat-options "${FLASHKAT_OPTIONS:-{\"triton.prefer_nd_tiling\": true\}}" \
    --out "$OUT/h200_train_options.json" >"$OUT/train_options.log" 2>&1
echo "   rc $?"; grep -E "median|profiled|^ +[0-9]" "$OUT/train_options.log" | head -24
