#!/usr/bin/env bash
# The bf16 rational at 1536 and 3072 channels after the template's slab sums were limited to
# C < 2048 (backward._SLAB_MAX_CHANNELS), one CUDA graph per step, in one short call on one H200
# (about 120 s):
#
#     run(command="bash bench/run_h200_3072.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=240)
OUT_NAME=h200_3072
source "$(dirname "$0")/device_prelude.sh"
step rational_capture "${S1:-200}" python3 bench/bench_rational.py --dtypes bfloat16 \
    --shapes 128x197x1536,128x197x3072 \
    --methods inductor_safe_pau,flashkat_compiled_op --graph-capture --out "$OUT/rational_3072.json"
grep -E "^(float32|bfloat16)|one CUDA graph|capture failed|FAILED" "$OUT/rational_capture.log" | cut -c1-230
