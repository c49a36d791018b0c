#!/usr/bin/env bash
# The compiled forward's new defaults (forward.GROUPED_RANGES on, EXPANDED_COEFFICIENTS in fused bf16
# kernels) and the forward round trip narrowed through Dropout(p=0), timed, in one call on one H200
# (about 500 s; call 3 of 2026-11-29 ran out of its step limits of 120 and 150 s in steps 1 and 3 on a
# cold machine, hence 170 and 190 s now):
#
#     run(command="bash bench/run_h200_next.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
#
#   1. the CUDA tests of the kernels and lowerings
#   2. (WITH_PROBE=1) the compiled forward alone under each of the lowering's variants (caches
#      off: call 1 of 2026-11-29 timed one variant three times, served by the FX graph cache), and
#      Inductor's forward of the hand-written PAU beside them, float32 and bf16, at KAT's widths
#   3. the rational at every KAT width and at 7 x 33 x 200, forward + backward as one CUDA graph
#      per step, against Inductor on the hand-written PAU
#   4. KAT-T bf16 training step under CUDA graphs, flashkat and timm's ViT-T
#   5. the same with AdamW(fused=True) for both: the step without the optimizer's per-tensor host work
#      (KAT-T has 200 parameter tensors to ViT-T's 152), which a CPU proxy found to be most of the
#      host time that separates them
OUT_NAME=h200_next
source "$(dirname "$0")/device_prelude.sh"
step pytest_cuda "${S1:-170}" python3 -m pytest -q -p no:cacheprovider -rs -k cuda \
    tests/test_triton_kernels.py tests/test_lowerings.py
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest_cuda.log" | tail -8
[ -n "${WITH_PROBE:-}" ] && step fwd_variants "${S2:-170}" python3 bench/probe_kernels.py --parts fwd_variants \
    --widths 192,768,1536,3072 --dtypes bfloat16,float32 --out "$OUT/fwd_variants.json"
[ -n "${WITH_PROBE:-}" ] && grep -E "^fwd " "$OUT/fwd_variants.log" | cut -c1-200 | head -40
step rational_capture "${S3:-190}" python3 bench/bench_rational.py --dtypes bfloat16,float32 \
    --shapes 128x197x192,128x197x384,128x197x768,128x197x1536,128x197x3072,7x33x200 \
    --methods inductor_safe_pau,flashkat_compiled_op --graph-capture --out "$OUT/rational_capture.json"
grep -E "^(float32|bfloat16)|one CUDA graph|capture failed|FAILED" "$OUT/rational_capture.log" | cut -c1-230
step train_bf16_cudagraphs "${S4:-110}" python3 bench/bench_train.py --models kat_t --dtypes bfloat16 \
    --methods vit_inductor,flashkat --steps 20 --warmup 5 --compile-mode reduce-overhead \
    --out "$OUT/train_bf16_cudagraphs.json"
grep -E "median|Error|^kat_t" "$OUT/train_bf16_cudagraphs.log" | head
step train_bf16_cudagraphs_fused_adamw "${S5:-110}" python3 bench/bench_train.py --models kat_t --dtypes bfloat16 \
    --methods vit_inductor,flashkat --steps 20 --warmup 5 --compile-mode reduce-overhead --fused-adamw \
    --out "$OUT/train_bf16_cudagraphs_fused_adamw.json"
grep -E "median|Error|^kat_t" "$OUT/train_bf16_cudagraphs_fused_adamw.log" | head
