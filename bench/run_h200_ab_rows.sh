#!/usr/bin/env bash
# Side by side on one H200 (about 500 s): KAT-T bf16 training steps (CUDA graphs, fused AdamW)
# with KAT's shared numerator row passed to the ops as it is (recognisers/shared_rows.py) and with
# the repeat kept (FLASHKAT_KEEP_REPEATED_ROWS=1), alternated twice (ViT-T: 7.98 ms in call 21, same settings); first the
# CUDA tests of the kernels and lowerings, in two processes (one did not finish in 170 s cold).
#
#     run(command="bash bench/run_h200_ab_rows.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
OUT_NAME=h200_ab_rows
source "$(dirname "$0")/device_prelude.sh"
export TORCHINDUCTOR_FORCE_DISABLE_CACHES=1  # each run compiles its own code
( step pytest_cuda_kernels "${S1:-160}" python3 -m pytest -q -p no:cacheprovider -rs -k cuda tests/test_triton_kernels.py ) &
( step pytest_cuda_lowerings "${S1:-160}" python3 -m pytest -q -p no:cacheprovider -rs -k cuda tests/test_lowerings.py ) &
wait
grep -hE "^(FAILED|ERROR)|passed|failed" "$OUT"/pytest_cuda_*.log | tail -8
args=(--models kat_t --dtypes bfloat16 --steps 30 --warmup 5 --compile-mode reduce-overhead --fused-adamw)
for i in 1 2; do
    train_step "rows_$i" "${S2:-85}" "${args[@]}" --methods flashkat
    FLASHKAT_KEEP_REPEATED_ROWS=1 train_step "repeat_$i" "${S2:-85}" "${args[@]}" --methods flashkat
done
