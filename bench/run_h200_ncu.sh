#!/usr/bin/env bash
# Nsight Compute on the backward template (and the forward) at 128 x 197 x 3072, to say what bounds
# the bf16 loop (1.77-1.81x Inductor at 1536 / 3072 against 2.2x+ in float32 and at 192-768): the
# autotuner's bf16 pick (8 x 128, 4 warps, pipelined 3 deep), its float32 pick (4 x 128, 4 deep),
# and a bf16 register-prefetch loop (4 x 128, 3 blocks ahead: fewer instructions, 18% slower in
# call 31).  Per case: the report, its details and raw pages (CSV; bench/ncu_summary.py prints the
# headline metrics and the warp-stall reasons) and the template's SASS with per-instruction stall
# samples (source page).  Then a KAT-T fp16 training step.  Device call 32 ran it with an NVTX
# range, which saw the forward only: autograd launches the backward from its own thread.
#
#     run(command="bash bench/run_h200_ncu.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
if [ "${1:-}" != --functions-only ]; then  # (sourced by run_h200_forward.sh for profile alone)
OUT_NAME=h200_ncu
source "$(dirname "$0")/device_prelude.sh"
fi
profile() {  # profile NAME SECONDS DTYPE CONFIG
    local name=$1 secs=$2 dt=$3 cfg=$4
    step "ncu_$name" "$secs" ncu --profile-from-start off --set full --import-source no \
        -f -o "$OUT/ncu_$name" python3 bench/profile_ncu.py --dtype "$dt" --shape 128x197x3072 --config "$cfg"
    grep -E "errors|==ERROR| us " "$OUT/ncu_$name.log" | head -12
    ncu -i "$OUT/ncu_$name.ncu-rep" --page details --csv >"$OUT/ncu_${name}_details.csv" 2>&1
    ncu -i "$OUT/ncu_$name.ncu-rep" --page raw --csv >"$OUT/ncu_${name}_raw.csv" 2>&1
    ncu -i "$OUT/ncu_$name.ncu-rep" --page source --csv --print-source sass -k regex:triton_tem \
        >"$OUT/ncu_${name}_sass.csv" 2>&1
    python3 bench/ncu_summary.py "$OUT/ncu_${name}_details.csv" "$OUT/ncu_${name}_raw.csv"
}
[ "${1:-}" = --functions-only ] && return 0
profile bf16_pipe3 150 bfloat16 8x128x4x3x3
profile fp32_pipe4 150 float32 4x128x4x4x4
profile bf16_prefetch3 120 bfloat16 4x128x4x1x-3
# KAT-T in fp16 (autocast + GradScaler) beside ViT-T: never measured on the GPU
train_step train_fp16 150 --models kat_t --dtypes float16 --methods vit_inductor,flashkat --steps 30 --warmup 5 \
    --compile-mode reduce-overhead --fused-adamw
