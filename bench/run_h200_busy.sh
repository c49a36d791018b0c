#!/usr/bin/env bash
# KAT-T bf16 against timm's ViT-T in GPU-busy time, side by side in one run, and the float32 3072
# rows call 3 of 2026-11-29 lost to its step limit, in one call on one H200 (about 200 s):
#
#     run(command="bash bench/run_h200_busy.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=400)
#
# The wall time of a step under CUDA graphs on the lent machine moved by up to 25% between
# machines with the same code (flashkat 9.2-11.8 ms, ViT-T 8.2-9.0 ms, calls 1-4 of 2026-11-29);
# the GPU-busy time (kernels, copies, memsets; gaps left out) does not depend on the host.
OUT_NAME=h200_busy
source "$(dirname "$0")/device_prelude.sh"
step profile_both "${S1:-170}" python3 bench/bench_train.py --models kat_t --dtypes bfloat16 \
    --methods vit_inductor,flashkat --steps 10 --warmup 3 --profile 3 --out "$OUT/profile_both.json"
grep -E "median|profiled|GPU-busy|^kat_t" "$OUT/profile_both.log" | cut -c1-200 | head -20
step rational_f32_3072 "${S2:-80}" python3 bench/bench_rational.py --dtypes float32 --shapes 128x197x3072 \
    --methods inductor_safe_pau,flashkat_compiled_op --graph-capture --out "$OUT/rational_f32_3072.json"
grep -E "^float32|one CUDA graph|capture failed|FAILED" "$OUT/rational_f32_3072.log" | cut -c1-230
