#!/usr/bin/env bash
# Slabs of channels summed in the template at 3072 channels too (FLASHKAT_SLAB_MAX_CHANNELS=4096),
# prepared on the CPU and not yet timed.  Since the ROW_SUM loops lead at 3072 (device calls 38-39)
# the finishing sums there are four kernels, 11.1 us of the 244 us bf16 step, against 2.6-3.0 us
# at 192-1536 channels where the template sums slabs; the sm_90 build of the ROW_SUM loops does not
# change with slabs (backward._slab).  One H200, at most about 555 s:
#
#     run(command="bash bench/run_h200_slabs.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
#
# 1. the CUDA tests that force every template config alone (3 x 5 x 3072 among their shapes) and
#    autotune with epilogues, with slabs at 3072;
# 2. the graphed rational at 3072 in bf16 / fp16 / float32: Inductor's PAU and flashkat with the
#    limit as it is (2048), then flashkat with 4096, same machine;
# 3. every template choice at 3072 bf16 with slabs, beside four more ROW_SUM loops of 32 rows or
#    2 warps (sm_90 builds: 32 x 128 x 4 warps 94 registers and 46.2-46.7 instructions per element
#    in the loop, against 48.1 for 16 x 128), and the ROW_SUM loops also at 27 row programs per
#    channel tile (level 123 x 5: 648 programs, one wave of the five 95-register 16 x 128 programs
#    an SM holds, where 128 x 8 launches 1056, 1.6 waves, and 128 x 5's 28 per tile overflowed the
#    wave by 12 programs: 178-180 us in call 36);
# 4. every choice at 192 channels in bf16 / fp16 beside two 64-wide ROW_SUM loops of 2 warps: the
#    default configs' pipelined loops are all 128 or 256 wide, so 192 channels leave a quarter of
#    their lanes idle (the fp16 step there is 1.96x Inductor's in call 39, bf16 2.49x).
# If 4096 wins: backward._SLAB_MAX_CHANNELS defaults to it, and the suite's 3072 rows are re-run;
# if it does not, and 128 x 4 alone is faster end to end, _ROW_SUM_DEFAULT drops 128 x 8.
OUT_NAME=h200_slabs
source "$(dirname "$0")/device_prelude.sh"
step pytest_cuda_slabs "${S1:-190}" env FLASHKAT_SLAB_MAX_CHANNELS=4096 python3 -m pytest -q -p no:cacheprovider -rs \
    tests/test_lowerings.py -k "cuda_every_template_config or cuda_template_numerics"
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest_cuda_slabs.log" | tail -6
ARGS="--graph-capture --dtypes bfloat16,float16,float32"
# (192 channels beside 3072 in the first run, which slabs do not change: the fp16 step there was
# 1.96x Inductor's in call 39, 2.07x in calls 29-30)
step slab_2048 "${S2:-140}" python3 bench/bench_rational.py $ARGS --methods inductor_safe_pau,flashkat_compiled_op \
    --shapes 128x197x3072,128x197x192 --out "$OUT/slab_2048.json"
step slab_4096 "${S3:-60}" env FLASHKAT_SLAB_MAX_CHANNELS=4096 python3 bench/bench_rational.py $ARGS \
    --methods flashkat_compiled_op --shapes 128x197x3072 --out "$OUT/slab_4096.json"
# the ROW_SUM loops at 128 x 4 programs only: the workspaces then hold 22 programs' entries at 3072
# instead of 44, whose finishing sums took 6.8 us (calls 29-34) against 11.1 us since (calls 38-39),
# more than the 3.3 us the 128 x 8 level saved the template (148.6 against 151.9 us, call 36)
step slab_2048_128x4 "${S6:-45}" env FLASHKAT_ROW_SUM_LEVELS=128x4 python3 bench/bench_rational.py $ARGS \
    --methods flashkat_compiled_op --shapes 128x197x3072 --out "$OUT/slab_2048_128x4.json"
for v in 2048 4096 2048_128x4; do echo "-- $v"; grep -E "^(bfloat16|float16|float32) |one CUDA graph|FAILED" "$OUT/slab_$v.log" | cut -c1-150; done
step choices_slabs "${S4:-70}" env FLASHKAT_SLAB_MAX_CHANNELS=4096 python3 bench/probe_template_choices.py \
    --dtypes bfloat16 --shapes 128x197x3072 --row-sum-levels 128x8,128x4,123x5 \
    --add 32x128x4x3x3x1,32x128x4x2x2x1,32x64x2x3x3x1,16x64x2x4x4x1 --out "$OUT/choices_slabs.json"
grep -A10 "^bfloat16" "$OUT/choices_slabs.log" | cut -c1-130
step choices_192 "${S5:-50}" python3 bench/probe_template_choices.py --dtypes bfloat16,float16 \
    --shapes 128x197x192 --add 16x64x2x4x4x1,32x64x2x3x3x1 --out "$OUT/choices_192.json"
grep -A6 -E "^(bfloat16|float16)" "$OUT/choices_192.log" | cut -c1-130
