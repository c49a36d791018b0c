#!/usr/bin/env bash
# The whole test suite on one H200, its files in six pytest processes at once (16 cores, one GPU;
# no test times anything, so sharing the GPU changes no result), each under its own limit with
# verbose output, per-test durations and pytest's faulthandler dump for a test that stalls:
#
#     run(command="bash bench/run_h200_suite.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
#
# Why in parallel: on 2026-11-29 (session 15, first call) `pytest tests/` in one process did not
# finish in 380 s; it stalled after test_backend.py, in test_caches.py, whose child processes
# compile on the CPU. Children of run_result_script now get SIGABRT after
# FLASHKAT_TEST_CHILD_TIMEOUT seconds and the test fails with their Python stacks.
OUT_NAME=h200_suite
source "$(dirname "$0")/device_prelude.sh"
export FLASHKAT_TEST_CHILD_TIMEOUT=${CHILD_TIMEOUT:-240}
LIMIT=${LIMIT:-500}
group() {
    local name=$1
    shift
    timeout -k 5 "$LIMIT" python3 -m pytest -v -p no:cacheprovider -rs --durations=12 \
        -o faulthandler_timeout=300 "$@" >"$OUT/suite_$name.log" 2>&1
    echo "$name rc $?" >>"$OUT/suite_rc.txt"
}
echo "== suite ($(date -u +%T))"
: >"$OUT/suite_rc.txt"
group caches tests/test_caches.py &
group lowerings tests/test_lowerings.py &
group kernels tests/test_triton_kernels.py &
group functions tests/test_kat_functions.py tests/test_kat_upstream_fingerprints.py tests/test_backend.py \
    tests/test_explain.py &
group ops tests/test_ops.py tests/test_robustness.py tests/test_round_trips.py tests/test_memory.py &
group rest tests/test_recognisers.py tests/test_dynamic.py tests/test_determinism.py tests/test_distributed.py \
    tests/test_sm90_compile.py &
wait
echo "   done ($(date -u +%T))"
cat "$OUT/suite_rc.txt"
for f in "$OUT"/suite_*.log; do
    echo "-- $(basename "$f"): $(grep -E '^=+ .*(passed|failed|error).* =+$' "$f" | tail -1)"
    grep -E "^(FAILED|ERROR)" "$f" | cut -c1-220 | head -8
done
