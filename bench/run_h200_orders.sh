#!/usr/bin/env bash
# Device call 51 of 2026-11-29 (session from 23:34), after call 50 (bench/run_h200_lanes.sh: the LANES
# loops picked at 3072 bf16, step 0.232 ms against 0.232-0.233 without).  One H200, about 420 s:
#
#     run(command="bash bench/run_h200_orders.sh; cd $OUT && tar czf rows.tar.gz *.json *.log && rm -f *.json *.log",
#         kind="nvidia-h200", timeout_s=600)
#
# The graphed rational at 128 x 197 x 3072, bf16 / fp16, wall time, four orders of the backward
# template's work, twice interleaved: as is; FLASHKAT_ROWS_REVERSED=1 (row blocks from the last:
# the forward has just read x's last rows, which may still be in L2); FLASHKAT_COLS_FIRST=1 (grid
# (column tiles, row programs): the programs running together read whole rows); both.  Inductor's
# PAU once.  Ran with both switches in the code (off by default then); after it ROWS_REVERSED is
# on by default and COLS_FIRST is gone (FLASHKAT_COLS_FIRST is no longer read: its arms now repeat
# the others).
OUT_NAME=h200_orders
source "$(dirname "$0")/device_prelude.sh"
ARGS="--graph-capture --dtypes bfloat16,float16 --shapes 128x197x3072"
step wall_inductor "${S1:-45}" python3 bench/bench_rational.py $ARGS --methods inductor_safe_pau \
    --out "$OUT/wall_inductor.json"
for round in 1 2; do
    for arm in base:0:0 rev:1:0 cols:0:1 revcols:1:1; do
        IFS=: read -r name rev cols <<<"$arm"
        secs=${S2:-45}; [[ $round == 1 ]] && secs=75  # each arm's first run autotunes cold
        step "wall_${name}_r${round}" "$secs" env FLASHKAT_ROWS_REVERSED=$rev FLASHKAT_COLS_FIRST=$cols \
            python3 bench/bench_rational.py $ARGS --methods flashkat_compiled_op --out "$OUT/wall_${name}_r${round}.json"
    done
done
wall_summary
for f in "$OUT"/wall_*_r1.log; do
    echo "-- picks in $(basename "$f")"
    template_picks "$f"
done
