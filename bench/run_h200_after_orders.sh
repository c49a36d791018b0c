#!/usr/bin/env bash
# Device call 53 of 2026-11-29 (session from 23:34), after the suite with the defaults of efb8e33
# (call 52: LANES loops offered, row blocks walked from the last).  One H200, about 400 s:
#
#     run(command="bash bench/run_h200_after_orders.sh; cd $OUT && tar czf rows.tar.gz *.json *.log && rm -f *.json *.log",
#         kind="nvidia-h200", timeout_s=600)
#
# 1. The lowerings' CUDA tests that the new loops and order touch: template numerics with an
#    epilogue, every LANES loop forced alone, dx over dy, a bf16 training step with dynamic batch.
# 2. The suite row call 52 ran out of time for (fp16, 128 x 197 x 192, graphed) and the odd
#    shapes 7 x 33 x 200 / 32 x 50 x 1000 in bf16 / fp16.
# 3. KAT-T bf16 training steps beside ViT-T (cudagraph trees, fused AdamW).
OUT_NAME=h200_after_orders
source "$(dirname "$0")/device_prelude.sh"
PARTS=" ${PARTS:-tests rest train} "
if [[ "$PARTS" == *" tests "* ]]; then
    step pytest_cuda "${S1:-130}" python3 -m pytest -q -p no:cacheprovider -rs -k \
        "cuda_template_numerics or cuda_lanes_configs or cuda_dx_written or cuda_training_dynamic" tests/test_lowerings.py
    grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest_cuda.log" | tail -6
fi
if [[ "$PARTS" == *" rest "* ]]; then
    step suite_rest "${S2:-70}" python3 bench/bench_rational.py --suite --graph-capture \
        --methods inductor_safe_pau,flashkat_compiled_op --dtypes float16,bfloat16 \
        --shapes 128x197x192,7x33x200,32x50x1000 --out "$OUT/suite_rest.json"
    grep -E "^(bfloat16|float16|float32) |one CUDA graph|FAILED" "$OUT/suite_rest.log" | cut -c1-150
fi
if [[ "$PARTS" == *" train "* ]]; then
    train_step train_bf16 "${S3:-170}" --models kat_t --dtypes bfloat16 --methods vit_inductor,flashkat --steps 30 \
        --warmup 5 --compile-mode reduce-overhead --fused-adamw
fi
