#!/usr/bin/env bash
# Device call 50 of 2026-11-29 (session of 2026-11-29 from 23:34): the LANES loops (ROW_SUM 2 in
# backward.py.jinja, backward._LANES_BASE: VEC adjacent channels per thread, in the loads' own
# layout; sm_90 build at 3072 bf16 47.1 instructions per element against 48.75, 128 registers).
# One H200, about 520 s:
#
#     run(command="bash bench/run_h200_lanes.sh; cd $OUT && tar czf rows.tar.gz *.json *.log && rm -f *.json *.log",
#         kind="nvidia-h200", timeout_s=600)
#
# 1. test_cuda_lanes_configs: each LANES loop forced alone against float64 (CUDA back end).
# 2. The graphed rational at 128 x 197 x 3072, bf16 / fp16, wall time: the defaults with the LANES
#    loops offered (FLASHKAT_LANES=1) and without (=0), twice interleaved; Inductor's PAU once.
# 3. Every template choice's autotuning time (bench/probe_template_choices.py), the LANES loops
#    among them: 3072 bf16 / fp16, 1536 and 768 bf16.
OUT_NAME=h200_lanes
source "$(dirname "$0")/device_prelude.sh"
PARTS=" ${PARTS:-tests wall choices} "
if [[ "$PARTS" == *" tests "* ]]; then
    step pytest_lanes "${S0:-100}" python3 -m pytest -q -p no:cacheprovider -rs -k "cuda_lanes_configs" \
        tests/test_lowerings.py
    grep -E "^(FAILED|ERROR)|passed|failed|Error" "$OUT/pytest_lanes.log" | tail -6
fi
if [[ "$PARTS" == *" wall "* ]]; then
    ARGS="--graph-capture --dtypes bfloat16,float16 --shapes 128x197x3072"
    step wall_inductor "${S1:-45}" python3 bench/bench_rational.py $ARGS --methods inductor_safe_pau \
        --out "$OUT/wall_inductor.json"
    for round in 1 2; do
        for lanes in 1 0; do
            secs=${S2:-45}; [[ $round == 1 ]] && secs=80  # each arm's first run autotunes cold
            step "wall_lanes${lanes}_r${round}" "$secs" env FLASHKAT_LANES=$lanes \
                python3 bench/bench_rational.py $ARGS --methods flashkat_compiled_op \
                --out "$OUT/wall_lanes${lanes}_r${round}.json"
        done
    done
    wall_summary
    template_picks "$OUT"/wall_lanes1_r1.log
fi
if [[ "$PARTS" == *" choices "* ]]; then
    step choices "${S3:-170}" python3 bench/probe_template_choices.py --dtypes bfloat16,float16 \
        --shapes 128x197x3072,128x197x1536,128x197x768 --out "$OUT/choices.json"
    grep -A6 "choices," "$OUT/choices.log" | cut -c1-130; grep -c "ROW_SUM 2" "$OUT/choices.log"
fi
