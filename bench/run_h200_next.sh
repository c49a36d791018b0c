#!/usr/bin/env bash
# Next call (about 200 s): a KAT block's MLP in bf16 autocast with and without dropout under
# flashkat's defaults (bench/probe_mlp_fusion.py), after the backward's x alone is narrowed where
# the dropout keeps the rational's output in float32 (recognisers/round_trips.py,
# float32_round_trips_dropped_bwd_x). Call 19 of 2026-11-29, before it: 382.7 us without dropout,
# 518.7 us with (the template 59.6 us, reading the saved float32 copy of x).
#
#     run(command="bash bench/run_h200_next.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
#
# The whole suite: bench/run_h200_suite.sh (six pytest processes; one process does not finish in
# a call). KAT-T / KAT-S training steps: bench/bench_train.py (see bench/results/README.md).
OUT_NAME=h200_next
source "$(dirname "$0")/device_prelude.sh"
step probe_bf16_dropout "${S1:-190}" python3 bench/probe_mlp_fusion.py --dtypes bfloat16 --dropouts 0.1,0.0 \
    --options default --out "$OUT/mlp_fusion_bf16.json"
grep -E "^bfloat16|fwd:|bwd:" "$OUT/probe_bf16_dropout.log" | cut -c1-400
