#!/usr/bin/env bash
# Every backward-template choice timed by the autotuner, side by side (bench/probe_template_choices.py):
# the default configs at two row-program counts, and register-prefetch loops (PIPE_STAGES < 0) one
# to four row blocks deep, which the lowering does not offer.  Calls 24-26 of 2026-11-29 saw only
# the picks (the prefetch loops at depths 1-2 never won; their times were not recorded).  Device
# call 31 ran this: every prefetch loop 18-138% slower than the best pipelined one.  sm_90
# builds at 3072 bf16 (compiled on the CPU): 8 x 128 3 deep 216 registers (two programs per SM),
# 4 x 128 4 deep 123, 4 x 256 8 warps 4 deep 124, 2 x 256 4 deep 122 (four), against 128 for the
# usual pick (8 x 128, pipelined 3 deep).  One H200, at most 560 s (the steps' limits; expected
# about 380); then the suite's gaps (below) and whether Nsight Compute is on the machine (a stall
# profile would say what bounds the bf16 loop).
#
#     run(command="bash bench/run_h200_choices.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
OUT_NAME=h200_choices
source "$(dirname "$0")/device_prelude.sh"
ADD=8x128x4x1x-1,8x128x4x1x-2,8x128x4x1x-3,4x256x4x1x-2,4x128x4x1x-2,4x128x4x1x-3,4x128x4x1x-4,4x256x8x1x-4,2x256x4x1x-4
step choices_bf16 "${S1:-200}" python3 bench/probe_template_choices.py --dtypes bfloat16 \
    --shapes 128x197x3072,128x197x1536,128x197x768 --levels 128x4,256x3 --add "$ADD" \
    --out "$OUT/choices_bf16.json"
grep -A12 "^bfloat16" "$OUT/choices_bf16.log" | cut -c1-120
step choices_fp32 "${S2:-100}" python3 bench/probe_template_choices.py --dtypes float32 \
    --shapes 128x197x3072 --levels 128x4,256x3 --add "$ADD" --out "$OUT/choices_fp32.json"
grep -A8 "^float32" "$OUT/choices_fp32.log" | cut -c1-120
# the suite's gaps of calls 29-30 (h200_rational_2026-11-29_suite.json): KAT's pure-PyTorch function in
# bf16 / fp16 (now under autocast) and the float32 32 x 50 x 1000 rows cut off by that call's limit
step suite_gaps_half "${S3:-120}" python3 bench/bench_rational.py --suite --graph-capture \
    --dtypes bfloat16,float16 --methods inductor_kat_reference --out "$OUT/suite_gaps_half.json"
step suite_gaps_fp32 "${S4:-80}" python3 bench/bench_rational.py --suite --graph-capture --dtypes float32 \
    --shapes 32x50x1000 --methods flashkat_compiled_pau,flashkat_compiled_op,inductor_kat_reference \
    --out "$OUT/suite_gaps_fp32.json"
# the FlashKAT-style peer since its 16-row sub-blocks (it spilled before: the README)
step suite_gaps_flashkat_style "${S5:-60}" python3 bench/bench_rational.py --suite --graph-capture \
    --dtypes float32,bfloat16 --shapes 128x197x768,128x197x3072 --methods flashkat_style_triton \
    --out "$OUT/suite_gaps_flashkat_style.json"
grep -hE "^(bfloat16|float16|float32) |FAILED|one CUDA graph" "$OUT"/suite_gaps_*.log | cut -c1-200
echo "== tools"; command -v ncu nsys nvdisasm cuobjdump 2>&1; ncu --version 2>&1 | tail -1
