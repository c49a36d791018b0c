"""CPU benchmark of the rational's forward + backward: Inductor lowerings vs Inductor on hand-written code.

    python bench/bench_cpu.py [--shape 16 197 768] [--groups 8] [--rounds 15] [--threads N]

Methods (float32 unless --dtype says otherwise):

  inductor_pau    a hand-written safe PAU in plain PyTorch (Horner on a (..., G, D)
                  view, coefficient columns broadcast as (G, 1)) under
                  torch.compile(backend="inductor")
  inductor_ops    the project's ops (flashkat_inductor.rational) under
                  torch.compile(backend="inductor") with the project's lowerings registered
  eager_pau       the hand-written PAU, eager
  eager_ops       the project's ops, eager (their PyTorch CPU implementation)
  flashkat_pau    the hand-written PAU under torch.compile(backend="flashkat") (rewritten)
  inductor_kat_ref, flashkat_kat_ref, eager_kat_ref
                  KAT's pure-PyTorch reference function (stacked powers + bmm,
                  signed form; tests/kat_modules.py) under Inductor, under
                  flashkat (rewritten) and eager; its own coefficients, with
                  the odd powers' denominator coefficients small so Q stays > 0

Columns: fwd_ms is the training forward alone (inputs require grad), bwd_ms the
backward alone (a fresh forward before each timed backward), fwdbwd_ms both;
medians over --rounds rounds, methods interleaved within each round so that
background load hits them alike, after warm-up.  copy_gbps: a copy of a tensor
of the same shape and dtype on this machine, (read + write bytes) / time: the
memory ceiling the rational runs against.

Rows go to bench/results/cpu_<date>.json (a list of objects with keys device,
torch, triton, dtype, shape, method, fwd_ms, bwd_ms, fwdbwd_ms, copy_gbps).
On a 2-core box, OpenMP kernels are fragile under contention: benchmark on a
quiet machine and compare methods within one run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import flashkat_inductor as fk  # noqa: E402
from flashkat_inductor.lowerings import register_lowerings  # noqa: E402
from benchlib import device_name, safe_pau as pau_safe, triton_version  # noqa: E402


def ops_safe(x, a, b):
    # zero_sign="torch": the semantics of autograd on the hand-written code
    return fk.rational(x, a, b, form="safe", zero_sign="torch")


def kat_ref(x, a, b):
    """KAT's pure-PyTorch reference (signed form), as KAT_Group_Torch calls it."""
    from kat_modules import kat_rational_torch

    return kat_rational_torch(x, a, b, b.shape[0])


def time_ms(fn, reps: int) -> float:
    """Median ms of fn() over reps calls."""
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs="+", default=[16, 197, 768])
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--m", type=int, default=6)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--reps", type=int, default=5, help="timed calls per round and method")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--methods", nargs="+", default=["inductor_pau", "inductor_ops", "flashkat_pau", "eager_pau",
                                                       "eager_ops", "inductor_kat_ref", "flashkat_kat_ref",
                                                       "eager_kat_ref"])
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/cpu_<date>.json); '-' for none")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    register_lowerings()
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    shape = tuple(args.shape)
    G = args.groups
    x0 = torch.randn(shape, dtype=dtype)
    a0 = (torch.randn(G, args.m) * 0.5).to(dtype)
    b0 = (torch.randn(G, args.n) * 0.5).to(dtype)
    dy = (torch.rand(shape) + 0.5).to(dtype)
    x, a, b = (t.clone().requires_grad_() for t in (x0, a0, b0))
    bs0 = b0.clone()
    bs0[:, 0::2] *= 0.02  # signed form: keep Q = 1 + sum |b_j| x^(j+1) away from 0
    bs = bs0.requires_grad_()
    coefs = {"safe": (a, b), "signed": (a, bs)}

    fns = {
        "inductor_pau": (torch.compile(pau_safe, backend="inductor", fullgraph=True), "safe"),
        "inductor_ops": (torch.compile(ops_safe, backend="inductor", fullgraph=True), "safe"),
        "flashkat_pau": (torch.compile(pau_safe, backend="flashkat", fullgraph=True), "safe"),
        "eager_pau": (pau_safe, "safe"),
        "eager_ops": (ops_safe, "safe"),
        "inductor_kat_ref": (torch.compile(kat_ref, backend="inductor", fullgraph=True), "signed"),
        "flashkat_kat_ref": (torch.compile(kat_ref, backend="flashkat", fullgraph=True), "signed"),
        "eager_kat_ref": (kat_ref, "signed"),
    }
    methods = [m for m in args.methods if m in fns]

    def clear_grads():
        # .grad = None before each backward: autograd then hands the gradient over
        # instead of adding it into the previous one (an extra pass over x)
        x.grad = a.grad = b.grad = bs.grad = None

    def fwd(f):
        fn, form = f
        return lambda: fn(x, *coefs[form])

    def fwdbwd(f):
        fn, form = f

        def run():
            clear_grads()
            fn(x, *coefs[form]).backward(dy)
        return run

    def bwd_timer(f, reps):
        fn, form = f
        ts = []
        for _ in range(reps):
            clear_grads()
            y = fn(x, *coefs[form])
            t0 = time.perf_counter()
            y.backward(dy)
            ts.append(time.perf_counter() - t0)
        return ts

    # ---- warm-up (compiles) and a correctness cross-check ------------------
    outs = {}
    for mth in methods:
        for _ in range(3):
            fwdbwd(fns[mth])()
        clear_grads()
        fn, form = fns[mth]
        ca, cb = coefs[form]
        y = fn(x, ca, cb)
        y.backward(dy)
        outs[mth] = (y.detach().double(), x.grad.double(), ca.grad.double(), cb.grad.double())
        clear_grads()
    for form in ("safe", "signed"):  # each method against the first of its function
        same = [m for m in methods if fns[m][1] == form]
        for mth in same[1:]:
            errs = [((o - r).norm() / r.norm()).item() for o, r in zip(outs[mth], outs[same[0]])]
            if max(errs) > (1e-4 if dtype == torch.float32 else 5e-2):
                print(f"warning: {mth} differs from {same[0]}: rel errs y/dx/da/db = {errs}")

    # ---- copy ceiling --------------------------------------------------------
    src = torch.randn(shape).to(dtype)
    dst = torch.empty_like(src)
    for _ in range(5):
        dst.copy_(src)

    # ---- timed rounds, methods interleaved --------------------------------
    res = {m: {"fwd": [], "bwd": [], "fwdbwd": []} for m in methods}
    copy_ms = []
    for _ in range(args.rounds):
        copy_ms.append(time_ms(lambda: dst.copy_(src), args.reps))
        for mth in methods:
            f = fns[mth]
            res[mth]["fwd"].append(time_ms(fwd(f), args.reps))
            res[mth]["bwd"].append(statistics.median(bwd_timer(f, args.reps)) * 1e3)
            res[mth]["fwdbwd"].append(time_ms(fwdbwd(f), args.reps))
            clear_grads()

    nbytes = src.numel() * src.element_size()
    copy_gbps = 2 * nbytes / (statistics.median(copy_ms) * 1e-3) / 1e9
    device = f"{device_name()}, {torch.get_num_threads()} threads"
    rows = []
    for mth in methods:
        rows.append({
            "device": device,
            "torch": torch.__version__,
            "triton": triton_version(),
            "dtype": args.dtype,
            "shape": list(shape),
            "groups": G,
            "order": [args.m, args.n],
            "method": mth,
            "fwd_ms": round(statistics.median(res[mth]["fwd"]), 4),
            "bwd_ms": round(statistics.median(res[mth]["bwd"]), 4),
            "fwdbwd_ms": round(statistics.median(res[mth]["fwdbwd"]), 4),
            "copy_gbps": round(copy_gbps, 2),
        })

    # ---- report --------------------------------------------------------------
    print(f"{device}; torch {torch.__version__}; {args.dtype}; shape {shape}; {G} groups; "
          f"(m, n) = ({args.m}, {args.n}); copy {copy_gbps:.1f} GB/s; load average {os.getloadavg()[0]:.2f}")
    by = {r["method"]: r for r in rows}
    print(f"{'method':<17} {'fwd ms':>8} {'bwd ms':>8} {'fwd+bwd ms':>11} {'vs Inductor on the same code':>29}")
    for r in rows:
        base = by.get("inductor_kat_ref" if fns[r["method"]][1] == "signed" else "inductor_pau")
        rel = f"{r['fwdbwd_ms'] / base['fwdbwd_ms']:.2f}x" if base else ""
        print(f"{r['method']:<17} {r['fwd_ms']:>8.3f} {r['bwd_ms']:>8.3f} {r['fwdbwd_ms']:>11.3f} {rel:>29}")
    if args.out != "-":
        out = args.out or os.path.join(HERE, "results", f"cpu_{datetime.date.today().isoformat()}.json")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        old = []
        if os.path.exists(out):
            try:
                with open(out) as f:
                    old = json.load(f)
            except (OSError, ValueError):
                old = []
        with open(out, "w") as f:
            json.dump(old + rows, f, indent=1)
        print(f"wrote {len(rows)} rows to {out}")
    return rows


if __name__ == "__main__":
    main()
