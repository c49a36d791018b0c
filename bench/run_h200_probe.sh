#!/usr/bin/env bash
# Tuning probe on one H200 (see bench/probe_kernels.py):
#
#     run(command="bash bench/run_h200_probe.sh", kind="nvidia-h200", timeout_s=600)
#
#   1. forward: the compiled pointwise rational under Inductor option sets (bf16 at 192 / 768,
#      float32 at 768), with the generated code; backward: the eager kernel's tiles x row programs
#   2. KAT-T bf16 training step under flashkat with FLASHKAT_OPTIONS (JSON, Inductor options),
#      --profile, for the GPU-busy time against the plain run of bench/run_h200_diagnose.sh
OUT_NAME=h200_probe
source "$(dirname "$0")/device_prelude.sh"
step probe_fwd "${FWD_S:-150}" python3 bench/probe_kernels.py --parts fwd --widths 192,768 --dtypes bfloat16 \
    --out "$OUT/probe_fwd_bf16.json" --code-dir "$OUT"
grep -E "^fwd|^ +\(" "$OUT/probe_fwd.log" | cut -c1-200
step probe_bwd "${BWD_S:-150}" python3 bench/probe_kernels.py --parts bwd --widths 192,768,3072 \
    --out "$OUT/probe_bwd.json"
grep -E "^ +\(|Error" "$OUT/probe_bwd.log" | cut -c1-200
step train_options "${TRAIN_S:-150}" python3 bench/bench_train.py --models kat_t --dtypes bfloat16 \
    --methods flashkat --steps 10 --warmup 3 --profile 3 \
    --flashkat-options "${FLASHKAT_OPTIONS:-{\"triton.prefer_nd_tiling\": true\}}" \
    --out "$OUT/h200_train_options.json"
grep -E "median|profiled|^ +[0-9]" "$OUT/train_options.log" | head -24
