#!/usr/bin/env bash
# Next call: the backward's slab workspaces with the programs fastest (each finishing sum an inner
# reduction, one program per output; the outputs-fastest layout timed in call 9 of 2026-11-29 made
# Inductor run the 192-channel site's sums on one program, 4.9 us per call), and the template's
# GROUP_UNIFORM variants (scalar coefficients where BLOCK_C divides the group width, and 32-channel
# tiles at KAT-T's 768 channels; the autotuning logs' best_kernel_desc say whether they win),
# timed, with the CUDA tests, in one call on one H200 (about 500 s):
#
#     run(command="bash bench/run_h200_next.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
#
#   1. (WITH_PROBE=1) probe_fusion: the forward kernels of rational(x * 2) + 1, static and dynamic
#      batch, grouped ranges on and off, with Inductor's fusion log; their code under $OUT/fusion
#      (one kernel in all four cases in call 9 of 2026-11-29)
#   2. the CUDA tests of the kernels and lowerings
#   3. the rational at every KAT width and at 7 x 33 x 200, forward + backward as one CUDA graph
#      per step, against Inductor on the hand-written PAU (188 s in call 9; more autotuning
#      choices since, hence 250)
#   4. KAT-T bf16 training step under CUDA graphs with AdamW(fused=True), flashkat and timm's ViT-T,
#      then 3 steps under the profiler (every GPU activity per step, in the JSON)
OUT_NAME=h200_next
source "$(dirname "$0")/device_prelude.sh"
if [ -n "${WITH_PROBE:-}" ]; then
    step probe_fusion "${S1:-60}" env TORCH_LOGS=fusion python3 bench/probe_fusion.py --out "$OUT/fusion"
    grep -E "forward kernels" "$OUT/probe_fusion.log"
    (cd "$OUT" && tar czf fusion.tar.gz fusion && rm -rf fusion)
fi
step pytest_cuda "${S2:-170}" python3 -m pytest -q -p no:cacheprovider -rs -k cuda \
    tests/test_triton_kernels.py tests/test_lowerings.py
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest_cuda.log" | tail -8
step rational_capture "${S3:-250}" python3 bench/bench_rational.py --dtypes bfloat16,float32 \
    --shapes 128x197x192,128x197x384,128x197x768,128x197x1536,128x197x3072,7x33x200 \
    --methods inductor_safe_pau,flashkat_compiled_op --graph-capture --out "$OUT/rational_capture.json"
grep -E "^(float32|bfloat16)|one CUDA graph|capture failed|FAILED" "$OUT/rational_capture.log" | cut -c1-230
step train_bf16_fused_adamw "${S4:-130}" python3 bench/bench_train.py --models kat_t --dtypes bfloat16 \
    --methods vit_inductor,flashkat --steps 20 --warmup 5 --compile-mode reduce-overhead --fused-adamw \
    --profile 3 --out "$OUT/train_bf16_fused_adamw.json"
grep -E "median|Error|^kat_t|profiled|GPU-busy" "$OUT/train_bf16_fused_adamw.log" | cut -c1-200 | head -20
