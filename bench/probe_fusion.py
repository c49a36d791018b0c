"""Which kernels the compiled forward of ``rational(x * 2) + 1`` becomes, static and dynamic batch.

A diagnostic (CUDA, or the interpreter with tests/fake_triton_cpu.py): on the H200 (torch 2.11),
call 1 of 2026-11-29 (second session) found the dynamic-batch forward split in two kernels
(``fused_mul_rational_fwd`` and ``fused_add_rational_fwd``) where the interpreter on the CPU
builds one.  This prints each case's kernels and writes its forward code under --out, so that the
generated code says which buffer the two kernels share; run it under TORCH_LOGS=fusion for
Inductor's fusion decisions.

    python bench/probe_fusion.py --out DIR
"""
from __future__ import annotations

import argparse
import os
import re

import torch

import flashkat_inductor as fk
from flashkat_inductor.lowerings import forward, register_lowerings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="folder for each case's forward code")
    args = ap.parse_args()
    from torch._inductor.utils import run_and_get_code

    register_lowerings()
    torch._inductor.config.fx_graph_cache = False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = (torch.randn(1, 6, device=device) * 0.5).requires_grad_()
    b = (torch.randn(8, 4, device=device) * 0.5).requires_grad_()
    for grouped in (True, False):
        for dynamic in (False, True):
            forward.GROUPED_RANGES = grouped
            torch._dynamo.reset()

            def g(x, a, b):
                return fk.rational(x * 2.0, a, b, form="safe", zero_sign="kat") + 1.0

            compiled = torch.compile(g, backend="inductor", fullgraph=True)
            x = torch.randn(8, 197, 192, device=device, requires_grad=True)
            if dynamic:
                torch._dynamo.mark_dynamic(x, 0)
            _, codes = run_and_get_code(lambda: compiled(x, a, b).sum().backward())
            name = f"grouped{int(grouped)}_dynamic{int(dynamic)}"
            kernels = re.findall(r"def (triton_\w+)\(", codes[0])
            print(f"{name}: torch {torch.__version__} forward kernels {kernels}", flush=True)
            if args.out:
                os.makedirs(args.out, exist_ok=True)
                with open(os.path.join(args.out, f"fusion_{name}.py"), "w") as f:
                    f.write(codes[0])
    forward.GROUPED_RANGES = True


if __name__ == "__main__":
    main()
