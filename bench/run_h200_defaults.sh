#!/usr/bin/env bash
# Device call 43 (2026-11-29): the suite's rows of Inductor's PAU and flashkat at KAT's wide widths
# with the defaults of calls 41-42 (slabs summed at 3072 too; the 64-wide 2-warp ROW_SUM loops
# offered; 16 elements per thread in the forward's large 1-D kernels), then the lowerings' CUDA
# tests with them.  One H200, at most about 560 s:
#
#     run(command="bash bench/run_h200_defaults.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
#
# SHAPES / DTYPES / PARTS ("suite tests") choose; the small widths and odd shapes:
#     SHAPES=128x197x384,128x197x192,7x33x200,32x50x1000 PARTS=suite bash bench/run_h200_defaults.sh
OUT_NAME=h200_defaults
source "$(dirname "$0")/device_prelude.sh"
PARTS=" ${PARTS:-suite tests} "
SHAPES=${SHAPES:-128x197x3072,128x197x1536,128x197x768}
if [[ "$PARTS" == *" suite "* ]]; then
    step suite "${S1:-250}" python3 bench/bench_rational.py --suite --graph-capture \
        --methods inductor_safe_pau,flashkat_compiled_op --dtypes "${DTYPES:-bfloat16,float16,float32}" \
        --shapes "$SHAPES" --out "$OUT/suite.json"
    grep -E "^(bfloat16|float16|float32) |one CUDA graph|FAILED" "$OUT/suite.log" | cut -c1-150
fi
if [[ "$PARTS" == *" tests "* ]]; then
    step pytest_cuda_lowerings "${S2:-290}" python3 -m pytest -q -p no:cacheprovider -rs -k cuda tests/test_lowerings.py
    grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest_cuda_lowerings.log" | tail -6
fi
