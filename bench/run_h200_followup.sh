#!/usr/bin/env bash
# The measurements after a tuning change, on one H200 (each step under its own timeout):
#
#     run(command="bash bench/run_h200_followup.sh", kind="nvidia-h200", timeout_s=600)
#
#   1. KAT-T bf16 training step, flashkat and timm's ViT-T under Inductor, --profile (GPU-busy time)
#   2. the same with --compile-mode reduce-overhead (CUDA graphs: the per-launch CPU cost of
#      the lent machine out of the step time) for both
#   3. the rational at 128x197x3072 float32 / bf16, static shapes, our paths and Inductor's
#   4. the same, float32, under reduce-overhead for both compiled paths
#   5. the CUDA tests of the kernels, ops and lowerings (-k cuda)
# Logs are packed by the caller; JSON rows in $OUT.
OUT_NAME=h200_followup
source "$(dirname "$0")/device_prelude.sh"
step train_bf16 "${S1:-150}" python3 bench/bench_train.py --models kat_t --dtypes bfloat16 \
    --methods flashkat,vit_inductor --steps 10 --warmup 3 --profile 3 --out "$OUT/train_bf16.json"
grep -E "median|profiled" "$OUT/train_bf16.log"
step train_bf16_cudagraphs "${S2:-120}" python3 bench/bench_train.py --models kat_t --dtypes bfloat16 \
    --methods flashkat,vit_inductor --steps 20 --warmup 5 --compile-mode reduce-overhead \
    --out "$OUT/train_bf16_cudagraphs.json"
grep -E "median|Error" "$OUT/train_bf16_cudagraphs.log" | head
step rational "${S3:-80}" python3 bench/bench_rational.py --dtypes float32,bfloat16 --shapes 128x197x3072 \
    --methods inductor_safe_pau,flashkat_ops_eager,flashkat_compiled_pau,flashkat_compiled_op \
    --out "$OUT/rational.json"
grep -E "^(float32|bfloat16)|FAILED" "$OUT/rational.log" | cut -c1-230
step rational_cudagraphs "${S4:-60}" python3 bench/bench_rational.py --dtypes float32 --shapes 128x197x3072 \
    --methods inductor_safe_pau,flashkat_compiled_pau --compile-mode reduce-overhead \
    --out "$OUT/rational_cudagraphs.json"
grep -E "^(float32|bfloat16)|FAILED" "$OUT/rational_cudagraphs.log" | cut -c1-230
step pytest_cuda "${S5:-160}" python3 -m pytest -q -p no:cacheprovider -rs -k cuda \
    tests/test_triton_kernels.py tests/test_ops.py tests/test_lowerings.py tests/test_kat_functions.py
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest_cuda.log" | tail -12
