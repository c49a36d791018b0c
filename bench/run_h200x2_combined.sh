#!/usr/bin/env bash
# Every GPU measurement of one session in one call on two H200s of one host:
#
#     run(command="bash bench/run_h200x2_combined.sh", kind="nvidia-h200-x2", timeout_s=600)
#
#   1. pip install (once, for every phase)
#   2. side by side, one GPU each (CUDA_VISIBLE_DEVICES), on separate halves of the host's 32 cores
#      (taskset), for PAR_S seconds (default 210):
#        GPU 0, cores 0-15:  bench/run_h200.sh's rational suite (bench_rational.py) and its plot
#        GPU 1, cores 16-31: bench/run_h200.sh's GPU tests (pytest; Inductor compile threads capped)
#      Each GPU has its own memory and bandwidth.  The do_bench medians of small shapes are bound by
#      the CPU-side cost of a call, so a busy neighbour could raise them a little; the GPU-time
#      columns (torch.profiler) are not affected.
#   3. alone on the machine, TRAIN_S seconds (default 130): training steps (bench_train.py) on GPU 0.
#      A step of a small model in bf16 is bound by the CPU that launches it: it must run alone.
#   4. bench/run_h200x2.sh, DIST_S seconds (default 200): data-parallel KAT-T under torch.compile
#      over NCCL on both GPUs
#   5. everything written is packed into one file, flashkat_h200x2_<date>.tar.gz (the device tool
#      brings back 8 files at most); the summaries are printed on stdout
#
# Knobs (environment): PAR_S, TRAIN_S, DIST_S (0 skips a phase), RATIONAL_DTYPES, RATIONAL_ARGS,
# PYTEST_FILES, TRAIN_CASES, TRAIN_ARGS, DIST_CASES, DIST_ARGS (defaults below).
set -u
cd "$(dirname "$0")/.." || exit 1
DATE=$(date +%F)
OUT=${OUT:-$PWD/h200x2_combined_out_$DATE}
mkdir -p "$OUT"
PY=python3
command -v python3 >/dev/null 2>&1 || PY=python
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
START=$(date +%s)
PAR_S=${PAR_S:-210}
TRAIN_S=${TRAIN_S:-130}
DIST_S=${DIST_S:-200}
ncpu=$(nproc)
half=$((ncpu / 2))
pin() { if command -v taskset >/dev/null 2>&1 && [ "$half" -ge 2 ]; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }

echo "== pip"
timeout 90 "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT/pip_install.log" 2>&1
echo "   rc $?"

if [ "$PAR_S" -gt 0 ]; then
    echo "== rational (GPU 0) and tests (GPU 1) side by side ($(date -u +%T))"
    CUDA_VISIBLE_DEVICES=0 OUT=$OUT/gpu0 FLASHKAT_STEPS="env rational plot" FLASHKAT_BUDGET_S=$PAR_S \
        FLASHKAT_RATIONAL_DTYPES=${RATIONAL_DTYPES:-float32 bfloat16} \
        FLASHKAT_RATIONAL_ARGS=${RATIONAL_ARGS:---shapes 128x197x768,128x197x3072,7x33x200 --methods inductor_safe_pau,flashkat_style_triton,flashkat_ops_eager,flashkat_compiled_pau,flashkat_compiled_op} \
        FLASHKAT_TAG=gpu0 pin "0-$((half - 1))" bash bench/run_h200.sh >"$OUT/gpu0.txt" 2>&1 &
    p0=$!
    CUDA_VISIBLE_DEVICES=1 OUT=$OUT/gpu1 FLASHKAT_STEPS="pytest" FLASHKAT_BUDGET_S=$PAR_S \
        FLASHKAT_PYTEST_FILES=${PYTEST_FILES:-tests/test_lowerings.py::test_cuda_template_numerics_autotune_epilogue tests/test_lowerings.py::test_cuda_training_dynamic_batch_bf16_and_forward_fusion tests/test_kat_functions.py tests/test_triton_kernels.py tests/test_ops.py} \
        FLASHKAT_PYTEST_S=$PAR_S FLASHKAT_PYTEST_RESERVE_S=5 FLASHKAT_PYTEST_ARGS="-v" TORCHINDUCTOR_COMPILE_THREADS=8 \
        FLASHKAT_TAG=gpu1 pin "$half-$((ncpu - 1))" bash bench/run_h200.sh >"$OUT/gpu1.txt" 2>&1 &
    p1=$!
    wait $p0 $p1
    for g in gpu0 gpu1; do echo "-- $g"; sed -n '/== done/,/^files in OUT/p' "$OUT/$g.txt"; done
fi

if [ "$TRAIN_S" -gt 0 ]; then
    echo "== training steps, alone ($(date -u +%T))"
    CUDA_VISIBLE_DEVICES=0 OUT=$OUT/train FLASHKAT_STEPS="train" FLASHKAT_BUDGET_S=$TRAIN_S \
        FLASHKAT_TRAIN_CASES=${TRAIN_CASES:-kat_t:bfloat16} \
        FLASHKAT_TRAIN_ARGS=${TRAIN_ARGS:---methods flashkat,vit_inductor,eager_flashkat} \
        FLASHKAT_TAG=quiet bash bench/run_h200.sh >"$OUT/train.txt" 2>&1
    sed -n '/== done/,/^files in OUT/p' "$OUT/train.txt"
fi

if [ "$DIST_S" -gt 0 ]; then
    echo "== distributed ($(date -u +%T))"
    OUT=$OUT/dist FLASHKAT_STEPS="env dist" FLASHKAT_BUDGET_S=$DIST_S \
        FLASHKAT_DIST_CASES=${DIST_CASES:-flashkat:fsdp2 inductor:fsdp2 flashkat:ddp} \
        FLASHKAT_DIST_ARGS=${DIST_ARGS:---timed-steps 10} \
        bash bench/run_h200x2.sh >"$OUT/dist.txt" 2>&1
    sed -n '/== done/,/^files in OUT/p' "$OUT/dist.txt"
fi

for d in gpu0 gpu1 train dist; do
    [ -f "$OUT/$d/logs.tar.gz" ] && tar -xzf "$OUT/$d/logs.tar.gz" -C "$OUT/$d" && rm "$OUT/$d/logs.tar.gz"
done
grep -h -A3 "^ratios" "$OUT"/train/train_*.log 2>/dev/null
grep -h -E "^(FAILED|ERROR)|passed|failed" "$OUT"/gpu1/pytest_gpu.log 2>/dev/null | tail -8
grep -h -E "ddp|fsdp2" "$OUT"/dist/dist_*.log 2>/dev/null | grep -E "step .* ms" | head

echo "== done in $(($(date +%s) - START))s; packing"
pack=/tmp/flashkat_h200x2_$DATE.tar.gz
(cd "$OUT" && tar -czf "$pack" . && find . -mindepth 1 -delete && mv "$pack" .)
ls -la "$OUT"
