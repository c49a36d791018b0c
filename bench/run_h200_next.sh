#!/usr/bin/env bash
# Next call: the whole test suite on one H200 (the CPU tests, and every CUDA test of the kernels,
# lowerings, ops, KAT functions, robustness and determinism), then KAT-S bf16 (never measured yet)
# against ViT-S and FlashKAT's modules in eager, in one call (about 530 s):
#
#     run(command="bash bench/run_h200_next.sh; cd $OUT && tar czf logs.tar.gz *.log && rm -f *.log",
#         kind="nvidia-h200", timeout_s=600)
#
#   1. pytest tests/ (296 passed, 86 skipped on 2026-11-28, the suite of then; the CUDA tests of
#      kernels and lowerings alone, 91, passed in call 14 of 2026-11-29)
#   2. KAT-S bf16 training step under CUDA graphs with AdamW(fused=True) for the compiled models,
#      flashkat, timm's ViT-S and FlashKAT's modules in eager (KAT-T bf16: 1.09, 1.09, 1.07 in
#      calls 11-13 of 2026-11-29)
# bench/run_h200_fusion.sh times the KAT MLP's fusions (bench/probe_mlp_fusion.py) in a call of its own.
OUT_NAME=h200_next
source "$(dirname "$0")/device_prelude.sh"
step pytest_all "${S1:-380}" python3 -m pytest -q -p no:cacheprovider -rs tests/
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest_all.log" | tail -12
step train_kat_s_bf16 "${S2:-150}" python3 bench/bench_train.py --models kat_s --dtypes bfloat16 \
    --methods vit_inductor,flashkat,eager_flashkat --steps 20 --warmup 5 --compile-mode reduce-overhead \
    --fused-adamw --out "$OUT/train_kat_s_bf16.json"
grep -E "median|Error|^kat_s" "$OUT/train_kat_s_bf16.log" | cut -c1-200 | head -12
