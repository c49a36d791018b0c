#!/usr/bin/env bash
# What the 2026-11-28/29 sessions left unmeasured, in one call on one H200 (about 480 s):
#
#     run(command="bash bench/run_h200_next.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
#
#   1. the CUDA tests of the changed kernels and lowerings (the eager backward's stage-2 kernel,
#      the template's finishing reductions, the forward's 2-D tiling)
#   2. the rational at 128x197x3072 under CUDA graphs with static inputs: the wall-clock ratio
#      against Inductor without the per-launch CPU cost of the lent machine, with the reasons
#      Inductor gives for any graph it does not capture
#   3. the same shapes (and 768) in the default mode, GPU time per call: what the changes above
#      did to the eager ops and to the compiled forward and backward
#   4. KAT-T bf16 training step, flashkat and timm's ViT-T, both under CUDA graphs
OUT_NAME=h200_next
source "$(dirname "$0")/device_prelude.sh"
step pytest_cuda "${S1:-210}" python3 -m pytest -q -p no:cacheprovider -rs -k cuda \
    tests/test_triton_kernels.py tests/test_lowerings.py
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest_cuda.log" | tail -8
step rational_cudagraphs "${S2:-90}" python3 bench/bench_rational.py --dtypes float32,bfloat16 \
    --shapes 128x197x3072 --methods inductor_safe_pau,flashkat_compiled_pau,flashkat_compiled_op \
    --compile-mode reduce-overhead --static-inputs --out "$OUT/rational_cudagraphs.json"
grep -E "^(float32|bfloat16)|CUDA graphs|FAILED" "$OUT/rational_cudagraphs.log" | cut -c1-300
step rational_static "${S3:-100}" python3 bench/bench_rational.py --dtypes float32,bfloat16 \
    --shapes 128x197x3072,128x197x768 --methods inductor_safe_pau,flashkat_ops_eager,flashkat_compiled_op \
    --out "$OUT/rational_static.json"
grep -E "^(float32|bfloat16)|GPU f\+b|FAILED" "$OUT/rational_static.log" | cut -c1-260
step train_bf16_cudagraphs "${S4:-150}" python3 bench/bench_train.py --models kat_t --dtypes bfloat16 \
    --methods vit_inductor,flashkat --steps 20 --warmup 5 --compile-mode reduce-overhead \
    --out "$OUT/train_bf16_cudagraphs.json"
grep -E "median|Error|^kat_t" "$OUT/train_bf16_cudagraphs.log" | head
