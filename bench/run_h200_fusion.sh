#!/usr/bin/env bash
# What each fusion of a KAT block's MLP saves on one H200 (about 400 s): bench/probe_mlp_fusion.py
# at KAT-T's width (192, 128 x 197 rows), float32 and bf16 autocast, dropout 0 and 0.1, Inductor's
# default, epilogue fusion off and max_autotune (Triton matmul templates, which may take the
# rational as their epilogue): the kernels of forward and backward, and the GPU time per step.
#
#     run(command="bash bench/run_h200_fusion.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
OUT_NAME=h200_fusion
source "$(dirname "$0")/device_prelude.sh"
step probe_mlp_fusion "${S1:-540}" python3 bench/probe_mlp_fusion.py --out "$OUT/mlp_fusion.json"
grep -E "^(float32|bfloat16)" "$OUT/probe_mlp_fusion.log" | cut -c1-200
