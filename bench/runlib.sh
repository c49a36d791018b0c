# Shared by bench/run_h200.sh and bench/run_h200x2.sh (sourced after they set ROOT, DRY, START,
# BUDGET, DEADLINE, DATE, STEPS and OUT_NAME, the results folder's name when $OUT is unset).
#
# Defines OUT, PY, SUMMARY, the step clock (want, now, left, min), run_step and finish.

if [ -z "${OUT:-}" ]; then
    if [ "$DRY" = 1 ]; then OUT=$(mktemp -d "/tmp/flashkat_${OUT_NAME}_dry.XXXXXX"); else OUT=$ROOT/${OUT_NAME}_out_$DATE; fi
    echo "note: OUT was not set; writing to $OUT"
fi
mkdir -p "$OUT" "$OUT/parts"

if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif command -v python3 >/dev/null 2>&1; then
    PY=python3   # on the GPU image, python3 is the interpreter that holds PyTorch
else
    PY=python
fi

export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# the machine's image keeps NVLink multicast off; keep it so for anything started here
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
unset TRITON_INTERPRET   # the tests' conftest sets it only without CUDA; never inherit it

SUMMARY=$OUT/steps.tsv
printf 'step\trc\tseconds\ttimeout_s\tlog\n' >"$SUMMARY"

want() { [[ "$STEPS" == *" $1 "* ]]; }
# in a dry run each step "takes" FLASHKAT_DRY_STEP_S seconds (default: its whole timeout, the worst
# case) on a virtual clock, so that the printed timeouts show how the budget would be shared
CLOCK_SHIFT=0
now() { echo $(($(date +%s) + CLOCK_SHIFT)); }
left() { echo $((DEADLINE - $(now))); }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }

# run_step NAME LOG TIMEOUT MIN_S CMD...
#   CMD under `timeout -k $KILL_AFTER` with stdout + stderr into LOG (and on stdout as well when
#   TEE=1); skipped when TIMEOUT < MIN_S.  After a timeout, calls on_timeout when the script
#   defines it.  Sets STEP_RC.
TEE=0
KILL_AFTER=10
TAIL_LINES=4
STEP_RC=0
run_step() {
    local name=$1 log=$2 t=$3 min_s=$4
    shift 4
    if [ "$t" -lt "$min_s" ]; then
        echo "== $name: SKIPPED, ${t}s left for it (needs ${min_s}s)"
        printf '%s\tskipped\t0\t%s\t%s\n' "$name" "$t" "no time" >>"$SUMMARY"
        STEP_RC=125
        return
    fi
    echo "== $name (timeout ${t}s, log ${log#"$OUT"/}): $*"
    if [ "$DRY" = 1 ]; then
        echo "   [dry run] timeout -k $KILL_AFTER $t $* > $log 2>&1$([ "$TEE" = 1 ] && echo ' (tee)')"
        local took=${FLASHKAT_DRY_STEP_S:-$t}
        [ "$took" -gt "$t" ] && took=$t
        CLOCK_SHIFT=$((CLOCK_SHIFT + took))
        printf '%s\tdry\t%s\t%s\t%s\n' "$name" "$took" "$t" "${log#"$OUT"/}" >>"$SUMMARY"
        STEP_RC=0
        return
    fi
    local t0 rc
    t0=$(now)
    if [ "$TEE" = 1 ]; then
        timeout -k "$KILL_AFTER" "$t" "$@" 2>&1 | tee "$log"
        rc=${PIPESTATUS[0]}
    else
        timeout -k "$KILL_AFTER" "$t" "$@" >"$log" 2>&1
        rc=$?
    fi
    local took=$(($(now) - t0))
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$took" "$t" "${log#"$OUT"/}" >>"$SUMMARY"
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        echo "   $name TIMED OUT after ${took}s (rc $rc)"
        if declare -F on_timeout >/dev/null; then on_timeout; fi
    else
        echo "   $name: rc $rc after ${took}s"
    fi
    [ "$TEE" = 1 ] || tail -n "$TAIL_LINES" "$log" | sed 's/^/   | /'
    STEP_RC=$rc
}

# finish: the summary of the steps and the files written
finish() {
    rmdir "$OUT/parts" 2>/dev/null
    echo
    echo "== done in $(($(now) - START))s (budget ${BUDGET}s). Steps (rc 124/137: timed out):"
    column -t -s $'\t' "$SUMMARY" 2>/dev/null || cat "$SUMMARY"
    echo
    bundle
    echo "files in OUT:"
    (cd "$OUT" && find . -type f -printf '  %P\t%s bytes\n' | sort)
}

# bundle: the device tool brings back at most 8 files from $OUT, so every log and picture goes into
# one logs.tar.gz; the JSON rows, the tables (.md), env.txt and steps.tsv stay beside it
bundle() {
    [ "$DRY" = 1 ] && return
    local files
    files=$(cd "$OUT" && find . -type f \( -name '*.log' -o -name '*.png' -o -path './parts/*' \) -printf '%P\n' | sort)
    [ -z "$files" ] && return
    # shellcheck disable=SC2086 # the names are ours: letters, digits, '.', '_', '-' and '/'
    if (cd "$OUT" && tar -czf logs.tar.gz $files); then
        (cd "$OUT" && rm -f $files && rmdir parts 2>/dev/null)
        echo "logs and pictures packed into logs.tar.gz"
    else
        echo "tar failed: the logs stay as they are (only 8 files come back)"
    fi
}
