#!/usr/bin/env bash
# Wall-clock times without the lent machine's per-launch CPU cost: mode="reduce-overhead"
# (CUDA graphs) for every compiled path, on one H200:
#
#     run(command="bash bench/run_h200_cudagraphs.sh", kind="nvidia-h200", timeout_s=420)
#
#   1. the rational, 128x197x3072 float32 and bf16: Inductor's safe PAU against ours, x and the
#      coefficients static (--static-inputs: no copy into the graphs' buffers per replay; the
#      committed 2026-11-28 rows were measured before that flag, with the copies)
#   2. KAT-T bf16 training step: flashkat against timm's ViT-T under Inductor
OUT_NAME=h200_cudagraphs
source "$(dirname "$0")/device_prelude.sh"
step rational_cudagraphs "${S1:-120}" python3 bench/bench_rational.py --dtypes float32,bfloat16 \
    --shapes 128x197x3072 --methods inductor_safe_pau,flashkat_compiled_pau,flashkat_compiled_op \
    --compile-mode reduce-overhead --static-inputs --out "$OUT/rational_cudagraphs.json"
grep -E "^(float32|bfloat16)|FAILED" "$OUT/rational_cudagraphs.log" | cut -c1-260
step train_bf16_cudagraphs "${S2:-240}" python3 bench/bench_train.py --models kat_t --dtypes bfloat16 \
    --methods vit_inductor,flashkat --steps 20 --warmup 5 --compile-mode reduce-overhead \
    --out "$OUT/train_bf16_cudagraphs.json"
grep -E "median|Error|^kat_t" "$OUT/train_bf16_cudagraphs.log" | head
