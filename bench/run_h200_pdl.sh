#!/usr/bin/env bash
# Device call 47 of 2026-11-29, after calls 45-46 (bench/run_h200_wall.sh).  One H200, about 350 s:
#
#     run(command="bash bench/run_h200_pdl.sh; cd $OUT && tar czf rows.tar.gz *.json *.log && rm -f *.json *.log",
#         kind="nvidia-h200", timeout_s=600)
#
# Call 45 timed, twice interleaved, at 3072 bf16 / fp16 graphed: 16 elements per thread in the
# forward 0.238 / 0.238 ms wall, Inductor's 8 (FLASHKAT_FORWARD_ELEMENTS_PER_THREAD=0) 0.237 /
# 0.236, and 16 with both finishing sums in one kernel (FLASHKAT_ONE_FINISH=1) 0.236 / 0.236.
# 1. The arm call 45 lacked, 0 elements with ONE_FINISH, beside 16 with ONE_FINISH and the
#    default, twice interleaved, and each of the first two with Inductor's programmatic dependent
#    launch (TORCHINDUCTOR_ENABLE_PDL=1: Inductor's own kernels, the forward and the finishing
#    sum, start while the kernel before them drains); Inductor's PAU without and with it.
# 2. The float32 suite rows call 45 ran out of time for: 192 (flashkat) and the odd shapes.
OUT_NAME=h200_pdl
source "$(dirname "$0")/device_prelude.sh"
PARTS=" ${PARTS:-wall suite} "
if [[ "$PARTS" == *" wall "* ]]; then
    ARGS="--graph-capture --dtypes bfloat16,float16 --shapes 128x197x3072"
    for pdl in 0 1; do
        step "wall_inductor_pdl${pdl}" "${S1:-45}" env TORCHINDUCTOR_ENABLE_PDL=$pdl \
            python3 bench/bench_rational.py $ARGS --methods inductor_safe_pau --out "$OUT/wall_inductor_pdl${pdl}.json"
    done
    for round in 1 2; do
        for arm in e0_one:0:1:0 e16_one:16:1:0 e16:16:0:0 e0_one_pdl:0:1:1 e16_one_pdl:16:1:1; do
            IFS=: read -r name e one pdl <<<"$arm"
            secs=${S2:-40}; [[ $round$name == 1e0_one ]] && secs=75  # the first compiles cold
            step "wall_${name}_r${round}" "$secs" env FLASHKAT_FORWARD_ELEMENTS_PER_THREAD=$e FLASHKAT_ONE_FINISH=$one \
                TORCHINDUCTOR_ENABLE_PDL=$pdl \
                python3 bench/bench_rational.py $ARGS --methods flashkat_compiled_op --out "$OUT/wall_${name}_r${round}.json"
        done
    done
    wall_summary
fi
if [[ "$PARTS" == *" suite "* ]]; then
    step suite_f32 "${S3:-120}" env FLASHKAT_ONE_FINISH=1 FLASHKAT_FORWARD_ELEMENTS_PER_THREAD=0 \
        python3 bench/bench_rational.py --suite --graph-capture \
        --methods inductor_safe_pau,flashkat_compiled_op --dtypes float32 \
        --shapes 128x197x192,7x33x200,32x50x1000 --out "$OUT/suite_f32.json"
    grep -E "^(bfloat16|float16|float32) |one CUDA graph|FAILED" "$OUT/suite_f32.log" | cut -c1-150
fi
