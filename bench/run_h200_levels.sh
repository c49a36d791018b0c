#!/usr/bin/env bash
# Should the backward template's configs be offered at two row-program counts?  One H200, about
# 560 s.  Answered no by calls 27-28 of 2026-11-29 (bench/results/README.md): the template alone
# 2-9% faster, the training step the same, its first step 12-18 s longer.
# FLASHKAT_ROW_PROGRAM_LEVELS=128x4,256x3 offers every config at both counts (the autotuner
# then picks per shape; calls 24-26 of 2026-11-29 had each count win at some shapes, kernel
# alone); without it one, (128, 4).  Side by side, empty compile caches per run:
#   1. forward + backward as one CUDA graph per step at KAT's widths in bf16 (float32 next);
#   2. KAT-T bf16 training steps (CUDA graphs, fused AdamW), alternated ROUNDS times (default 1;
#      call 28 ran two more): the figure that decides (twice the programs once looked faster alone
#      and was slower in a training step).
# Autotuning twice the choices takes longer: the steps with both levels get S1L / S3L seconds
# (call 27's 80 / 70 s cut them off).
#
#     run(command="bash bench/run_h200_levels.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
OUT_NAME=h200_levels
source "$(dirname "$0")/device_prelude.sh"
export TORCHINDUCTOR_FORCE_DISABLE_CACHES=1
picks() {
    grep -o '"best_kernel_desc": "[^"]*' "$OUT/$1.log" | sed -E \
        's/.*BLOCK_C=([0-9]+), BLOCK_R=([0-9]+).*NPROG=([0-9]+), NPROG_RUN=([0-9]+).*PIPE_STAGES=(-?[0-9]+).*num_warps=([0-9]+)/   pick R=\2 C=\1 NPROG_RUN=\4 of \3 PIPE=\5 warps=\6/'
}
for lv in "" 128x4,256x3; do
    name=rational_${lv:-default}; name=${name//,/_}
    secs=${S1:-80}; [ -n "$lv" ] && secs=${S1L:-150}
    FLASHKAT_ROW_PROGRAM_LEVELS=$lv step "$name" "$secs" python3 bench/bench_rational.py \
        --dtypes bfloat16 --shapes 128x197x384,128x197x768,128x197x1536,128x197x3072 \
        --methods flashkat_compiled_op --graph-capture --out "$OUT/$name.json"
    echo "   levels: ${lv:-default}"
    grep -E "^(float32|bfloat16)|GPU f\+b: triton_tem" "$OUT/$name.log" | cut -c1-150
    picks "$name"
done
args=(--models kat_t --dtypes bfloat16 --steps 30 --warmup 5 --compile-mode reduce-overhead --fused-adamw)
train_step vit "${S2:-60}" "${args[@]}" --methods vit_inductor
for i in $(seq "${ROUNDS:-1}"); do
    train_step "train_default_$i" "${S3:-70}" "${args[@]}" --methods flashkat
    FLASHKAT_ROW_PROGRAM_LEVELS=128x4,256x3 train_step "train_levels_$i" "${S3L:-200}" "${args[@]}" --methods flashkat
done
