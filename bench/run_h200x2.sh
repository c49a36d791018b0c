#!/usr/bin/env bash
# Data-parallel KAT-T training under torch.compile on two H200s of one host (NCCL), in one call:
#
#     run(command="bash bench/run_h200x2.sh", kind="nvidia-h200-x2", timeout_s=600)
#
# then, on the CPU machine, copy the JSON that came back from $OUT into bench/results/ (with a
# line in bench/results/README.md).  Steps, each under `timeout`, stdout + stderr in a log under
# $OUT; a failing step does not stop the later ones:
#
#   pip    pip install --no-deps --no-build-isolation --no-index -e .               -> pip_install.log
#   env    nvidia-smi (GPUs and their links), python, torch, NCCL, Triton versions  -> env.txt
#   dist   bench/bench_distributed.py under torchrun, --nproc_per_node 2, on CUDA    -> dist_<backend>_<wrapper>.log,
#          with NCCL and --config tiny (KAT-T, 224 x 224, global batch 128), one        h200x2_distributed_<date>.json
#          torchrun per backend:wrapper case (flashkat/inductor x ddp/fsdp2), each
#          with all the time left (the script writes its rows only at its end: a
#          case cut off by its timeout loses only its own row)
#
# and steps.tsv (step, exit code, seconds, timeout, log; 124 = timed out; bench_distributed.py
# exits 1 when a case's errors against the single process exceed its tolerances).
#
# NVLink multicast stays off (NCCL_NVLS_ENABLE=0, TORCH_SYMM_MEM_DISABLE_MULTICAST=1,
# NVSHMEM_DISABLE_NVLS=1, exported here as well): the machine's rules ask for it.
#
# Knobs (environment):
#   FLASHKAT_STEPS       default "pip env dist"
#   FLASHKAT_BUDGET_S    total seconds planned (default 520: a timed-out torchrun gets 40 s more to stop
#                        its workers, inside the call's 600 s)
#   FLASHKAT_NPROC       processes (= GPUs) (default 2)
#   FLASHKAT_DIST_CASES  default "flashkat:ddp inductor:ddp flashkat:fsdp2 inductor:fsdp2";
#                        "all" runs every case in one torchrun
#   FLASHKAT_DIST_ARGS   extra arguments of bench_distributed.py (e.g. "--timed-steps 20 --batch 128")
#   FLASHKAT_TAG         suffix of the result name (h200x2_distributed_<date>_<tag>.json)
#   PYTHON               the interpreter (default: python3, else python)
#   FLASHKAT_DRY_RUN=1   print the commands and their timeouts instead of running them (each step
#                        taken to last its whole timeout, or FLASHKAT_DRY_STEP_S seconds)
set -u

cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
DRY=${FLASHKAT_DRY_RUN:-0}
START=$(date +%s)
BUDGET=${FLASHKAT_BUDGET_S:-520}
DEADLINE=$((START + BUDGET))
DATE=$(date +%F)
TAG=${FLASHKAT_TAG:-}
STEPS=" ${FLASHKAT_STEPS:-pip env dist} "
NPROC=${FLASHKAT_NPROC:-2}
CASES=${FLASHKAT_DIST_CASES:-flashkat:ddp inductor:ddp flashkat:fsdp2 inductor:fsdp2}

OUT_NAME=h200x2
. "$ROOT/bench/runlib.sh"
KILL_AFTER=40   # torchrun answers SIGTERM by stopping its workers (SIGTERM, then SIGKILL after 30 s)
TAIL_LINES=6

# after a timed-out case: workers run in sessions of their own, and any left on the GPUs (started by
# this script on this leased machine) would hold them through the next case; stop them by id
on_timeout() {
    local pids
    pids=$(timeout 20 nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null | tr -d ' ' | grep -E '^[0-9]+$')
    if [ -n "$pids" ]; then
        echo "   stopping leftover GPU processes: $(echo "$pids" | tr '\n' ' ')"
        for pid in $pids; do kill -9 "$pid" 2>/dev/null; done
        sleep 3
    fi
}

echo "flashkat H200 x$NPROC distributed run: $(date -u '+%F %T') UTC, budget ${BUDGET}s, steps:${STEPS}, OUT=$OUT, python=$PY$([ "$DRY" = 1 ] && echo ' [DRY RUN]')"

if want pip; then
    t=$(left)
    [ "$t" -gt 60 ] && t=60
    run_step pip "$OUT/pip_install.log" "$t" 10 "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e .
fi

if want env; then
    echo "== env -> env.txt"
    if [ "$DRY" = 1 ]; then
        echo "   [dry run] nvidia-smi, nvidia-smi topo -m, python/torch/NCCL/triton versions -> $OUT/env.txt"
    else
        {
            echo "# $(date -u '+%F %T') UTC, $(hostname), kernel $(uname -r), $(nproc) CPUs"
            echo "# repository: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo 'no git metadata')"
            echo "# NCCL_NVLS_ENABLE=$NCCL_NVLS_ENABLE TORCH_SYMM_MEM_DISABLE_MULTICAST=$TORCH_SYMM_MEM_DISABLE_MULTICAST NVSHMEM_DISABLE_NVLS=$NVSHMEM_DISABLE_NVLS"
            echo
            timeout 30 nvidia-smi 2>&1 || echo "nvidia-smi failed (rc $?)"
            echo
            timeout 30 nvidia-smi topo -m 2>&1
            echo
            timeout 120 "$PY" -c '
import sys, torch
print("python", sys.version.split()[0])
print("torch", torch.__version__, "cuda", torch.version.cuda, "devices", torch.cuda.device_count())
print("nccl", ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else "-")
for i in range(torch.cuda.device_count()):
    print(f"  cuda:{i}", torch.cuda.get_device_name(i))
try:
    import triton
    print("triton", triton.__version__)
except Exception as e:
    print("triton: not importable:", e)
' 2>&1
        } >"$OUT/env.txt" 2>&1
        printf 'env\t0\t-\t-\tenv.txt\n' >>"$SUMMARY"
        grep -E '^(torch|nccl|triton|  cuda:)' "$OUT/env.txt" | sed 's/^/   /'
    fi
fi

DIST_JSON=$OUT/h200x${NPROC}_distributed_${DATE}${TAG:+_$TAG}.json
if want dist; then
    parts=()
    launch=("$PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" bench/bench_distributed.py --config tiny)
    if [ "$CASES" = all ]; then
        part=$OUT/parts/dist_all.json
        parts+=("$part")
        # shellcheck disable=SC2086 # FLASHKAT_DIST_ARGS is a word list on purpose
        run_step dist "$OUT/dist_all.log" "$(left)" 90 "${launch[@]}" --out "$part" ${FLASHKAT_DIST_ARGS:-}
    else
        for c in $CASES; do
            backend=${c%%:*}
            wrapper=${c#*:}
            part=$OUT/parts/dist_${backend}_$wrapper.json
            parts+=("$part")
            # shellcheck disable=SC2086
            run_step "dist_${backend}_$wrapper" "$OUT/dist_${backend}_$wrapper.log" "$(left)" 90 \
                "${launch[@]}" --backends "$backend" --wrappers "$wrapper" --out "$part" ${FLASHKAT_DIST_ARGS:-}
        done
    fi
    existing=()
    for p in "${parts[@]}"; do [ -s "$p" ] && existing+=("$p"); done
    if [ "$DRY" = 1 ]; then
        echo "   [dry run] merge the parts -> $DIST_JSON"
    elif [ "${#existing[@]}" -gt 0 ]; then
        "$PY" - "$DIST_JSON" "${existing[@]}" <<'PYEOF'
import json, os, sys
rows = []
for p in sys.argv[2:]:
    with open(p) as f:
        rows += json.load(f)
    os.remove(p)
with open(sys.argv[1], "w") as f:
    json.dump(rows, f, indent=1)
print(f"   {len(rows)} rows -> {sys.argv[1]}")
for r in rows:
    print(f"   {r['backend']:>9} {r['wrapper']:>5}: step {r['step_ms_median']:.1f} ms (min {r['step_ms_min']:.1f}), "
          f"rewrites {r['rewrites']}, err grads {r['max_rel_err_grads']:.1e} params {r['max_rel_err_params']:.1e}, "
          f"{'OK' if r['ok'] else 'MISMATCH'}")
PYEOF
    else
        echo "   no case finished: no rows"
    fi
fi

finish
exit 0
