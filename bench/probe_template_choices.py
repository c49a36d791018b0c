"""Every choice of the backward template that the autotuner times, side by side, one row each.

The autotuner keeps only its pick (`best_kernel_desc` in the logs); this probe records the time it
measured for every choice it was offered, so that one device call shows the whole landscape: each
config at each row-program level, plus configs the lowering does not offer by default (the
register-prefetch loops, PIPE_STAGES < 0, at any depth).

    python bench/probe_template_choices.py --dtypes bfloat16 --shapes 128x197x1536,128x197x3072 \\
        --levels 128x4,256x3 --add 8x128x4x1x-3,4x128x4x1x-4 --out F.json

  --levels  FLASHKAT_ROW_PROGRAM_LEVELS for this process (set before the package is imported)
  --add     extra configs BLOCK_RxBLOCK_CxWARPSxSTAGESxPIPE_STAGES[xROW_SUM], each offered at every
            level beside the default ones (--only: instead of them)
  --row-sum-levels
            FLASHKAT_ROW_SUM_LEVELS for this process: the ROW_SUM configs offered at these levels
  --cpu-interpreter
            run on the CPU through the Triton interpreter (tests/fake_triton_cpu.py), to check
            the probe itself; its times mean nothing

Each case compiles `fk.rational` forward + backward under backend="flashkat" with the compile
caches off (TORCHINDUCTOR_FORCE_DISABLE_CACHES=1, so that the autotuner runs), checks dx and the
coefficient gradients against float64, and writes one JSON row per timed choice: dtype, shape,
levels, BLOCK_R, BLOCK_C, num_warps, num_stages, PIPE_STAGES, NPROG, NPROG_RUN, ms (the
autotuner's own measurement), picked, plus the device / torch / Triton stamp.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS = ("BLOCK_R", "BLOCK_C", "PIPE_STAGES", "NPROG", "NPROG_RUN", "ROW_SUM", "num_warps", "num_stages")


def parse_config(text: str) -> tuple:
    parts = [int(v) for v in text.lower().split("x")]
    if len(parts) not in (5, 6):
        raise argparse.ArgumentTypeError(f"{text!r}: expected BLOCK_RxBLOCK_CxWARPSxSTAGESxPIPE_STAGES[xROW_SUM]")
    return tuple(parts) + (0,) * (6 - len(parts))


def describe(desc: str) -> dict:
    """The template constants of a choice's description (``KEY=value, ...``)."""
    out = {}
    for key in KEYS:
        # a negative value appears as "KEY=, 2" in the descriptions Inductor writes (torch 2.13)
        m = re.search(rf"\b{key}=(-|, )?(\d+)", desc)
        out[key] = (-1 if m.group(1) else 1) * int(m.group(2)) if m else None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtypes", default="bfloat16")
    ap.add_argument("--shapes", default="128x197x1536,128x197x3072")
    ap.add_argument("--levels", default=None)
    ap.add_argument("--row-sum-levels", default=None)
    ap.add_argument("--add", default="", help="comma list of extra configs")
    ap.add_argument("--only", action="store_true", help="offer the --add configs alone")
    ap.add_argument("--cpu-interpreter", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    extra = [parse_config(c) for c in args.add.split(",") if c.strip()]
    if args.only and not extra:
        ap.error("--only needs --add")

    # before torch and the package are imported: both read these at import
    os.environ["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"
    if args.levels is not None:
        os.environ["FLASHKAT_ROW_PROGRAM_LEVELS"] = args.levels
    if args.row_sum_levels is not None:
        os.environ["FLASHKAT_ROW_SUM_LEVELS"] = args.row_sum_levels
    if args.cpu_interpreter:
        os.environ["TRITON_INTERPRET"] = "1"
        sys.path.insert(0, os.path.join(HERE, "..", "tests"))
        import fake_triton_cpu  # noqa: F401  (process-wide: cpu_backend="triton", a stand-in driver)
    sys.path.insert(0, os.path.join(HERE, ".."))

    import torch
    import triton
    from torch._inductor.select_algorithm import AlgorithmSelectorCache

    import flashkat_inductor as fk
    from flashkat_inductor.lowerings import backward as bw
    from flashkat_inductor.semantics import reference_backward

    device = "cpu" if args.cpu_interpreter else "cuda"
    assert device == "cpu" or torch.cuda.is_available(), "this probe needs a CUDA device (or --cpu-interpreter)"
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

    timed: list = []  # {description: ms} of each autotuning of the template, in order
    log_results = AlgorithmSelectorCache.log_results

    def record(name, input_nodes, timings, *rest, **kw):
        if name == bw.TEMPLATE_NAME:
            timed.append({c.description: float(t) for c, t in timings.items()})
        return log_results(name, input_nodes, timings, *rest, **kw)

    AlgorithmSelectorCache.log_results = staticmethod(record)

    stamp = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu (Triton interpreter)",
             "torch": torch.__version__, "triton": triton.__version__,
             "date": datetime.date.today().isoformat(), "levels": [list(lv) for lv in bw._ROW_PROGRAM_LEVELS],
             "row_sum_levels": [list(lv) for lv in bw._ROW_SUM_LEVELS], "slab_max_channels": bw._SLAB_MAX_CHANNELS}
    rows: list = []

    def save():
        if args.out:
            with open(args.out, "w") as f:
                json.dump(rows, f, indent=1)

    for dname in args.dtypes.split(","):
        dt = dtypes[dname]
        for shape_text in args.shapes.split(","):
            shape = tuple(int(v) for v in shape_text.split("x"))
            C = shape[-1]
            bw._state.pop("configs", None)
            configs = [] if args.only else bw._template_configs(C, dt, 10)
            configs += [c[:5] + (lv, c[5]) for c in extra for lv in range(len(bw._all_levels()))]
            bw._state["configs"] = configs
            torch._dynamo.reset()
            torch.manual_seed(0)
            x = torch.randn(shape, device=device).to(dt).requires_grad_()
            dy = torch.randn(shape, device=device).to(dt)
            a = (0.5 * torch.randn(1, 6, device=device)).requires_grad_()
            b = (0.5 * torch.randn(8, 4, device=device)).requires_grad_()

            def f(x, a, b):
                return fk.rational(x, a, b, form="safe", zero_sign="kat")

            before = len(timed)
            try:
                y = torch.compile(f, backend="flashkat", dynamic=False)(x, a, b)
                grads = torch.autograd.grad(y, (x, a, b), dy)
            except Exception as e:  # noqa: BLE001 - reported, the next case still runs
                print(f"{dname} {shape_text}: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
                continue
            finally:
                bw._state.pop("configs", None)
            ref = reference_backward(dy, x.detach(), a.detach(), b.detach(), "safe", "kat")
            errs = [((g.double() - r).norm() / r.norm()).item() for g, r in zip(grads, ref)]
            if len(timed) == before:
                print(f"{dname} {shape_text}: no autotuning of {bw.TEMPLATE_NAME} recorded (one choice, or a "
                      f"cache hit); errors {errs}", flush=True)
                continue
            timings = timed[-1]
            best = min(timings.values())
            print(f"{dname} {shape_text}: {len(timings)} choices, errors dx / dnum / dden "
                  f"{errs[0]:.1e} / {errs[1]:.1e} / {errs[2]:.1e}", flush=True)
            for desc, ms in sorted(timings.items(), key=lambda kv: kv[1]):
                c = describe(desc)
                rows.append({**stamp, "dtype": dname, "shape": shape_text, **c, "ms": ms, "picked": ms == best,
                             "err_dx": errs[0], "err_dnum": errs[1], "err_dden": errs[2]})
                print(f"   {ms * 1e3:9.1f} us  {c['BLOCK_R']:>3} x {c['BLOCK_C']:<4} warps {c['num_warps']} "
                      f"stages {c['num_stages']} PIPE {c['PIPE_STAGES']:>2}  NPROG_RUN {c['NPROG_RUN']} of "
                      f"{c['NPROG']}  ROW_SUM {c['ROW_SUM'] or 0}", flush=True)
            save()
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
