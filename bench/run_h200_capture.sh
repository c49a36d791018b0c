#!/usr/bin/env bash
# The rational's forward + backward captured whole into one CUDA graph per step (bench_rational
# --graph-capture), one call on one H200 (about 150 s):
#
#     run(command="bash bench/run_h200_capture.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
#
# Wall-clock time without the lent machine's per-launch CPU cost and without the input copies of
# torch.compile's CUDA graphs (dy, a tangent from outside any graph, is copied on every replay
# there); also the default-mode GPU times after the forward's 2-D tiling was limited to rows of
# at most 1024 channels.
OUT_NAME=h200_capture
source "$(dirname "$0")/device_prelude.sh"
step rational_capture "${S1:-240}" python3 bench/bench_rational.py --dtypes "${DTYPES:-float32,bfloat16}" \
    --shapes "${SHAPES:-128x197x3072,128x197x768}" \
    --methods inductor_safe_pau,flashkat_compiled_pau,flashkat_compiled_op,flashkat_ops_eager \
    --graph-capture --out "$OUT/rational_capture.json"
grep -E "^(float32|bfloat16)|one CUDA graph|capture failed|GPU f\+b|FAILED" "$OUT/rational_capture.log" | cut -c1-260
