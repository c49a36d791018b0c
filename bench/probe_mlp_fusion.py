"""What a KAT block's MLP becomes under ``backend="flashkat"``: its kernels, forward and backward,
and (CUDA) the GPU time of a step with and without each kind of fusion.

The block is ``x + fc2(drop(act2(fc1(act1(norm(x))))))``, KAT's MLP (tests/kat_modules.py
``KAN``: 8-group rationals, the first initialised as identity, the second as GELU; KAT's Triton
``autograd.Function`` on CUDA, its pure-PyTorch function on the interpreter) after the block's
LayerNorm, with the residual. Variants: float32 and bf16 autocast, dropout 0 and 0.1, and
Inductor's options: the default, ``epilogue_fusion`` off (no consumer fused into the backward
template's store, nor into a matmul template), and (CUDA) ``max_autotune`` (Triton matmul
templates, which may take the rational as their epilogue). For each, the Triton kernels of the
forward and the backward graph (Inductor names a kernel after the ops fused into it), the extern
calls (matmuls) and, on CUDA, the GPU time of forward + backward per step under the profiler: the
time a fusion saves is the difference between two rows of the same dtype and dropout.

    python bench/probe_mlp_fusion.py [--dim 192] [--rows 128x197] [--out rows.json]

Without CUDA it needs the Triton interpreter (``TRITON_INTERPRET=1``): it then imports
tests/fake_triton_cpu.py, so that Inductor generates Triton for CPU tensors as it does for CUDA
(kernel structure only; on torch 2.11 a consumer of the grouped forward fuses differently than on
2.13, see the README), on small shapes (--rows 4x17 by default there).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, HERE)

import torch  # noqa: E402

if not torch.cuda.is_available():
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("probe_mlp_fusion: without CUDA, run with TRITON_INTERPRET=1 (the Triton interpreter)")
    import fake_triton_cpu  # noqa: E402,F401  (process-wide: Triton codegen for CPU tensors)

import torch.nn as nn  # noqa: E402

import flashkat_inductor.backend  # noqa: E402,F401
import kat_modules as km  # noqa: E402
from benchlib import device_name, gpu_activities, triton_version  # noqa: E402

OPTION_SETS = {"default": {}, "no_epilogue_fusion": {"epilogue_fusion": False},
               "max_autotune": {"max_autotune": True}}


class MLPBlock(nn.Module):
    def __init__(self, dim: int, drop: float, device: str):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        # KAT's Triton autograd.Function on CUDA; its pure-PyTorch function on the interpreter
        # (Dynamo cannot trace the interpreter's launch of KAT's kernels)
        self.mlp = km.KAN(dim, 4 * dim, "kat" if device == "cuda" else "kat_torch", 8, drop, device)

    def forward(self, x):
        return x + self.mlp(self.norm(x))


def kernels(code: str) -> dict:
    return {"triton": re.findall(r"def (triton_\w+)\(", code),
            "extern": sorted(set(re.findall(r"extern_kernels\.(\w+)\(", code)))}


def probe(dim: int, rows: tuple, dtype: str, drop: float, options: str, device: str, steps: int,
          code_dir: str | None = None) -> dict:
    from torch._dynamo.utils import counters
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(0)
    block = MLPBlock(dim, drop, device).to(device).train()
    x = torch.randn(*rows, dim, device=device, requires_grad=True)
    amp = torch.bfloat16 if dtype == "bfloat16" else None
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(block, backend="flashkat", options=OPTION_SETS[options] or None)

    def step():
        with torch.autocast(device, dtype=amp or torch.bfloat16, enabled=amp is not None):
            y = compiled(x)
        y.float().sum().backward()

    _, codes = run_and_get_code(step)
    # the forward's and the backward's module; under max_autotune Inductor also compiles the
    # decompose-k matmul choices as graphs of their own while it tunes the backward's matmuls
    # (their modules come before the backward's), and those name no rational op
    main = [c for c in codes if "rational" in c] or codes
    fwd, bwd = (main[0], main[-1]) if len(main) > 1 else ((main + [""])[0], "")
    if code_dir:
        os.makedirs(code_dir, exist_ok=True)
        for phase, code in (("fwd", fwd), ("bwd", bwd)):
            with open(os.path.join(code_dir, f"{dtype}_drop{drop}_{options}_{phase}.py"), "w") as f:
                f.write(code)
    row = {"dtype": dtype, "dropout": drop, "options": options, "dim": dim, "rows": list(rows),
           "rewrites": counters["flashkat"]["rewrites"], "dx_into_grad": counters["flashkat"]["bwd_dx_into_grad"],
           "fwd": kernels(fwd), "bwd": kernels(bwd)}
    if device == "cuda":
        for _ in range(3):
            step()
        per = gpu_activities(step, steps)
        row["gpu_us"] = round(sum(us for us, _ in per.values()), 1)
        row["gpu_top"] = [[k[:100], round(us, 1)] for k, (us, _) in sorted(per.items(), key=lambda kv: -kv[1][0])[:12]]
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    ap.add_argument("--dim", type=int, default=192 if cuda else 32)
    ap.add_argument("--rows", default="128x197" if cuda else "4x17", help="leading sizes, e.g. 128x197")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--dropouts", default="0.0,0.1")
    ap.add_argument("--options", default=",".join(OPTION_SETS if cuda else ["default", "no_epilogue_fusion"]),
                    help="comma list of " + ", ".join(OPTION_SETS))
    ap.add_argument("--steps", type=int, default=10, help="profiled steps per row (CUDA)")
    ap.add_argument("--out", default=None, help="JSON rows")
    ap.add_argument("--code", default=None, help="folder for each variant's forward and backward code")
    args = ap.parse_args()
    device = "cuda" if cuda else "cpu"
    torch._inductor.config.fx_graph_cache = False
    rows = tuple(int(v) for v in args.rows.split("x"))
    stamp = {"device": device_name(torch.device(device)), "torch": torch.__version__, "triton": triton_version(),
             "date": datetime.date.today().isoformat()}
    out = []
    for dtype in args.dtypes.split(","):
        for drop in (float(v) for v in args.dropouts.split(",")):
            for options in args.options.split(","):
                try:
                    row = probe(args.dim, rows, dtype, drop, options, device, args.steps, args.code)
                except Exception as e:  # noqa: BLE001 - one failing variant keeps the others
                    row = {"dtype": dtype, "dropout": drop, "options": options, "error": f"{type(e).__name__}: {e}"[:300]}
                out.append({**stamp, **row})
                print(f"{dtype:9s} drop {drop:.1f} {options:18s} "
                      + (row.get("error") or f"gpu {row.get('gpu_us', '-')} us  dx over dy {row['dx_into_grad']}"),
                      flush=True)
                for phase in ("fwd", "bwd"):
                    if phase in row:
                        print(f"    {phase}: {' '.join(row[phase]['triton'])}  | extern {row[phase]['extern']}")
                if args.out:  # after every variant: a run cut short keeps what it measured
                    with open(args.out, "w") as f:
                        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
