#!/usr/bin/env bash
# The GPU measurements of this project in one call on one NVIDIA H200 (torch and Triton of the
# machine's image, no network, the repository copied as a working tree, $OUT empty):
#
#     run(command="bash bench/run_h200.sh", timeout_s=600)
#
# then, on the CPU machine, copy what came back from $OUT into bench/results/ and plot it:
#
#     cp <files_at>/h200_*.json <files_at>/*.log <files_at>/env.txt bench/results/   (rename env.txt / logs as needed)
#     python bench/plot_results.py bench/results/h200_rational_<date>.json --errors   # PNGs + README table
#     python bench/plot_results.py --merge h200_rational_<date> A.json B.json           # rows of two calls as one
#
# Steps, in this order, each under `timeout` with its stdout + stderr in a log under $OUT (a
# step that fails or times out does not stop the later ones):
#
#   pip       pip install --no-deps --no-build-isolation --no-index -e .     -> pip_install.log
#   env       nvidia-smi, python, torch, CUDA, Triton versions, git commit    -> env.txt
#   pytest    the GPU tests (triton kernels, ops, lowerings, kat_functions)   -> pytest_gpu.log (also on stdout)
#   rational  bench/bench_rational.py --suite, one process per dtype          -> rational_<dtype>.log,
#             (it rewrites its JSON after every row: a dtype cut off by its     h200_rational_<date>.json
#             timeout keeps the rows it measured)
#   train     bench/bench_train.py, one process per model:dtype case          -> train_<model>_<dtype>.log,
#             (skipped when bench/bench_train.py does not exist)                h200_train_<date>.json
#   plot      bench/plot_results.py on the rational rows (matplotlib is in     -> h200_rational_<date>_<dtype>.png,
#             the GPU image)                                                     h200_rational_<date>.md, plot.log
#
# and steps.tsv (step, exit code, seconds, timeout, log; exit 124 = timed out) and a summary on stdout.
# At the end every log and picture is packed into logs.tar.gz (the device tool brings back 8 files).
#
# Time: everything is planned to end FLASHKAT_BUDGET_S (default 540) seconds after the start, inside
# the call's 600 s.  Each step's timeout is the smaller of its cap and the time left (less what the
# later steps are promised).  The rational dtypes and the train cases run greedily in the order given,
# each with all the time left to its phase; one that would get less than its minimum is skipped and
# says so in steps.tsv.  One call will not hold the whole suite: run the rest in a second call, e.g.
#
#     run(command="FLASHKAT_STEPS='pip rational plot' FLASHKAT_RATIONAL_DTYPES='bfloat16 float16' FLASHKAT_TAG=b bash bench/run_h200.sh", timeout_s=600)
#
# Knobs (environment):
#   FLASHKAT_STEPS            steps to run (default "pip env pytest rational train plot")
#   FLASHKAT_PYTEST_FILES     the GPU test files (default: the four above)
#   FLASHKAT_PYTEST_S         the pytest step's cap in seconds (default 150)
#   FLASHKAT_PYTEST_RESERVE_S seconds kept for the steps after pytest (default 240)
#   FLASHKAT_PYTEST_ARGS      pytest's extra arguments (default -q -x)
#   FLASHKAT_BUDGET_S         total seconds planned (default 540)
#   FLASHKAT_RATIONAL_DTYPES  default "float32 bfloat16 float16"
#   FLASHKAT_RATIONAL_ARGS    extra arguments of bench_rational.py (e.g. "--methods a,b"); default none
#   FLASHKAT_RATIONAL_SHARE   % of the time left after pytest that the rational phase may use when the
#                             train step follows (default 55; what it leaves unused goes to train)
#   FLASHKAT_TRAIN_CASES      default "kat_t:float32 kat_t:bfloat16 kat_s:float32 kat_s:bfloat16"
#   FLASHKAT_TRAIN_ARGS       extra arguments of bench_train.py (e.g. "--steps 20 --warmup 5 --batch 128")
#   FLASHKAT_TAG              suffix of the result names (h200_rational_<date>_<tag>.json), for a second call
#   PYTHON                    the interpreter (default: python3, else python)
#   FLASHKAT_DRY_RUN=1        print the commands and their timeouts instead of running them (CPU check);
#                             OUT defaults to a fresh folder under /tmp then.  Each step is taken to last
#                             its whole timeout (the worst case) or FLASHKAT_DRY_STEP_S seconds
set -u

cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
DRY=${FLASHKAT_DRY_RUN:-0}
START=$(date +%s)
BUDGET=${FLASHKAT_BUDGET_S:-540}
DEADLINE=$((START + BUDGET))
DATE=$(date +%F)
TAG=${FLASHKAT_TAG:-}
SUFFIX=${TAG:+_$TAG}
STEPS=" ${FLASHKAT_STEPS:-pip env pytest rational train plot} "
RATIONAL_DTYPES=${FLASHKAT_RATIONAL_DTYPES:-float32 bfloat16 float16}
RATIONAL_SHARE=${FLASHKAT_RATIONAL_SHARE:-55}
TRAIN_CASES=${FLASHKAT_TRAIN_CASES:-kat_t:float32 kat_t:bfloat16 kat_s:float32 kat_s:bfloat16}
PLOT_RESERVE=25   # seconds kept for the plot step at the end

OUT_NAME=h200
. "$ROOT/bench/runlib.sh"

# merge_json DEST PART... : the row lists of the parts that exist, concatenated into DEST
merge_json() {
    local dest=$1
    shift
    local parts=()
    local p
    for p in "$@"; do [ -s "$p" ] && parts+=("$p"); done
    if [ "$DRY" = 1 ]; then
        echo "   [dry run] merge ${#parts[@]} part(s) of $* -> $dest"
        return
    fi
    if [ "${#parts[@]}" = 0 ]; then
        echo "   no rows to merge into ${dest#"$OUT"/} (no part finished)"
        return
    fi
    "$PY" - "$dest" "${parts[@]}" <<'PYEOF'
import json, os, sys
dest, parts = sys.argv[1], sys.argv[2:]
rows, used = [], []
for p in parts:
    try:
        with open(p) as f:
            got = json.load(f)
        rows += got if isinstance(got, list) else [got]
        used.append(p)
    except Exception as e:  # noqa: BLE001
        print(f"   merge: skipped {p}: {type(e).__name__}: {e}")
with open(dest, "w") as f:
    json.dump(rows, f, indent=1)
for p in used:
    os.remove(p)
print(f"   {len(rows)} rows from {len(used)} part(s) -> {dest}")
PYEOF
}

echo "flashkat H200 run: $(date -u '+%F %T') UTC, budget ${BUDGET}s, steps:${STEPS}, OUT=$OUT, python=$PY$([ "$DRY" = 1 ] && echo ' [DRY RUN]')"

# ---- pip -----------------------------------------------------------------------------------
if want pip; then
    run_step pip "$OUT/pip_install.log" "$(min 60 "$(left)")" 10 \
        "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e .
fi

# ---- env -----------------------------------------------------------------------------------
if want env; then
    echo "== env -> env.txt"
    if [ "$DRY" = 1 ]; then
        echo "   [dry run] nvidia-smi, python/torch/triton versions, git commit -> $OUT/env.txt"
        printf 'env\tdry\t0\t-\tenv.txt\n' >>"$SUMMARY"
    else
        t0=$(now)
        {
            echo "# $(date -u '+%F %T') UTC, $(hostname), kernel $(uname -r), $(nproc) CPUs"
            echo "# repository: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo 'no git metadata')"
            git -C "$ROOT" status --short 2>/dev/null | head -n 40 | sed 's/^/#   /'
            echo "# NCCL_NVLS_ENABLE=$NCCL_NVLS_ENABLE TORCH_SYMM_MEM_DISABLE_MULTICAST=$TORCH_SYMM_MEM_DISABLE_MULTICAST"
            echo
            timeout 30 nvidia-smi 2>&1 || echo "nvidia-smi failed (rc $?)"
            echo
            timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit,pcie.link.gen.max \
                --format=csv 2>&1
            echo
            timeout 120 "$PY" - <<'PYEOF' 2>&1
import platform, sys
print("python", sys.version.split()[0], platform.platform())
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
      "cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name}, capability {p.major}.{p.minor}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs")
try:
    import triton
    print("triton", triton.__version__)
except Exception as e:  # noqa: BLE001
    print("triton: not importable:", e)
for name in ("flashkat_inductor", "timm", "matplotlib", "pytest", "numpy", "sympy"):
    try:
        m = __import__(name)
        print(name, getattr(m, "__version__", "?"), getattr(m, "__file__", ""))
    except Exception as e:  # noqa: BLE001
        print(name, "not importable:", type(e).__name__, e)
from importlib.metadata import entry_points
print("torch_dynamo_backends entry points:", [e.name for e in entry_points(group="torch_dynamo_backends")])
PYEOF
        } >"$OUT/env.txt" 2>&1
        printf 'env\t0\t%s\t-\tenv.txt\n' "$(($(now) - t0))" >>"$SUMMARY"
        grep -E '^(torch|triton|  cuda:)' "$OUT/env.txt" | sed 's/^/   /'
    fi
fi

HAVE_TRAIN=0
[ -f bench/bench_train.py ] && want train && HAVE_TRAIN=1

# ---- GPU tests -----------------------------------------------------------------------------
if want pytest; then
    tests=()
    for f in ${FLASHKAT_PYTEST_FILES:-tests/test_triton_kernels.py tests/test_ops.py tests/test_lowerings.py tests/test_kat_functions.py}; do
        if [ -f "${f%%::*}" ]; then tests+=("$f"); else echo "   (missing: $f)"; fi
    done
    # keep at least 4 minutes for the benchmarks after it
    t=$(min "${FLASHKAT_PYTEST_S:-150}" $(($(left) - ${FLASHKAT_PYTEST_RESERVE_S:-240})))
    TEE=1
    run_step pytest "$OUT/pytest_gpu.log" "$t" 30 "$PY" -m pytest -p no:cacheprovider -rs --durations=15 ${FLASHKAT_PYTEST_ARGS:--q -x} "${tests[@]}"
    TEE=0
fi

# ---- rational suite, one process per dtype -------------------------------------------------
RATIONAL_JSON=$OUT/h200_rational_${DATE}${SUFFIX}.json
if want rational; then
    avail=$(($(left) - PLOT_RESERVE))
    if [ "$HAVE_TRAIN" = 1 ]; then
        phase_end=$(($(now) + avail * RATIONAL_SHARE / 100))
    else
        phase_end=$(($(now) + avail))
    fi
    parts=()
    for d in $RATIONAL_DTYPES; do
        part=$OUT/parts/rational_$d.json
        parts+=("$part")
        # shellcheck disable=SC2086 # FLASHKAT_RATIONAL_ARGS is a word list on purpose
        run_step "rational_$d" "$OUT/rational_$d.log" $((phase_end - $(now))) 45 \
            "$PY" bench/bench_rational.py --suite --dtypes "$d" --out "$part" ${FLASHKAT_RATIONAL_ARGS:-}
    done
    merge_json "$RATIONAL_JSON" "${parts[@]}"
fi

# ---- training steps, one process per model:dtype ------------------------------------------
TRAIN_JSON=$OUT/h200_train_${DATE}${SUFFIX}.json
if want train; then
    if [ "$HAVE_TRAIN" = 0 ]; then
        echo "== train: SKIPPED, bench/bench_train.py does not exist"
        printf 'train\tskipped\t0\t-\tno bench/bench_train.py\n' >>"$SUMMARY"
    else
        parts=()
        split=1
        grep -q -- '--models' bench/bench_train.py && grep -q -- '--dtypes' bench/bench_train.py || split=0
        if [ "$split" = 1 ]; then
            for c in $TRAIN_CASES; do
                model=${c%%:*}
                dtype=${c#*:}
                part=$OUT/parts/train_${model}_$dtype.json
                parts+=("$part")
                # shellcheck disable=SC2086
                run_step "train_${model}_$dtype" "$OUT/train_${model}_$dtype.log" $(($(left) - PLOT_RESERVE)) 60 \
                    "$PY" bench/bench_train.py --models "$model" --dtypes "$dtype" --out "$part" ${FLASHKAT_TRAIN_ARGS:-}
            done
        else
            part=$OUT/parts/train_all.json
            parts+=("$part")
            # shellcheck disable=SC2086
            run_step train "$OUT/train.log" $(($(left) - PLOT_RESERVE)) 60 \
                "$PY" bench/bench_train.py --out "$part" ${FLASHKAT_TRAIN_ARGS:-}
        fi
        merge_json "$TRAIN_JSON" "${parts[@]}"
    fi
fi

# ---- plots and the README table of the rational rows ---------------------------------------
if want plot; then
    if [ -s "$RATIONAL_JSON" ] || [ "$DRY" = 1 ]; then
        t=$(left)
        [ "$t" -lt "$PLOT_RESERVE" ] && t=$PLOT_RESERVE
        t=$(min 120 "$t")
        run_step plot "$OUT/plot.log" "$t" 10 \
            "$PY" bench/plot_results.py "$RATIONAL_JSON" --errors --table-out "$OUT/h200_rational_${DATE}${SUFFIX}.md"
        run_step plot_gpu "$OUT/plot_gpu.log" "$t" 10 \
            "$PY" bench/plot_results.py "$RATIONAL_JSON" --errors --gpu-time --table-out "$OUT/h200_rational_${DATE}${SUFFIX}_gpu.md"
    else
        echo "== plot: SKIPPED, no rational rows"
    fi
fi

finish
exit 0
