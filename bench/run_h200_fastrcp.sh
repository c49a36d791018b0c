#!/usr/bin/env bash
# The backward with one approximate reciprocal per element and shared powers (FAST_RCP), in one
# call on one H200 (about 520 s):
#
#     run(command="bash bench/run_h200_fastrcp.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
#
#   1. the CUDA tests of the kernels and lowerings (accuracy against float64 with the rcp.approx)
#   2. the rational at KAT's widest shapes, forward + backward captured as one CUDA graph per step
#   3. KAT-T bf16 training step, flashkat and timm's ViT-T, both under CUDA graphs
#   4. the other KAT widths (192, 384, 1536), against FlashKAT's kernels and Inductor
OUT_NAME=h200_fastrcp
source "$(dirname "$0")/device_prelude.sh"
step pytest_cuda "${S1:-150}" python3 -m pytest -q -p no:cacheprovider -rs -k cuda \
    tests/test_triton_kernels.py tests/test_lowerings.py
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest_cuda.log" | tail -8
step rational_capture "${S2:-130}" python3 bench/bench_rational.py --dtypes float32,bfloat16 \
    --shapes 128x197x3072,128x197x768 \
    --methods inductor_safe_pau,flashkat_compiled_pau,flashkat_compiled_op,flashkat_ops_eager \
    --graph-capture --out "$OUT/rational_capture.json"
grep -E "^(float32|bfloat16)|one CUDA graph|capture failed|GPU f\+b|FAILED" "$OUT/rational_capture.log" | cut -c1-230
step train_bf16_cudagraphs "${S3:-120}" python3 bench/bench_train.py --models kat_t --dtypes bfloat16 \
    --methods vit_inductor,flashkat --steps 20 --warmup 5 --compile-mode reduce-overhead \
    --out "$OUT/train_bf16_cudagraphs.json"
grep -E "median|Error|^kat_t" "$OUT/train_bf16_cudagraphs.log" | head
step rational_widths "${S4:-120}" python3 bench/bench_rational.py --dtypes float32,bfloat16 \
    --shapes 128x197x192,128x197x384,128x197x1536 \
    --methods inductor_safe_pau,flashkat_style_triton,flashkat_compiled_op \
    --graph-capture --out "$OUT/rational_widths.json"
grep -E "^(float32|bfloat16)|one CUDA graph|capture failed|FAILED" "$OUT/rational_widths.log" | cut -c1-230
