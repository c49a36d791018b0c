#!/usr/bin/env bash
# The backward template's ROW_SUM configs (each row block's terms summed over its rows into
# (1, BLOCK_C) accumulators: 64 registers against 128 in the sm_90 build of the 8 x 128 bf16 loop at
# 3072, so eight programs per SM instead of four, for 2% more instructions), prepared on the CPU
# and not yet timed.  Nsight Compute (device call 33) has the bf16 template issue-bound at 25%
# occupancy with no eligible warp in 27% of its cycles, which is what more programs per SM address.
# Every choice side by side (bench/probe_template_choices.py) at the levels such occupancy asks for
# (128 x 8 for 56-72 registers, 128 x 5 for 16 x 128's 96), then the rational graphed in bf16 / fp16
# / float32 and a KAT-T bf16 step with them offered.  One H200, at most about 560 s:
#
#     run(command="bash bench/run_h200_rowsum.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
#
# If they win, ROW_SUM becomes a default (backward._ROW_SUM_LEVELS), else the configs go.  They won
# (device call 36 of 2026-11-29): offered by default since 2a3ae04 (bench/run_h200_rowsum_default.sh).
OUT_NAME=h200_rowsum
source "$(dirname "$0")/device_prelude.sh"
# beside _ROW_SUM_BASE: deeper pipelines where the registers freed allow them, and 8 x 256 with 8
# warps (77 registers in the sm_90 build, no shuffles), each at every level
step choices_bf16 "${S1:-170}" python3 bench/probe_template_choices.py --dtypes bfloat16 \
    --shapes 128x197x3072,128x197x1536,128x197x768 --row-sum-levels 128x8,128x5 \
    --add 8x128x4x4x4x1,16x128x4x4x4x1,8x256x8x3x3x1 --out "$OUT/choices_bf16.json"
grep -A8 "^bfloat16" "$OUT/choices_bf16.log" | cut -c1-130
step choices_fp32 "${S2:-70}" python3 bench/probe_template_choices.py --dtypes float32 --shapes 128x197x3072 \
    --row-sum-levels 128x8,128x5 --out "$OUT/choices_fp32.json"
grep -A6 "^float32" "$OUT/choices_fp32.log" | cut -c1-130
export FLASHKAT_ROW_SUM_LEVELS=128x8,128x5 TORCHINDUCTOR_FORCE_DISABLE_CACHES=1
step rational "${S3:-170}" python3 bench/bench_rational.py --graph-capture --dtypes bfloat16,float16,float32 \
    --shapes 128x197x768,128x197x1536,128x197x3072 --methods inductor_safe_pau,flashkat_compiled_pau \
    --out "$OUT/rational.json"
grep -E "^(bfloat16|float16|float32) |one CUDA graph|FAILED" "$OUT/rational.log" | cut -c1-150
train_step train_bf16 "${S4:-170}" --models kat_t --dtypes bfloat16 --methods vit_inductor,flashkat --steps 30 \
    --warmup 5 --compile-mode reduce-overhead --fused-adamw
