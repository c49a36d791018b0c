"""The rational alone: forward, backward, forward + backward, side by side in one run.

    python bench/bench_rational.py                    # issue-2 set: 2 KAT shapes, fp32 + bf16
    python bench/bench_rational.py --suite            # every KAT-T/S/B shape, fp32/bf16/fp16, all peers
    python bench/bench_rational.py --out results.json

Columns (one JSON row per dtype x shape x method):
  fwd_ms     forward alone (no autograd graph), median of triton.testing.do_bench
  bwd_ms     backward alone (autograd.grad with retain_graph on one forward)
  fwdbwd_ms  forward + backward
  *_gbps     effective bandwidth from the bytes the op must move: forward reads x and
             writes y (2 elements), backward reads x, dy and writes dx (3 elements)
  copy_gbps  a device-to-device copy of the same tensor (read + write counted): the ceiling
  err_*      relative error (norm of difference / norm) against a float64 reference
  peak_mb    peak memory allocated during forward + backward above the inputs
  gpu_fwd_ms, gpu_fwdbwd_ms
             the time the GPU spends in kernels (and memsets / copies) per call, summed from
             torch.profiler over a few calls: the work itself, without the CPU-side cost of a
             call (dispatch, guards, autograd) that do_bench's medians include when the GPU
             waits for the CPU (small shapes, compiled functions)
  kernels    the largest GPU activities of one forward + backward: [name, microseconds]

Methods (names containing "flashkat" are the project's own):
  eager_safe_pau         hand-written safe PAU (Horner on a (..., G, D) view), PyTorch eager
  inductor_safe_pau      the same under torch.compile(backend="inductor")
  inductor_kat_reference KAT's pure-PyTorch reference (signed form) under Inductor   [--suite]
  kat_atomic_triton      KAT-style autograd.Function, per-element atomic backward     (tests/kat_modules.py)
  flashkat_style_triton  FlashKAT-style autograd.Function (2-D grid, atomics per tile) (tests/kat_modules.py)
  flashkat_ops_eager     this project's ops, eager (its Triton kernels)
  flashkat_compiled_pau  the hand-written safe PAU under torch.compile(backend="flashkat") (rewritten)
  flashkat_compiled_op   GroupRational-style op call under torch.compile(backend="flashkat")
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys

import torch
import torch._functorch.config

# the backward is timed on its own with retain_graph=True, which AOTAutograd refuses for graphs
# compiled with donated buffers
if hasattr(torch._functorch.config, "donated_buffer"):
    torch._functorch.config.donated_buffer = False

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))

import flashkat_inductor as fk  # noqa: E402
from flashkat_inductor.semantics import reference_backward, reference_forward  # noqa: E402
from benchlib import PHASE_ELEMENTS, effective_gbps, gpu_activities, safe_pau  # noqa: E402

GROUPS = 8
BASIC_SHAPES = [(128, 197, 768), (128, 197, 3072), (7, 33, 200)]
SUITE_SHAPES = [(128, 197, c) for c in (192, 384, 768, 1536, 3072)] + [(7, 33, 200), (32, 50, 1000)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ----------------------------------------------------------------------------
# The functions compared
# ----------------------------------------------------------------------------
def methods(suite: bool, mode=None):
    import kat_modules as km

    def kat_fn(x, a, b):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.dtype != torch.float32):
            return km.rational_1dgroup.apply(x, a.expand(GROUPS, -1).contiguous(), b, GROUPS)

    def flashkat_style_fn(x, a, b):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.dtype != torch.float32):
            return km.flashkat_rational_1dgroup.apply(x, a.expand(GROUPS, -1).contiguous(), b, GROUPS)

    def ops_fn(x, a, b):
        return fk.rational(x, a, b, form="safe", zero_sign="kat")

    m = {
        "eager_safe_pau": (safe_pau, "torch"),
        "inductor_safe_pau": (torch.compile(safe_pau, backend="inductor", dynamic=False, mode=mode), "torch"),
        "kat_atomic_triton": (kat_fn, "kat"),
        "flashkat_style_triton": (flashkat_style_fn, "kat"),
        "flashkat_ops_eager": (ops_fn, "kat"),
        "flashkat_compiled_pau": (torch.compile(safe_pau, backend="flashkat", dynamic=False, mode=mode), "torch"),
        "flashkat_compiled_op": (torch.compile(ops_fn, backend="flashkat", dynamic=False, mode=mode), "kat"),
    }
    if suite:

        def kat_ref(x, a, b):
            # its bmm needs one dtype: half-precision x runs under autocast, as in real training
            # (called bare, eager and Inductor both refuse float32 weights with a bf16 / fp16 x)
            with torch.autocast("cuda", dtype=x.dtype, enabled=x.dtype != torch.float32):
                return km.kat_rational_torch(x, a.expand(GROUPS, -1), b, GROUPS)

        m["inductor_kat_reference"] = (torch.compile(kat_ref, backend="inductor", dynamic=False, mode=mode), "signed")
    return m


# ----------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------
def rel(out, ref):
    out = out.double()
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out - ref).norm() / ref.norm()).item()


# set by --compile-mode reduce-overhead: compiled methods replay CUDA graphs, whose outputs the
# next replay overwrites; every timed call then starts a new step and kept outputs are cloned
CUDAGRAPHS = {"on": False, "static_inputs": False, "capture": False}


class _CudagraphSkips(logging.Handler):
    """Collects Inductor's "skipping cudagraphs due to ..." messages (its cudagraphs log)."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.messages: list = []

    def emit(self, record):
        msg = record.getMessage()
        if "skipping cudagraphs" in msg:
            self.messages.append(msg[:300])


CUDAGRAPH_SKIPS = _CudagraphSkips()


def watch_cudagraph_skips():
    """Route Inductor's cudagraphs log (where it says why a graph is not captured) to CUDAGRAPH_SKIPS."""
    from torch._inductor import cudagraph_utils

    torch._logging.set_logs(cudagraphs=True)
    cudagraph_utils.cudagraphs_log.addHandler(CUDAGRAPH_SKIPS)
    cudagraph_utils.cudagraphs_log.propagate = False  # keep the recording chatter out of the log


def stepped(call):
    """``call`` as one CUDA-graph step (cudagraph_mark_step_begin first) when CUDA graphs are on."""
    if not CUDAGRAPHS["on"]:
        return call

    def run():
        torch.compiler.cudagraph_mark_step_begin()
        return call()

    return run


def bench_one(fn, zero_sign, x, a, b, dy, refs, slow):
    from triton.testing import do_bench

    rep = 20 if slow else 200
    xr = x.detach().requires_grad_()
    ar = a.detach().requires_grad_()
    br = b.detach().requires_grad_()
    if CUDAGRAPHS["static_inputs"]:  # CUDA graphs read these in place instead of copying them in
        for t in (x, a, b, xr, ar, br):
            torch._dynamo.mark_static_address(t)
    row = {}
    with torch.no_grad():
        row["fwd_ms"] = do_bench(stepped(lambda: fn(x, a, b)), warmup=10 if slow else 50, rep=rep,
                                 return_mode="median")
    y = stepped(lambda: fn(xr, ar, br))()
    if CUDAGRAPHS["on"]:
        y = y.clone()
    # peers under autocast return float32 (custom_fwd(cast_inputs=float32)); autograd then
    # hands them a float32 gradient, as in real mixed-precision training
    dy = dy.to(y.dtype)
    grads = torch.autograd.grad(y, (xr, ar, br), dy, retain_graph=True)
    row["bwd_ms"] = None
    if CUDAGRAPHS["on"]:  # one backward replayed on one forward is not a CUDA-graph step
        grads = tuple(g.clone() for g in grads)
    else:
        try:
            row["bwd_ms"] = do_bench(lambda: torch.autograd.grad(y, (xr, ar, br), dy, retain_graph=True),
                                     warmup=10 if slow else 50, rep=rep, return_mode="median")
        except RuntimeError:
            pass
    row["fwdbwd_ms"] = do_bench(stepped(lambda: torch.autograd.grad(fn(xr, ar, br), (xr, ar, br), dy)),
                                warmup=10 if slow else 50, rep=rep, return_mode="median")
    if row["bwd_ms"] is None:
        row["bwd_ms"] = row["fwdbwd_ms"] - row["fwd_ms"]
    calls = 1 if slow else 5
    with torch.no_grad():
        row["gpu_fwd_ms"], _ = gpu_time(stepped(lambda: fn(x, a, b)), calls)
    row["gpu_fwdbwd_ms"], row["kernels"] = gpu_time(
        stepped(lambda: torch.autograd.grad(fn(xr, ar, br), (xr, ar, br), dy)), calls)
    if CUDAGRAPHS["on"]:
        # The backward graph's replay copies dy (a tangent from outside any CUDA graph) into its
        # own buffer: one foreach copy kernel, the same for every method.  In a model the tangent
        # comes from the next layer's backward inside the graph, so it is reported apart.
        row["gpu_input_copy_ms"] = sum(us for k, us in row["kernels"] if "multi_tensor_apply" in k) / 1e3
    ref_y, ref_g = refs[zero_sign]
    row["err_y"] = rel(y.detach(), ref_y)
    for k, g, r in zip(("err_dx", "err_dnum", "err_dden"), grads, ref_g):
        row[k] = rel(g, r)
    y = grads = None
    if CUDAGRAPHS["capture"]:
        # fresh leaves: the ones above were used on the default stream, and autograd would make the
        # capture stream wait for it (an invalid operation during capture)
        xc, ac, bc = (t.detach().requires_grad_() for t in (x, a, b))
        try:
            row["graphed_fwdbwd_ms"], row["gpu_graphed_fwdbwd_ms"] = graphed_step(
                lambda: torch.autograd.grad(fn(xc, ac, bc), (xc, ac, bc), dy), slow)
        except Exception as e:  # noqa: BLE001 - a method that cannot be captured is reported, not fatal
            print(f"      graph capture failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
            row["graphed_fwdbwd_ms"] = row["gpu_graphed_fwdbwd_ms"] = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    stepped(lambda: torch.autograd.grad(fn(xr, ar, br), (xr, ar, br), dy))()
    torch.cuda.synchronize()
    row["peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return row


def graphed_step(step, slow: bool):
    """(wall ms, GPU ms) of ``step`` (forward + backward) captured whole into one CUDA graph by the
    benchmark itself (torch.cuda.graph, as torch.cuda.make_graphed_callables does), after warm-up
    on a side stream: each replay is one launch, reading x, the coefficients and dy where they lie,
    so the wall time is the GPU's, for every method alike (compiled in the default mode, or eager)."""
    from triton.testing import do_bench

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: CUDA calls of other threads (the profiler's, autograd's) do not void the capture
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        step()
    ms = do_bench(graph.replay, warmup=10 if slow else 50, rep=20 if slow else 200, return_mode="median")
    gpu_ms, _ = gpu_time(graph.replay, 1 if slow else 5)
    return ms, gpu_ms


def gpu_time(call, calls: int = 5):
    """(GPU milliseconds per call, [[activity, microseconds per call], ...] largest first) from
    torch.profiler: the device time of kernels, memsets and copies, gaps between them left out."""
    call()
    torch.cuda.synchronize()
    per = gpu_activities(call, calls)
    top = sorted(per.items(), key=lambda kv: -kv[1][0])
    return sum(us for us, _ in per.values()) / 1e3, [[k[:90], round(us, 2)] for k, (us, _) in top[:6]]


def copy_gbps(x):
    from triton.testing import do_bench

    buf = torch.empty_like(x)
    ms = do_bench(lambda: buf.copy_(x), warmup=50, rep=200, return_mode="median")
    return 2 * x.numel() * x.element_size() / ms / 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", action="store_true")
    ap.add_argument("--dtypes", default=None, help="comma list (default: float32,bfloat16; suite adds float16)")
    ap.add_argument("--methods", default=None, help="comma list of method names")
    ap.add_argument("--shapes", default=None, help="e.g. 128x197x768,7x33x200")
    ap.add_argument("--out", default=None)
    ap.add_argument("--compile-mode", default=None,
                    help="torch.compile mode= for every compiled method (e.g. reduce-overhead: CUDA graphs, "
                         "which take the per-call CPU cost out of the wall-clock times)")
    ap.add_argument("--graph-capture", action="store_true",
                    help="also time forward + backward captured whole into one CUDA graph by the benchmark "
                         "(default compile mode only): the wall time without any per-launch CPU cost or "
                         "input copy")
    ap.add_argument("--static-inputs", action="store_true",
                    help="with CUDA graphs: mark x and the coefficients as static addresses, so that each "
                         "replay reads them in place instead of copying them into the graph's buffers (as a "
                         "model's parameters and a preceding layer's output would be); dy is still copied")
    args = ap.parse_args(argv)
    assert torch.cuda.is_available(), "this benchmark needs a CUDA device"
    import triton
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    shapes = SUITE_SHAPES if args.suite else BASIC_SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    dtypes = args.dtypes.split(",") if args.dtypes else (["float32", "bfloat16"] + (["float16"] if args.suite else []))
    names = args.methods.split(",") if args.methods else list(methods(args.suite))
    CUDAGRAPHS["on"] = args.compile_mode in ("reduce-overhead", "max-autotune")
    CUDAGRAPHS["static_inputs"] = args.static_inputs
    CUDAGRAPHS["capture"] = args.graph_capture
    assert not (args.graph_capture and CUDAGRAPHS["on"]), "--graph-capture captures default-mode functions"
    if args.graph_capture:  # the process's first capture on a trivial op, where its lazy set-up cannot fail a case
        t = torch.ones(8, device="cuda")
        graphed_step(lambda: t * 2.0, slow=True)
    if CUDAGRAPHS["on"]:
        watch_cudagraph_skips()
    stamp = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
             "date": datetime.date.today().isoformat(), "compile_mode": args.compile_mode or "default",
             "static_inputs": args.static_inputs, "graph_capture": args.graph_capture}
    rows = []
    out = args.out or os.path.join(HERE, "results", f"rational_{stamp['date']}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)

    def save():  # after every row: a run cut off by a timeout keeps what it measured
        with open(out, "w") as f:
            json.dump(rows, f, indent=1)

    for dname in dtypes:
        dt = DTYPES[dname]
        for shape in shapes:
            x = torch.randn(shape, device="cuda").to(dt)
            dy = torch.randn(shape, device="cuda").to(dt)
            a = 0.5 * torch.randn(1, 6, device="cuda")
            b = 0.5 * torch.randn(GROUPS, 4, device="cuda")
            refs = {}
            for zs, form in (("kat", "safe"), ("torch", "safe"), ("signed", "signed")):
                refs[zs] = (reference_forward(x, a, b, form),
                            reference_backward(dy, x, a, b, form, "torch" if zs == "signed" else zs))
            # a fresh Dynamo state and static shapes for every case: compiled functions called on a
            # second shape would otherwise be recompiled with a symbolic channel count (automatic
            # dynamic), which no real model has and which changes the code Inductor generates
            torch._dynamo.reset()
            all_methods = methods(args.suite, args.compile_mode)
            cg = copy_gbps(x)
            nbytes = x.numel() * x.element_size()
            for name in names:
                fn, zs = all_methods[name]
                slow = name == "kat_atomic_triton"
                skips_before = counters["inductor"]["cudagraph_skips"]
                CUDAGRAPH_SKIPS.messages.clear()
                try:
                    r = bench_one(fn, zs, x, a, b, dy, refs, slow)
                except Exception as e:  # a peer that cannot run a case is reported, not fatal
                    print(f"  {name} {dname} {shape}: FAILED {type(e).__name__}: {str(e)[:200]}")
                    continue
                if CUDAGRAPHS["on"]:
                    r["cudagraph_skips"] = counters["inductor"]["cudagraph_skips"] - skips_before
                    r["cudagraph_skip_reasons"] = sorted(set(CUDAGRAPH_SKIPS.messages))
                row = dict(stamp, dtype=dname, shape="x".join(map(str, shape)), method=name, copy_gbps=round(cg, 1),
                           **{f"{p}_gbps": effective_gbps(p, nbytes, r[f"{p}_ms"]) for p in PHASE_ELEMENTS}, **r)
                rows.append(row)
                save()
                print(f"{dname:9s} {row['shape']:>14s} {name:24s} fwd {r['fwd_ms']:8.3f} bwd {r['bwd_ms']:8.3f} "
                      f"f+b {r['fwdbwd_ms']:8.3f} ms  {row['fwdbwd_gbps']:7.0f} GB/s ({100 * row['fwdbwd_gbps'] / cg:3.0f}% "
                      f"of copy)  GPU fwd {r['gpu_fwd_ms']:.3f} f+b {r['gpu_fwdbwd_ms']:.3f} ms  err y {r['err_y']:.1e} dx {r['err_dx']:.1e} dnum {r['err_dnum']:.1e} "
                      f"dden {r['err_dden']:.1e}  peak {r['peak_mb']:.0f} MB", flush=True)
                print("      GPU f+b: " + ", ".join(f"{k[:48]} {v:.1f} us" for k, v in r["kernels"]), flush=True)
                if r.get("graphed_fwdbwd_ms") is not None:
                    print(f"      one CUDA graph per step: f+b {r['graphed_fwdbwd_ms']:.3f} ms wall, "
                          f"{r['gpu_graphed_fwdbwd_ms']:.3f} ms GPU", flush=True)
                if CUDAGRAPHS["on"]:
                    print(f"      CUDA graphs: dy copy {r['gpu_input_copy_ms']:.3f} ms of GPU f+b; graphs not "
                          f"captured: {r['cudagraph_skips']} {r['cudagraph_skip_reasons']}", flush=True)
            del x, dy, refs
            torch.cuda.empty_cache()
    save()
    print("wrote", out)


if __name__ == "__main__":
    main()
