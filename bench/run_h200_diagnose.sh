#!/usr/bin/env bash
# A short follow-up call on one H200 (about 4 minutes), after bench/run_h200.sh or
# bench/run_h200x2_combined.sh:
#
#     run(command="bash bench/run_h200_diagnose.sh", kind="nvidia-h200", timeout_s=250)
#
#   1. KAT-T bf16 training step under flashkat and timm's ViT-T under Inductor, with --profile:
#      GPU-busy time per step and the largest kernels (what separates the two)
#   2. the rational at the two KAT-T shapes in float32 and bf16, static shapes, our compiled paths
#      and Inductor's
#   3. the GPU tests touched since the last full run (-k "fixture_kernels or cuda")
# Each step under its own timeout; logs and JSON in $OUT (at most 8 files come back).
set -u
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-$PWD/h200_diagnose_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
unset TRITON_INTERPRET
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT/pip_install.log" 2>&1
echo "== train profile ($(date -u +%T))"
timeout -k 5 "${TRAIN_S:-110}" python3 bench/bench_train.py --models kat_t --dtypes bfloat16 \
    --methods flashkat,vit_inductor --steps 10 --warmup 3 --profile 3 \
    --out "$OUT/h200_train_profile.json" >"$OUT/train_profile.log" 2>&1
echo "   rc $?"; grep -E "median|profiled|^ +[0-9]" "$OUT/train_profile.log" | head -64
echo "== rational, static shapes ($(date -u +%T))"
timeout -k 5 "${RATIONAL_S:-70}" python3 bench/bench_rational.py --dtypes float32,bfloat16 \
    --shapes 128x197x3072,128x197x768 \
    --methods inductor_safe_pau,flashkat_ops_eager,flashkat_compiled_pau,flashkat_compiled_op \
    --out "$OUT/h200_rational_static.json" >"$OUT/rational_static.log" 2>&1
echo "   rc $?"; grep -E "^(float32|bfloat16)|GPU f\+b|FAILED" "$OUT/rational_static.log" | cut -c1-260
echo "== tests ($(date -u +%T))"
timeout -k 5 "${PYTEST_S:-60}" python3 -m pytest -v -p no:cacheprovider -rs tests/test_kat_functions.py \
    tests/test_lowerings.py -k "fixture_kernels or cuda" >"$OUT/pytest_followup.log" 2>&1
echo "   rc $?"; grep -E "PASSED|FAILED|ERROR|passed|failed" "$OUT/pytest_followup.log" | tail -12
