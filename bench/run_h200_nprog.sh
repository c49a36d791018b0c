#!/usr/bin/env bash
# How many row programs the backward template should have (about 200 s on one H200).  Before
# `_ROW_PROGRAM_LEVELS` (calls 25-26 of 2026-11-29, at d17fe68) the count came from the shapes
# only (backward._row_programs: programs per SM x SMs over C / a nominal BLOCK_C of 128), so at
# 3072 channels the 4 x 256 configs got 22 x 12 = 264 programs, two per SM where three fit
# (152-168 registers), and the 8 x 128 pick of call 24 528, 1.33 waves of three.  Here bf16
# forward + backward (one CUDA graph per step) and the autotuner's picks with a single level
# (nominal BLOCK_C, programs per SM) = (256, 3): 396 programs of 4 x 256 at 3072, one full wave;
# and (256, 6): two waves.
#
#     run(command="bash bench/run_h200_nprog.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=400)
OUT_NAME=h200_nprog
source "$(dirname "$0")/device_prelude.sh"
export TORCHINDUCTOR_FORCE_DISABLE_CACHES=1
for v in 256,3 256,6; do
    step "nprog_${v/,/_}" "${S1:-110}" python3 -c "
import runpy, sys; sys.path.insert(0, 'bench')
import flashkat_inductor.lowerings.backward as bw
bw._ROW_PROGRAM_LEVELS = (($v),)  # one level: every config at that count
sys.argv = ['bench_rational.py', '--dtypes', 'bfloat16', '--shapes', '128x197x768,128x197x1536,128x197x3072',
            '--methods', 'flashkat_compiled_op', '--graph-capture', '--out', '$OUT/nprog_${v/,/_}.json']
runpy.run_path('bench/bench_rational.py', run_name='__main__')"
    echo "   nominal BLOCK_C, programs per SM = $v"
    grep -E "^bfloat16|one CUDA graph|GPU f\+b" "$OUT/nprog_${v/,/_}.log" | cut -c1-160
    grep -o '"best_kernel_desc": "[^"]*' "$OUT/nprog_${v/,/_}.log" | sed -E \
        's/.*BLOCK_C=([0-9]+), BLOCK_R=([0-9]+).*NPROG=([0-9]+).*PIPE_STAGES=(-?[0-9]+).*num_warps=([0-9]+)/   pick R=\2 C=\1 NPROG=\3 PIPE=\4 warps=\5/'
done
