#!/usr/bin/env bash
# Every GPU measurement of one session in one call on two H200s of one host:
#
#     run(command="bash bench/run_h200x2_combined.sh", kind="nvidia-h200-x2", timeout_s=600)
#
#   1. pip install (once, for both phases)
#   2. bench/run_h200x2.sh: data-parallel KAT-T under torch.compile over NCCL (DDP, FSDP2)
#   3. two bench/run_h200.sh side by side, one per GPU (CUDA_VISIBLE_DEVICES):
#        GPU 0: the rational (bench_rational.py) and then training steps (bench_train.py)
#        GPU 1: the GPU tests (pytest) and then training steps
#      Each GPU has its own memory and bandwidth; the two processes share the host's 32 cores, so
#      the small shapes' do_bench medians (bound by the CPU-side cost of a call) can read a little
#      higher than on a machine of their own; the GPU-time columns are not affected.
#   4. everything written is packed into one file, flashkat_h200x2_<date>.tar.gz (the device tool
#      brings back 8 files at most), with the summaries of the three runs printed on stdout
#
# Knobs (environment; each run's own knobs, FLASHKAT_*, are set here per phase):
#   DIST_S      seconds for phase 2 (default 230)         DIST_CASES  its backend:wrapper cases
#   SINGLE_S    seconds for phase 3 (default 290)
#   GPU0_RATIONAL_DTYPES, GPU0_RATIONAL_ARGS, GPU0_TRAIN_CASES, GPU1_PYTEST_FILES, GPU1_TRAIN_CASES,
#   TRAIN_ARGS  (see the defaults below)
#   SKIP_DIST=1 phase 3 alone
set -u
cd "$(dirname "$0")/.." || exit 1
DATE=$(date +%F)
OUT=${OUT:-$PWD/h200x2_combined_out_$DATE}
mkdir -p "$OUT"
PY=python3
command -v python3 >/dev/null 2>&1 || PY=python
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
START=$(date +%s)

echo "== pip"
timeout 90 "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT/pip_install.log" 2>&1
echo "   rc $?"

if [ "${SKIP_DIST:-0}" != 1 ]; then
    echo "== distributed ($(date -u +%T))"
    OUT=$OUT/dist FLASHKAT_STEPS="env dist" FLASHKAT_BUDGET_S=${DIST_S:-230} \
        FLASHKAT_DIST_CASES=${DIST_CASES:-flashkat:ddp inductor:ddp flashkat:fsdp2 inductor:fsdp2} \
        FLASHKAT_DIST_ARGS=${DIST_ARGS:---timed-steps 10} \
        bash bench/run_h200x2.sh >"$OUT/dist.txt" 2>&1
    sed -n '/== done/,$p' "$OUT/dist.txt"
fi

echo "== single-GPU work on both GPUs ($(date -u +%T))"
S=${SINGLE_S:-290}
TRAIN_ARGS=${TRAIN_ARGS:---methods flashkat,vit_inductor,eager_flashkat}
CUDA_VISIBLE_DEVICES=0 OUT=$OUT/gpu0 FLASHKAT_STEPS="env rational train plot" FLASHKAT_BUDGET_S=$S \
    FLASHKAT_RATIONAL_DTYPES=${GPU0_RATIONAL_DTYPES:-float32 bfloat16} \
    FLASHKAT_RATIONAL_ARGS=${GPU0_RATIONAL_ARGS:---shapes 128x197x768,128x197x3072,7x33x200 --methods inductor_safe_pau,flashkat_style_triton,flashkat_ops_eager,flashkat_compiled_pau,flashkat_compiled_op} \
    FLASHKAT_RATIONAL_SHARE=60 FLASHKAT_TRAIN_CASES=${GPU0_TRAIN_CASES:-kat_t:bfloat16} FLASHKAT_TRAIN_ARGS=$TRAIN_ARGS \
    FLASHKAT_TAG=gpu0 bash bench/run_h200.sh >"$OUT/gpu0.txt" 2>&1 &
p0=$!
CUDA_VISIBLE_DEVICES=1 OUT=$OUT/gpu1 FLASHKAT_STEPS="pytest train" FLASHKAT_BUDGET_S=$S \
    FLASHKAT_PYTEST_FILES=${GPU1_PYTEST_FILES:-tests/test_lowerings.py tests/test_kat_functions.py} \
    FLASHKAT_PYTEST_S=170 FLASHKAT_PYTEST_RESERVE_S=100 \
    FLASHKAT_TRAIN_CASES=${GPU1_TRAIN_CASES:-kat_s:float32} FLASHKAT_TRAIN_ARGS=$TRAIN_ARGS \
    FLASHKAT_TAG=gpu1 bash bench/run_h200.sh >"$OUT/gpu1.txt" 2>&1 &
p1=$!
wait $p0 $p1
for g in gpu0 gpu1; do echo "-- $g"; sed -n '/== done/,$p' "$OUT/$g.txt"; done
grep -h -A3 "^ratios" "$OUT"/gpu*/train_*.log 2>/dev/null
for g in gpu0 gpu1; do [ -f "$OUT/$g/logs.tar.gz" ] && tar -xzf "$OUT/$g/logs.tar.gz" -C "$OUT/$g" && rm "$OUT/$g/logs.tar.gz"; done
grep -h -E "passed|failed|error" "$OUT"/gpu1/pytest_gpu.log 2>/dev/null | tail -3

echo "== done in $(($(date +%s) - START))s; packing"
(cd "$OUT" && tar -czf "flashkat_h200x2_$DATE.tar.gz" --exclude "flashkat_h200x2_$DATE.tar.gz" . &&
    find . -mindepth 1 ! -name "flashkat_h200x2_$DATE.tar.gz" -delete)
ls -la "$OUT"
