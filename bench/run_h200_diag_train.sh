#!/usr/bin/env bash
# Why KAT-T bf16 under flashkat went from 9.22 to 11.77 ms per step between calls 2 and 3 of
# 2026-11-29 (forward.GROUPED_RANGES on by default, EXPANDED_COEFFICIENTS, the forward round trip
# narrowed through Dropout(p=0)), in one call on one H200 (about 230 s):
#
#     run(command="bash bench/run_h200_diag_train.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
#
#   1. the default build, default mode, under torch.profiler: GPU-busy time and the largest kernels
#   2. under CUDA graphs with forward.GROUPED_RANGES off
#   3. under CUDA graphs with the float32 round trips kept (FLASHKAT_KEEP_FLOAT32_ROUND_TRIPS=1)
OUT_NAME=h200_diag_train
source "$(dirname "$0")/device_prelude.sh"
TRAIN=(bench/bench_train.py --models kat_t --dtypes bfloat16 --methods flashkat --steps 20 --warmup 5)
step profile "${S1:-110}" python3 "${TRAIN[@]}" --profile 3 --out "$OUT/profile.json"
grep -E "median|profiled|^   " "$OUT/profile.log" | cut -c1-160 | head -40
step grouped_off "${S2:-90}" python3 -c "import runpy, sys; sys.argv = ['bench_train.py'] + sys.argv[1:]; sys.path.insert(0, 'bench')
from flashkat_inductor.lowerings import forward; forward.GROUPED_RANGES = False
runpy.run_path('bench/bench_train.py', run_name='__main__')" "${TRAIN[@]:1}" --compile-mode reduce-overhead \
    --out "$OUT/grouped_off.json"
grep -E "median" "$OUT/grouped_off.log" | cut -c1-250
FLASHKAT_KEEP_FLOAT32_ROUND_TRIPS=1 step keep_round_trips "${S3:-90}" python3 "${TRAIN[@]}" \
    --compile-mode reduce-overhead --out "$OUT/keep_round_trips.json"
grep -E "median" "$OUT/keep_round_trips.log" | cut -c1-250
