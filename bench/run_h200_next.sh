#!/usr/bin/env bash
# What the 2026-11-28 sessions left untimed, in one call on one H200 (about 450 s):
#
#     run(command="bash bench/run_h200_next.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
#
#   1. the compiled forward alone under the lowering's variants (2-D tiles through the tiling hook,
#      which now also tiles 1536 channels; flat 1-D; forward.GROUPED_RANGES), float32 and bf16, at
#      KAT's widths: which default the measurements support
#   2. the rational at every KAT width, forward + backward captured as one CUDA graph per step,
#      against Inductor on the hand-written PAU (the 2x goal in bf16)
#   3. KAT-T bf16 training step under CUDA graphs, flashkat and timm's ViT-T
OUT_NAME=h200_next
source "$(dirname "$0")/device_prelude.sh"
step fwd_variants "${S1:-150}" python3 bench/probe_kernels.py --parts fwd_variants \
    --widths 192,768,1536,3072 --dtypes bfloat16,float32 --out "$OUT/fwd_variants.json"
grep -E "^fwd " "$OUT/fwd_variants.log" | head -30
step rational_capture "${S2:-150}" python3 bench/bench_rational.py --dtypes bfloat16,float32 \
    --shapes 128x197x192,128x197x768,128x197x1536,128x197x3072 \
    --methods inductor_safe_pau,flashkat_compiled_op --graph-capture --out "$OUT/rational_capture.json"
grep -E "^(float32|bfloat16)|one CUDA graph|capture failed|FAILED" "$OUT/rational_capture.log" | cut -c1-230
step train_bf16_cudagraphs "${S3:-130}" python3 bench/bench_train.py --models kat_t --dtypes bfloat16 \
    --methods vit_inductor,flashkat --steps 20 --warmup 5 --compile-mode reduce-overhead \
    --out "$OUT/train_bf16_cudagraphs.json"
grep -E "median|Error|^kat_t" "$OUT/train_bf16_cudagraphs.log" | head
