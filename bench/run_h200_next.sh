#!/usr/bin/env bash
# Next call (about 330 s): what passing KAT's shared numerator row to the ops as it is
# (recognisers/shared_rows.py: no repeat kernel in the forward, no per-group partials summed
# over the groups in the backward, the template's NUM_SHARED path) does on one H200:
#   1. the CUDA tests of kernels and lowerings;
#   2. KAT-T bf16 under CUDA graphs with fused AdamW against ViT-T (1.09, 1.09, 1.07 in calls
#      11-13 of 2026-11-29, before the change);
#   3. the KAT MLP block in bf16, dropout 0.1 and 0 (477.0 and 383.6 us in call 20, before it).
#
#     run(command="bash bench/run_h200_next.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
#
# The whole suite: bench/run_h200_suite.sh (six pytest processes; one process does not finish in
# a call). KAT-S: bench/bench_train.py --models kat_s (see bench/results/README.md).
OUT_NAME=h200_next
source "$(dirname "$0")/device_prelude.sh"
cuda_tests "${S1:-170}"
train_step train_kat_t_bf16 "${S2:-150}" --models kat_t --dtypes bfloat16 \
    --methods vit_inductor,flashkat --steps 20 --warmup 5 --compile-mode reduce-overhead --fused-adamw
step probe_bf16 "${S3:-120}" python3 bench/probe_mlp_fusion.py --dtypes bfloat16 --dropouts 0.1,0.0 \
    --options default --out "$OUT/mlp_fusion_bf16.json"
grep -E "^bfloat16" "$OUT/probe_bf16.log" | cut -c1-200
