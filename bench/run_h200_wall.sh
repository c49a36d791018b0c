#!/usr/bin/env bash
# Device calls 45 (as below) and 46 (PARTS="tests train", with FLASHKAT_FORWARD_ELEMENTS_PER_THREAD=0
# FLASHKAT_ONE_FINISH=1) of 2026-11-29, after calls 41-44.  One H200, at most about 540 s:
#
#     run(command="bash bench/run_h200_wall.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
#
# 1. Where the wall time of the graphed bf16 / fp16 step at 3072 goes: with 16 elements per thread
#    in the forward (forward.ELEMENTS_PER_THREAD, the default since call 42) the profiler's GPU time
#    of the step is 0.232 ms while its wall time is 0.237 (call 43); with Inductor's 8 elements
#    per thread both were 0.236-0.237 (calls 41-42).  Three arms twice, interleaved, same machine,
#    beside Inductor's PAU: 0 and 16 elements per thread, and 16 with both finishing sums in one
#    kernel (backward._ONE_FINISH, FLASHKAT_ONE_FINISH=1: the backward two kernels instead of
#    three).  If 16 does not take the wall time down, it goes back to 0; if ONE_FINISH does, it
#    becomes the default.
# 2. The CUDA tests of the template's numerics with FLASHKAT_ONE_FINISH=1.
# 3. The suite rows calls 43-44 ran out of time for: fp16 at 192 channels (its flashkat row), and
#    the odd shapes 7 x 33 x 200 and 32 x 50 x 1000 in three dtypes, Inductor's PAU and flashkat.
# KAT-T bf16 training with the defaults then: a second call,
#     train_step train_bf16 170 --models kat_t --dtypes bfloat16 --methods vit_inductor,flashkat \
#         --steps 30 --warmup 5 --compile-mode reduce-overhead --fused-adamw   (PARTS=train)
OUT_NAME=h200_wall
source "$(dirname "$0")/device_prelude.sh"
PARTS=" ${PARTS:-wall tests suite} "
if [[ "$PARTS" == *" wall "* ]]; then
    ARGS="--graph-capture --dtypes bfloat16,float16 --shapes 128x197x3072"
    step wall_inductor "${S1:-45}" python3 bench/bench_rational.py $ARGS --methods inductor_safe_pau --out "$OUT/wall_inductor.json"
    for round in 1 2; do
        for arm in e0:0:0 e16:16:0 e16_one:16:1; do
            IFS=: read -r name e one <<<"$arm"
            step "wall_${name}_r${round}" "${S2:-40}" env FLASHKAT_FORWARD_ELEMENTS_PER_THREAD=$e FLASHKAT_ONE_FINISH=$one \
                python3 bench/bench_rational.py $ARGS --methods flashkat_compiled_op --out "$OUT/wall_${name}_r${round}.json"
        done
    done
    wall_summary
fi
if [[ "$PARTS" == *" tests "* ]]; then
    step pytest_cuda_one_finish "${S3:-120}" env FLASHKAT_ONE_FINISH=1 python3 -m pytest -q -p no:cacheprovider -rs \
        tests/test_lowerings.py -k "cuda_template_numerics or cuda_dx_written_over_dy"
    grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest_cuda_one_finish.log" | tail -6
fi
if [[ "$PARTS" == *" suite "* ]]; then
    step suite_rest "${S4:-170}" python3 bench/bench_rational.py --suite --graph-capture \
        --methods inductor_safe_pau,flashkat_compiled_op --dtypes float16,bfloat16,float32 \
        --shapes 128x197x192,7x33x200,32x50x1000 --out "$OUT/suite_rest.json"
    grep -E "^(bfloat16|float16|float32) |one CUDA graph|FAILED" "$OUT/suite_rest.log" | cut -c1-150
fi
if [[ "$PARTS" == *" train "* ]]; then
    train_step train_bf16 "${S5:-170}" --models kat_t --dtypes bfloat16 --methods vit_inductor,flashkat --steps 30 \
        --warmup 5 --compile-mode reduce-overhead --fused-adamw
fi
