#!/usr/bin/env bash
# The forward's CUDA division and fused Horner steps (forward.FAST_DIVISION, FUSED_HORNER: 27 -> 23
# sm_90 instructions per element at 3072 bf16), side by side with both off, what bounds the backward
# template (Nsight Compute: run_h200_ncu.sh's profile step), a KAT-T bf16 step, and the suite's
# rows of the project's compiled methods in bf16 / fp16 (the forward is theirs).  PARTS picks:
#
#     run(command="bash bench/run_h200_forward.sh; cd $OUT && tar czf logs.tar.gz *.log *.csv && rm -f *.log *.csv *.ncu-rep",
#         kind="nvidia-h200", timeout_s=600)
#
# device call 33: PARTS="tests ab ncu train" (its `ab` old half failed: the wrapper's path); call 34:
# PARTS="ab suite".  One H200, each part at most about 150-250 s.
OUT_NAME=h200_forward
source "$(dirname "$0")/device_prelude.sh"
export TORCHINDUCTOR_FORCE_DISABLE_CACHES=1
PARTS=" ${PARTS:-tests ab ncu train} "
if [[ "$PARTS" == *" tests "* ]]; then
    step pytest_cuda "${S1:-150}" python3 -m pytest -q -p no:cacheprovider -rs tests/test_lowerings.py \
        -k "cuda_forward_division or cuda_template_numerics"
    grep -E "^(FAILED|ERROR)|passed|failed|Error" "$OUT/pytest_cuda.log" | tail -8
fi
if [[ "$PARTS" == *" ab "* ]]; then
    ARGS="--graph-capture --shapes 128x197x1536,128x197x3072 --methods inductor_safe_pau,flashkat_compiled_pau"
    ARGS="$ARGS --dtypes bfloat16,float16,float32"
    # both off (as before), then both on; ABRUNS="old new old2" adds a second "off" run (drift)
    for v in ${ABRUNS:-old new}; do
        step "fwd_$v" "${S2:-115}" python3 -c "
import runpy, sys
sys.path[:0] = ['.', 'bench']
import flashkat_inductor.lowerings.forward as fw
fw.FAST_DIVISION = fw.FUSED_HORNER = '$v' == 'new'
sys.argv = ['bench/bench_rational.py'] + '$ARGS --out $OUT/fwd_$v.json'.split()
runpy.run_path('bench/bench_rational.py', run_name='__main__')"
    done
    for v in ${ABRUNS:-old new}; do echo "-- $v"; grep -E "^(bfloat16|float16|float32) |FAILED" "$OUT/fwd_$v.log" | cut -c1-150; done
fi
if [[ "$PARTS" == *" ncu "* ]]; then
    source "$(dirname "$0")/run_h200_ncu.sh" --functions-only
    profile bf16_pipe3 "${S4:-90}" bfloat16 8x128x4x3x3
fi
if [[ "$PARTS" == *" train "* ]]; then
    train_step train_bf16 "${S5:-150}" --models kat_t --dtypes bfloat16 --methods vit_inductor,flashkat --steps 30 \
        --warmup 5 --compile-mode reduce-overhead --fused-adamw
fi
if [[ "$PARTS" == *" suite "* ]]; then
    step suite_half "${S6:-260}" python3 bench/bench_rational.py --suite --graph-capture --dtypes bfloat16,float16 \
        --methods flashkat_compiled_pau,flashkat_compiled_op --out "$OUT/suite_half.json"
    grep -E "^(bfloat16|float16) |FAILED" "$OUT/suite_half.log" | cut -c1-150
fi
