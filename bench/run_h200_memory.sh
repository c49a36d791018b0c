#!/usr/bin/env bash
# Where a training step's peak memory goes, and KAT-T bf16 timed again, with the CUDA tests, in one
# call on one H200 (about 420 s):
#
#     run(command="bash bench/run_h200_memory.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
#
#   0. the CUDA tests of the kernels and lowerings
#   1. KAT-T bf16 training step under CUDA graphs with AdamW(fused=True), flashkat and timm's ViT-T
#      (the README's row: 1.09 in call 11 of 2026-11-29)
#   2. KAT-T bf16 and KAT-S float32 in the default mode with --memory-peak: one step with the CUDA
#      allocator's history recorded, the allocations live at its peak and the generated code's lines
#      that made them (bench/benchlib.py memory_at_peak), flashkat against the ViT: what exceeds
#      "ViT plus the activations KAT adds" (3 / 37 / 23 MB in the README)
OUT_NAME=h200_memory
source "$(dirname "$0")/device_prelude.sh"
cuda_tests "${S0:-170}"
train_step train_bf16_fused_adamw "${S1:-130}" --models kat_t --dtypes bfloat16 \
    --methods vit_inductor,flashkat --steps 20 --warmup 5 --compile-mode reduce-overhead --fused-adamw
train_step memory_kat_t_bf16 "${S2:-110}" --models kat_t --dtypes bfloat16 \
    --methods vit_inductor,flashkat --steps 3 --warmup 1 --fused-adamw --memory-peak
train_step memory_kat_s_f32 "${S3:-170}" --models kat_s --dtypes float32 \
    --methods vit_inductor,flashkat --steps 3 --warmup 1 --fused-adamw --memory-peak
python3 - "$OUT" <<'PY'
import json, sys, glob
for f in sorted(glob.glob(sys.argv[1] + "/memory_*.json")):
    for r in json.load(open(f)):
        m = r.get("memory_peak") or {}
        print(f.split("/")[-1], r["method"], "timed steps' peak_mb", r.get("peak_mb"), "traced step: base",
              m.get("base_mb"), "peak", m.get("peak_mb"), "max_memory_allocated", m.get("max_memory_allocated_mb"),
              "freed before peak", m.get("base_freed_before_peak_mb"), "counters", r.get("flashkat_counters", {}).get("bwd_dx_into_grad"),
              r.get("memory_peak_error", ""))
        print("   by:", (m.get("peak_by") or "")[:300])
        print("   sizes:", list((m.get("live_at_peak_sizes") or {}).items())[:8])
        for mb, fr in (m.get("live_at_peak_top") or [])[:4]:
            print(f"   {mb:8.2f} {fr[:230]}")
PY
