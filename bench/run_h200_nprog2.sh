#!/usr/bin/env bash
# Follow-up of run_h200_nprog.sh (about 220 s on one H200): (nominal BLOCK_C, programs per SM) =
# (128, 4), the default, against (256, 3), which took the bf16 template from 50.0 / 97.2 to 46.6 /
# 91.0 us at 768 / 1536 channels in call 25: float32 and bf16 at KAT's 192 / 384 / 768 / 3072.
#
#     run(command="bash bench/run_h200_nprog2.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=240)
OUT_NAME=h200_nprog2
source "$(dirname "$0")/device_prelude.sh"
export TORCHINDUCTOR_FORCE_DISABLE_CACHES=1
for v in 128,4 256,3; do
    step "nprog_${v/,/_}" "${S1:-100}" python3 -c "
import runpy, sys; sys.path.insert(0, 'bench')
import flashkat_inductor.lowerings.backward as bw
bw._ROW_PROGRAM_LEVELS = (($v),)  # one level: every config at that count
sys.argv = ['bench_rational.py', '--dtypes', 'float32,bfloat16', '--shapes', '128x197x192,128x197x384,128x197x768,128x197x3072',
            '--methods', 'flashkat_compiled_op', '--graph-capture', '--out', '$OUT/nprog_${v/,/_}.json']
runpy.run_path('bench/bench_rational.py', run_name='__main__')"
    echo "   nominal BLOCK_C, programs per SM = $v"
    grep -E "^bfloat16|one CUDA graph|GPU f\+b" "$OUT/nprog_${v/,/_}.log" | cut -c1-160
    grep -o '"best_kernel_desc": "[^"]*' "$OUT/nprog_${v/,/_}.log" | sed -E \
        's/.*BLOCK_C=([0-9]+), BLOCK_R=([0-9]+).*NPROG=([0-9]+).*PIPE_STAGES=(-?[0-9]+).*num_warps=([0-9]+)/   pick R=\2 C=\1 NPROG=\3 PIPE=\4 warps=\5/'
done
