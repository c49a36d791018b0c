#!/usr/bin/env bash
# The backward template with x and dy prefetched into registers (PIPE_STAGES < 0, offered to the
# autotuner beside the pipelined loops) and dx as one fma with r, on one H200 (about 430 s):
#   1. the CUDA tests of the lowerings, with every template config forced alone against float64;
#   2. the rational in bf16 at KAT's 768 / 1536 / 3072 channels, forward + backward as one CUDA
#      graph per step, against Inductor on the hand-written safe PAU (calls 9-10: 1.86x / 1.84x
#      at 1536 / 3072; the template 166.8 us at 3072), with the autotuner's picks;
#   3. KAT-T bf16 training steps against ViT-T (CUDA graphs, fused AdamW).
#
#     run(command="bash bench/run_h200_prefetch.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
OUT_NAME=h200_prefetch
source "$(dirname "$0")/device_prelude.sh"
step pytest_cuda_lowerings "${S1:-240}" python3 -m pytest -q -p no:cacheprovider -rs -k cuda tests/test_lowerings.py
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest_cuda_lowerings.log" | tail -8
step rational "${S2:-150}" python3 bench/bench_rational.py --dtypes bfloat16 \
    --shapes 128x197x768,128x197x1536,128x197x3072 \
    --methods inductor_safe_pau,flashkat_compiled_op --graph-capture --out "$OUT/rational_bf16.json"
grep -E "^(float32|bfloat16)|one CUDA graph|capture failed|FAILED" "$OUT/rational.log" | cut -c1-230
grep -o '"best_kernel_desc": "[^"]*BLOCK_C=[0-9]*, BLOCK_R=[0-9]*[^"]*PIPE_STAGES=-\?[0-9]*' "$OUT/rational.log" \
    | sed -E 's/.*BLOCK_C=([0-9]+), BLOCK_R=([0-9]+).*PIPE_STAGES=(-?[0-9]+)/pick BLOCK_R=\2 BLOCK_C=\1 PIPE_STAGES=\3/' | sort | uniq -c
train_step train_kat_t_bf16 "${S3:-110}" --models kat_t --dtypes bfloat16 \
    --methods vit_inductor,flashkat --steps 20 --warmup 5 --compile-mode reduce-overhead --fused-adamw
