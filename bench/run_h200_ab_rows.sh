#!/usr/bin/env bash
# Side by side on one H200 (about 540 s): KAT-T bf16 training steps (CUDA graphs, fused AdamW)
# after one ViT-T run, with KAT's shared numerator row passed to the ops as it is
# (recognisers/shared_rows.py) and with the repeat kept (FLASHKAT_KEEP_REPEATED_ROWS=1),
# alternated twice; then the KAT MLP block in bf16, dropout 0.1 and 0 (477.0 and 383.6 us in
# call 20, with the repeat).
#
#     run(command="bash bench/run_h200_ab_rows.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
OUT_NAME=h200_ab_rows
source "$(dirname "$0")/device_prelude.sh"
export TORCHINDUCTOR_FORCE_DISABLE_CACHES=1  # each run compiles its own code
args=(--models kat_t --dtypes bfloat16 --steps 30 --warmup 5 --compile-mode reduce-overhead --fused-adamw)
train_step vit "${S2:-60}" "${args[@]}" --methods vit_inductor
for i in 1 2; do
    train_step "rows_$i" "${S2:-85}" "${args[@]}" --methods flashkat
    FLASHKAT_KEEP_REPEATED_ROWS=1 train_step "repeat_$i" "${S2:-85}" "${args[@]}" --methods flashkat
done
grep -ho "shared_rows_unrepeated': [0-9]*" "$OUT"/rows_*.log "$OUT"/repeat_*.log
step probe_bf16 "${S3:-120}" python3 bench/probe_mlp_fusion.py --dtypes bfloat16 --dropouts 0.1,0.0 \
    --options default --out "$OUT/mlp_fusion_bf16.json"
grep -E "^bfloat16" "$OUT/probe_bf16.log" | cut -c1-200
