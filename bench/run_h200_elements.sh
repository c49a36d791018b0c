#!/usr/bin/env bash
# Device call 42 (2026-11-29): the defaults after call 41 (slabs summed at 3072 too,
# backward._SLAB_MAX_CHANNELS 4096; the 64-wide 2-warp ROW_SUM loops offered, which led every
# choice at 192 channels, 15.4-15.6 us against 19.1-19.3), and the forward's elements per thread
# (forward.ELEMENTS_PER_THREAD, FLASHKAT_FORWARD_ELEMENTS_PER_THREAD; Inductor's 1-D configs give
# 8 per thread, and the bf16 forward at 3072 moves its bytes 13% slower than float32's).
# One H200, at most about 450 s:
#
#     run(command="bash bench/run_h200_elements.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
#
# 1. the lowerings' CUDA tests (every template config forced alone, autotuning with epilogues,
#    the forward's division, dx over dy, dynamic bf16 training), with 16 elements per thread;
# 2. the graphed rational: Inductor's PAU and flashkat at 3072 / 384 / 192 channels in three dtypes,
#    then flashkat at 3072 with 16 and with 32 elements per thread, same machine.
OUT_NAME=h200_elements
source "$(dirname "$0")/device_prelude.sh"
step pytest_cuda_lowerings "${S1:-180}" env FLASHKAT_FORWARD_ELEMENTS_PER_THREAD=16 \
    python3 -m pytest -q -p no:cacheprovider -rs -k cuda tests/test_lowerings.py
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest_cuda_lowerings.log" | tail -6
ARGS="--graph-capture --dtypes bfloat16,float16,float32"
step elems_default "${S2:-160}" python3 bench/bench_rational.py $ARGS --methods inductor_safe_pau,flashkat_compiled_op \
    --shapes 128x197x3072,128x197x384,128x197x192 --out "$OUT/elems_default.json"
step elems_16 "${S3:-60}" env FLASHKAT_FORWARD_ELEMENTS_PER_THREAD=16 python3 bench/bench_rational.py $ARGS \
    --methods flashkat_compiled_op --shapes 128x197x3072 --out "$OUT/elems_16.json"
step elems_32 "${S4:-50}" env FLASHKAT_FORWARD_ELEMENTS_PER_THREAD=32 python3 bench/bench_rational.py \
    --graph-capture --dtypes bfloat16,float16 --methods flashkat_compiled_op --shapes 128x197x3072 --out "$OUT/elems_32.json"
for v in default 16 32; do echo "-- $v"; grep -E "^(bfloat16|float16|float32) |one CUDA graph|GPU f\+b:|FAILED" "$OUT/elems_$v.log" | cut -c1-170; done
