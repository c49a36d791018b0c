#!/usr/bin/env bash
# A follow-up call on one H200, after bench/run_h200.sh or bench/run_h200x2_combined.sh:
#
#     run(command="bash bench/run_h200_diagnose.sh", kind="nvidia-h200", timeout_s=600)
#
# (the session that wrote it ran it with TRAIN_S=110 RATIONAL_S=70 PYTEST_S=60 and the
# pytest files below limited to -k "fixture_kernels or cuda", in 250 s)
#
#   1. KAT-T bf16 training step under flashkat and timm's ViT-T under Inductor, with --profile:
#      GPU-busy time per step and the largest kernels (what separates the two)
#   2. the rational at the two KAT-T shapes in float32 and bf16, static shapes, our compiled paths
#      and Inductor's
#   3. the GPU tests: the ops and kernels in full, the CUDA lowering tests, the fixture kernels
#      (PYTEST_FILES / PYTEST_K override)
# Each step under its own timeout; logs and JSON in $OUT (at most 8 files come back).
OUT_NAME=h200_diagnose
source "$(dirname "$0")/device_prelude.sh"
step train_profile "${TRAIN_S:-150}" python3 bench/bench_train.py --models kat_t --dtypes bfloat16 \
    --methods flashkat,vit_inductor --steps 10 --warmup 3 --profile 3 ${TRAIN_ARGS:-} \
    --out "$OUT/h200_train_profile.json"
grep -E "median|profiled|^ +[0-9]" "$OUT/train_profile.log" | head -64
step rational_static "${RATIONAL_S:-150}" python3 bench/bench_rational.py --dtypes float32,bfloat16 \
    --shapes 128x197x3072,128x197x768 \
    --methods inductor_safe_pau,flashkat_ops_eager,flashkat_compiled_pau,flashkat_compiled_op \
    --out "$OUT/h200_rational_static.json"
grep -E "^(float32|bfloat16)|GPU f\+b|FAILED" "$OUT/rational_static.log" | cut -c1-260
kargs=()
[ -n "${PYTEST_K:-}" ] && kargs=(-k "$PYTEST_K")
# shellcheck disable=SC2086 # PYTEST_FILES is a word list on purpose
step pytest_followup "${PYTEST_S:-250}" python3 -m pytest -q -p no:cacheprovider -rs \
    ${PYTEST_FILES:-tests/test_ops.py tests/test_triton_kernels.py tests/test_lowerings.py::test_cuda_template_numerics_autotune_epilogue tests/test_lowerings.py::test_cuda_training_dynamic_batch_bf16_and_forward_fusion tests/test_kat_functions.py::test_fixture_kernels_compute_the_registered_semantics} \
    "${kargs[@]}"
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest_followup.log" | tail -12
