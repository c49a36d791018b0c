# Sourced by the one-H200 follow-up scripts (run_h200_diagnose.sh, run_h200_probe.sh,
# run_h200_followup.sh, run_h200_cudagraphs.sh) after they set OUT_NAME: the repository root as
# the working directory, OUT (the device tool's $OUT, else ./${OUT_NAME}_out), the environment,
# the editable install, and `step NAME SECONDS CMD...` (CMD under its own timeout, output to
# $OUT/NAME.log, its exit status printed).
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
OUT=${OUT:-$PWD/${OUT_NAME}_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
unset TRITON_INTERPRET
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT/pip_install.log" 2>&1

step() {
    local name=$1 secs=$2
    shift 2
    echo "== $name ($(date -u +%T))"
    timeout -k 5 "$secs" "$@" >"$OUT/$name.log" 2>&1
    echo "   rc $?"
}

# `cuda_tests SECONDS`: the CUDA tests of the kernels and lowerings as step pytest_cuda, then their
# summary lines
cuda_tests() {
    step pytest_cuda "$1" python3 -m pytest -q -p no:cacheprovider -rs -k cuda \
        tests/test_triton_kernels.py tests/test_lowerings.py
    grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest_cuda.log" | tail -8
}

# `train_step NAME SECONDS ARGS...`: bench/bench_train.py ARGS as step NAME, its rows in
# $OUT/NAME.json, then its summary lines
train_step() {
    local name=$1 secs=$2
    shift 2
    step "$name" "$secs" python3 bench/bench_train.py "$@" --out "$OUT/$name.json"
    grep -E "median|Error|^kat_" "$OUT/$name.log" | cut -c1-200 | head -12
}

# `wall_summary`: the graphed step's lines (wall against GPU time, its kernels) of every
# $OUT/wall_*.log, one block per log
wall_summary() {
    local f
    for f in "$OUT"/wall_*.log; do
        echo "-- $(basename "$f")"
        grep -E "one CUDA graph|GPU f\+b:" "$f" | cut -c1-160
    done
}

# `template_picks LOG...`: the backward template's autotuner pick in each LOG (its
# best_kernel_desc), one line each: tiles, row programs, pipelining, ROW_SUM mode, warps
template_picks() {
    grep -ho '"best_kernel_desc": "[^"]*' "$@" | sed -E \
        's/.*BLOCK_C=([0-9]+), BLOCK_R=([0-9]+).*NPROG_RUN=([0-9]+).*PIPE_STAGES=(-?[0-9]+).*ROW_SUM=([0-9]).*num_stages=([0-9]+), num_warps=([0-9]+)/   pick R=\2 C=\1 NPROG_RUN=\3 PIPE=\4 ROW_SUM=\5 warps=\7/'
}
