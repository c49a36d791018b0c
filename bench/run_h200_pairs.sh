#!/usr/bin/env bash
# Device call 49 of 2026-11-29, at commit 9646483: the ROW_SUM pair loops (backward._ROW_SUM_PAIRS,
# offered with FLASHKAT_ROW_SUM_PAIRS=1; removed in the commit after it, since the autotuner did not
# pick them: check out 9646483 to run this).  One H200, at most about 200 s (what the session had left):
#
#     run(command="bash bench/run_h200_pairs.sh; cd $OUT && tar czf rows.tar.gz *.json *.log && rm -f *.json *.log",
#         kind="nvidia-h200", timeout_s=240)
#
# 1. test_cuda_row_sum_pairs: each pair loop forced alone, against float64.
# 2. The graphed rational at 3072 bf16 / fp16 with the pair loops offered beside the defaults, and
#    Inductor's PAU in the same run (flashkat with the defaults: calls 47-48, 0.235-0.236 /
#    0.233-0.234 ms wall).
OUT_NAME=h200_pairs
source "$(dirname "$0")/device_prelude.sh"
step pytest_cuda_pairs "${S1:-75}" python3 -m pytest -q -p no:cacheprovider -rs tests/test_lowerings.py -k cuda_row_sum_pairs
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest_cuda_pairs.log" | tail -4
ARGS="--graph-capture --dtypes bfloat16,float16 --shapes 128x197x3072"
step wall_pairs "${S2:-80}" env FLASHKAT_ROW_SUM_PAIRS=1 python3 bench/bench_rational.py $ARGS --methods flashkat_compiled_op \
    --out "$OUT/wall_pairs.json"
step wall_inductor "${S3:-40}" python3 bench/bench_rational.py $ARGS --methods inductor_safe_pau --out "$OUT/wall_inductor.json"
wall_summary
