#!/usr/bin/env bash
# The CUDA tests of the kernels and lowerings in full (dx written over dy included), and what
# is live at KAT-S float32's memory peak, grouped by the model's source line (flashkat against
# timm's ViT-S), in one call on one H200 (about 400 s):
#
#     run(command="bash bench/run_h200_check.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
OUT_NAME=h200_check
source "$(dirname "$0")/device_prelude.sh"
cuda_tests "${S0:-300}"
train_step memory_kat_s_f32 "${S1:-170}" --models kat_s --dtypes float32 \
    --methods vit_inductor,flashkat --steps 3 --warmup 1 --fused-adamw --memory-peak
python3 - "$OUT" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1] + "/memory_kat_s_f32.json"))
for r in rows:
    m = r.get("memory_peak") or {}
    print(r["method"], "peak", m.get("peak_mb"), "max_memory_allocated", m.get("max_memory_allocated_mb"),
          "by:", (m.get("peak_by") or "")[:200], r.get("memory_peak_error", ""))
    for mb, n, fr in m.get("live_at_peak_groups") or []:
        print(f"   {mb:8.2f} x{n:3d} {fr[:200]}")
PY
