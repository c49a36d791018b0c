#!/usr/bin/env bash
# ROW_SUM offered by default (backward._ROW_SUM_LEVELS = 128 x 8 and 128 x 4, _ROW_SUM_BASE the
# 16 x 128 and 8 x 128 pipelined loops that led every width in device call 36): the CUDA tests
# (two pytest processes side by side: the lowerings' and the kernels'), then the README table's
# columns (Inductor's hand-written PAU, flashkat on fk.rational) at every suite shape, one CUDA
# graph per step.  PARTS picks (default "tests bf16"; "half32" = fp16 and float32):
#
#     run(command="bash bench/run_h200_rowsum_default.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
#     run(command="PARTS=half32 bash bench/run_h200_rowsum_default.sh; ...", ...)
OUT_NAME=h200_rowsum_default
source "$(dirname "$0")/device_prelude.sh"
PARTS=" ${PARTS:-tests bf16} "
SUITE="python3 bench/bench_rational.py --suite --graph-capture --methods inductor_safe_pau,flashkat_compiled_op"
if [[ "$PARTS" == *" tests "* ]]; then
    step pytest_cuda_kernels "${S1:-300}" python3 -m pytest -q -p no:cacheprovider -rs -k cuda \
        tests/test_triton_kernels.py &
    step pytest_cuda_lowerings "${S1:-300}" python3 -m pytest -q -p no:cacheprovider -rs -k cuda \
        tests/test_lowerings.py
    wait
    for f in kernels lowerings; do
        grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest_cuda_$f.log" | tail -6
    done
fi
if [[ "$PARTS" == *" bf16 "* ]]; then
    step suite_bf16 "${S2:-240}" $SUITE --dtypes bfloat16 --out "$OUT/suite_bf16.json"
    grep -E "^bfloat16 |one CUDA graph|FAILED" "$OUT/suite_bf16.log" | cut -c1-150
fi
if [[ "$PARTS" == *" half32 "* ]]; then
    step suite_half32 "${S3:-420}" $SUITE --dtypes float16,float32 --out "$OUT/suite_half32.json"
    grep -E "^(float16|float32) |one CUDA graph|FAILED" "$OUT/suite_half32.log" | cut -c1-150
fi
