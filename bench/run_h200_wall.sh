#!/usr/bin/env bash
# Next device call after 2026-11-29's calls 41-44 (not yet run).  One H200, at most about 480 s:
#
#     run(command="bash bench/run_h200_wall.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
#
# 1. Where the wall time of the graphed bf16 / fp16 step at 3072 goes: with 16 elements per thread
#    in the forward (forward.ELEMENTS_PER_THREAD, the default since call 42) the profiler's GPU time
#    of the step is 0.232 ms while its wall time is 0.237 (call 43); with Inductor's 8 elements
#    per thread both were 0.236-0.237 (calls 41-42).  Both settings twice, interleaved, same machine,
#    beside Inductor's PAU: if 16 does not take the wall time down, it goes back to 0.
# 2. The suite rows calls 43-44 ran out of time for: fp16 at 192 channels (its flashkat row), and
#    the odd shapes 7 x 33 x 200 and 32 x 50 x 1000 in three dtypes, Inductor's PAU and flashkat.
# 3. KAT-T bf16 training (fused AdamW, CUDA graphs) with calls 41-42's defaults, beside ViT-T.
OUT_NAME=h200_wall
source "$(dirname "$0")/device_prelude.sh"
ARGS="--graph-capture --dtypes bfloat16,float16 --shapes 128x197x3072"
step wall_inductor "${S1:-45}" python3 bench/bench_rational.py $ARGS --methods inductor_safe_pau --out "$OUT/wall_inductor.json"
for round in 1 2; do
    for e in 0 16; do
        step "wall_e${e}_r${round}" "${S2:-40}" env FLASHKAT_FORWARD_ELEMENTS_PER_THREAD=$e python3 bench/bench_rational.py \
            $ARGS --methods flashkat_compiled_op --out "$OUT/wall_e${e}_r${round}.json"
    done
done
for f in "$OUT"/wall_*.log; do echo "-- $(basename "$f")"; grep -E "one CUDA graph|GPU f\+b:" "$f" | cut -c1-150; done
step suite_rest "${S3:-170}" python3 bench/bench_rational.py --suite --graph-capture \
    --methods inductor_safe_pau,flashkat_compiled_op --dtypes float16,bfloat16,float32 \
    --shapes 128x197x192,7x33x200,32x50x1000 --out "$OUT/suite_rest.json"
grep -E "^(bfloat16|float16|float32) |one CUDA graph|FAILED" "$OUT/suite_rest.log" | cut -c1-150
train_step train_bf16 "${S4:-170}" --models kat_t --dtypes bfloat16 --methods vit_inductor,flashkat --steps 30 \
    --warmup 5 --compile-mode reduce-overhead --fused-adamw
