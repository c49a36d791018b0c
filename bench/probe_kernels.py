"""Launch-parameter probe for the rational's kernels on one GPU (a tuning aid, not a benchmark table).

    python bench/probe_kernels.py --out probe.json [--code-dir DIR]

1. Backward, the project's eager Triton kernel (the algorithm of the compiled template's pipelined
   loop): GPU time of the kernel alone (torch.profiler) per tile config and per number of row
   programs per SM (``triton_kernels._PROGRAMS_PER_SM``), at KAT-T's widths 192 / 768 / 3072 and 128 x 197 rows, float32
   and bfloat16.
2. Forward, compiled (``backend="flashkat"``, the ``flashkat::rational_fwd`` pointwise lowering) under
   Inductor option sets (default, ``triton.prefer_nd_tiling``, pointwise autotuning), against the
   eager kernel: GPU time per call, and the generated Triton source written to ``--code-dir``.
3. ``--parts fwd_variants``: the forward lowering's own variants (2-D tiles through the tiling
   hook, 1-D over (*lead, C), 1-D over (*lead, G, D), coefficient rows expanded over the
   channels), GPU time of the compiled forward alone, beside Inductor's on the hand-written PAU.

One JSON row per measurement; the largest speed-ups are printed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import flashkat_inductor as fk  # noqa: E402
import flashkat_inductor.triton_kernels as tk  # noqa: E402
from benchlib import gpu_activities  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
BWD_CONFIGS = [(4, 128, 4, 4), (4, 256, 4, 3), (8, 128, 4, 3), (2, 128, 4, 4), (2, 256, 4, 4),
               (4, 64, 4, 4), (8, 64, 4, 4), (4, 128, 8, 4), (8, 256, 8, 3), (1, 256, 4, 4)]
FWD_OPTIONS = {
    "default": {},
    "nd_tiling": {"triton.prefer_nd_tiling": True},
    "autotune_pointwise": {"max_autotune_pointwise": True, "coordinate_descent_tuning": True},
    "nd_tiling_autotune": {"triton.prefer_nd_tiling": True, "max_autotune_pointwise": True,
                           "coordinate_descent_tuning": True},
}


def _kernel_us(per: dict, needle: str) -> float:
    return sum(us for name, (us, _n) in per.items() if needle in name)


def _cfg_tuple(c) -> tuple:
    return (c.block_r, c.block_c, c.num_warps, c.num_stages)


def probe_backward(rows: list, shapes, dtypes, calls: int) -> None:
    for dname in dtypes:
        dt = DTYPES[dname]
        for R, C in shapes:
            g = torch.Generator(device="cuda").manual_seed(0)
            x = torch.randn(R, C, device="cuda", generator=g).to(dt)
            dy = torch.randn(R, C, device="cuda", generator=g).to(dt)
            a = torch.randn(8, 6, device="cuda", generator=g) * 0.3
            b = torch.randn(8, 4, device="cuda", generator=g) * 0.3
            base = None
            default_pps = tk._PROGRAMS_PER_SM
            for pps in (4, 8, 16):
                tk._PROGRAMS_PER_SM = pps
                for cfg in BWD_CONFIGS:
                    if cfg[1] > max(16, tk._next_pow2(C)):
                        continue
                    try:
                        run = lambda: tk.backward(dy, x, a, b, "safe", "kat", config=cfg)  # noqa: E731
                        run()
                        torch.cuda.synchronize()
                        us = _kernel_us(gpu_activities(run, calls), "_rational_bwd_kernel")
                    except Exception as e:  # noqa: BLE001 - a config that does not compile is a row too
                        rows.append({"part": "bwd", "dtype": dname, "R": R, "C": C, "pps": pps, "cfg": cfg,
                                     "error": f"{type(e).__name__}: {str(e)[:200]}"})
                        continue
                    if pps == default_pps and cfg == _cfg_tuple(tk._bwd_config(R, C, 8, dt)):
                        base = us
                    rows.append({"part": "bwd", "dtype": dname, "R": R, "C": C, "pps": pps, "cfg": cfg, "us": us})
                    print(f"bwd {dname:9s} {R}x{C:<5d} pps {pps:2d} cfg {cfg}: {us:8.1f} us", flush=True)
            tk._PROGRAMS_PER_SM = default_pps
            for r in rows:
                if r.get("part") == "bwd" and r["dtype"] == dname and r["C"] == C and "us" in r:
                    r["vs_default"] = round(base / r["us"], 3) if base else None


def probe_forward(rows: list, shapes, dtypes, calls: int, code_dir) -> None:
    from torch._inductor.utils import run_and_get_code

    for dname in dtypes:
        dt = DTYPES[dname]
        for R, C in shapes:
            g = torch.Generator(device="cuda").manual_seed(0)
            x = torch.randn(128, R // 128, C, device="cuda", generator=g).to(dt)
            bias = torch.randn(C, device="cuda", generator=g).to(dt)
            a = torch.randn(8, 6, device="cuda", generator=g) * 0.3
            b = torch.randn(8, 4, device="cuda", generator=g) * 0.3
            eager = lambda: tk.forward(x, a, b, "safe")  # noqa: E731
            eager()
            us = _kernel_us(gpu_activities(eager, calls), "_rational_fwd_kernel")
            rows.append({"part": "fwd", "dtype": dname, "R": R, "C": C, "method": "eager_kernel", "us": us})
            print(f"fwd {dname:9s} {R}x{C:<5d} eager kernel: {us:8.1f} us", flush=True)
            for oname, opts in FWD_OPTIONS.items():
                for with_bias in (False, True):
                    torch._dynamo.reset()

                    def f(x, a, b, bias):
                        h = x + bias if with_bias else x
                        return fk.rational(h, a, b, form="safe", zero_sign="kat")

                    cf = torch.compile(f, backend="flashkat", dynamic=False, options=dict(opts))
                    try:
                        _, code = run_and_get_code(cf, x, a, b, bias)
                        run = lambda: cf(x, a, b, bias)  # noqa: E731
                        run()
                        per = gpu_activities(run, calls)
                        us = sum(u for u, _n in per.values())
                    except Exception as e:  # noqa: BLE001
                        rows.append({"part": "fwd", "dtype": dname, "R": R, "C": C, "method": oname,
                                     "bias": with_bias, "error": f"{type(e).__name__}: {str(e)[:300]}"})
                        print(f"fwd {dname} {R}x{C} {oname} bias={with_bias}: {type(e).__name__}: {e}"[:400], flush=True)
                        continue
                    rows.append({"part": "fwd", "dtype": dname, "R": R, "C": C, "method": oname, "bias": with_bias,
                                 "us": us, "kernels": sorted(per)[:6]})
                    print(f"fwd {dname:9s} {R}x{C:<5d} {oname:20s} bias={int(with_bias)}: {us:8.1f} us  {sorted(per)[:3]}",
                          flush=True)
                    if code_dir:
                        with open(os.path.join(code_dir, "fwd_code.py.txt"), "a") as fh:
                            fh.write(f"\n# ===== {dname} {R}x{C} {oname} bias={with_bias}: {us:.1f} us\n")
                            fh.write("\n".join(code))


# the forward lowering's variants: (forward.ND_TILING, forward.GROUPED_RANGES, forward.EXPANDED_COEFFICIENTS)
FWD_VARIANTS = {"flat_1d": (False, False, False), "flat_hooked": (True, False, False),
                "grouped_1d": (False, True, False), "expanded_1d": (False, False, True),
                "expanded_hooked": (True, False, True)}


def probe_forward_variants(rows: list, shapes, dtypes, calls: int) -> None:
    """GPU time of the compiled forward alone under each of the lowering's variants, and of
    Inductor's forward of the hand-written safe PAU (benchlib.safe_pau) beside them.  The FX graph
    and AOT caches are off: a variant must be compiled, not served another one's code."""
    import torch._functorch.config as fconfig
    import torch._inductor.config as iconfig
    from torch._inductor.utils import run_and_get_code

    from benchlib import safe_pau
    from flashkat_inductor.lowerings import forward as fw

    saved = fw.ND_TILING, fw.GROUPED_RANGES, fw.EXPANDED_COEFFICIENTS
    try:
        with iconfig.patch(fx_graph_cache=False), fconfig.patch(enable_autograd_cache=False):
            for dname in dtypes:
                dt = DTYPES[dname]
                for R, C in shapes:
                    g = torch.Generator(device="cuda").manual_seed(0)
                    x = torch.randn(128, R // 128, C, device="cuda", generator=g).to(dt)
                    a = torch.randn(1, 6, device="cuda", generator=g) * 0.3  # KAT: one numerator row
                    b = torch.randn(8, 4, device="cuda", generator=g) * 0.3
                    variants = dict(FWD_VARIANTS, inductor_safe_pau=None)
                    for vname, flags in variants.items():
                        if flags and flags[2] and C % fw._FLAT_BLOCK_MAX == 0:
                            continue  # nothing is expanded at these widths: the same code as without
                        torch._dynamo.reset()
                        if flags is None:
                            cf = torch.compile(safe_pau, backend="inductor", dynamic=False)
                        else:
                            fw.ND_TILING, fw.GROUPED_RANGES, fw.EXPANDED_COEFFICIENTS = flags
                            cf = torch.compile(lambda x, a, b: fk.rational(x, a, b, form="safe", zero_sign="kat"),
                                               backend="flashkat", dynamic=False)
                        _, code = run_and_get_code(cf, x, a, b)
                        code = "\n".join(code)
                        run = lambda: cf(x, a, b)  # noqa: E731
                        run()
                        per = gpu_activities(run, calls)
                        us = sum(u for u, _n in per.values())
                        kernels = code.count("@triton.jit")
                        rows.append({"part": "fwd_variant", "dtype": dname, "R": R, "C": C, "method": vname,
                                     "us": us, "kernels": sorted(per)[:3], "triton_kernels": kernels,
                                     "tiled": "YBLOCK" in code,
                                     "per_kernel_us": {k[:60]: round(u, 2) for k, (u, _n) in per.items()}})
                        print(f"fwd {dname:9s} {R}x{C:<5d} {vname:17s} {us:8.1f} us  kernels {kernels} "
                              f"{'2-D' if 'YBLOCK' in code else '1-D'}  "
                              f"{ {k[:40]: round(u, 1) for k, (u, _n) in per.items()} }", flush=True)
    finally:
        fw.ND_TILING, fw.GROUPED_RANGES, fw.EXPANDED_COEFFICIENTS = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--code-dir", default=None)
    ap.add_argument("--parts", default="fwd,bwd")
    ap.add_argument("--widths", default="192,768,3072")
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--calls", type=int, default=20)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("probe_kernels: needs a CUDA device")
    shapes = [(128 * 197, int(c)) for c in args.widths.split(",")]
    dtypes = args.dtypes.split(",")
    rows: list = []
    try:
        if "fwd" in args.parts.split(","):
            probe_forward(rows, shapes, dtypes, args.calls, args.code_dir)
        if "fwd_variants" in args.parts.split(","):
            probe_forward_variants(rows, shapes, dtypes, args.calls)
        if "bwd" in args.parts.split(","):
            probe_backward(rows, shapes, dtypes, args.calls)
    finally:
        meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                "triton": __import__("triton").__version__}
        with open(args.out, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=1)
    print("\nfastest per (part, dtype, width):")
    best: dict = {}
    for r in rows:
        if "us" in r:
            k = (r["part"], r["dtype"], r["C"])
            if k not in best or r["us"] < best[k]["us"]:
                best[k] = r
    for k, r in sorted(best.items()):
        print(" ", k, {kk: r.get(kk) for kk in ("us", "pps", "cfg", "method", "bias", "vs_default")})


if __name__ == "__main__":
    main()
