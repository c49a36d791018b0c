"""The main job: the rational on a KAT-sized tensor, eager, with timings.

    python -m flashkat_inductor.demo
"""
from __future__ import annotations

import argparse
import time

import torch

from . import GroupRational
from .semantics import reference_backward, reference_forward


def _time(fn, reps):
    fn()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    B = args.batch or (128 if dev == "cuda" else 16)
    L, C = 197, 768
    act = GroupRational(num_groups=8, mode="gelu").to(dev)
    x = torch.randn(B, L, C, device=dev, requires_grad=True)
    g = torch.rand(B, L, C, device=dev) + 0.5
    print(f"GroupRational(8 groups, gelu init) on {B} x {L} x {C} float32, {dev}")

    y = act(x)  # the first call imports torch._dynamo (custom ops run under it): ~1 s, once
    y.backward(g)
    ref = reference_forward(x[0, :8].detach(), act.weight_numerator.detach(), act.weight_denominator.detach(), "safe")
    err = ((y[0, :8].double() - ref).norm() / ref.norm()).item()
    rg = reference_backward(g, x.detach(), act.weight_numerator.detach(), act.weight_denominator.detach(), "safe", "kat")
    gerr = ((act.weight_denominator.grad.double() - rg[2].to(dev)).norm() / rg[2].norm()).item()
    print(f"  relative error vs float64: y {err:.1e} (first 8 rows), d(denominator) {gerr:.1e}")

    def fwd():
        with torch.no_grad():
            act(x)

    def fwdbwd():
        act(x).backward(g)

    f_ms, fb_ms = _time(fwd, args.reps), _time(fwdbwd, args.reps)
    gb = x.numel() * x.element_size() * 5 / 1e9  # fwd: read x, write y; bwd: read x, dy, write dx
    print(f"  forward {f_ms:.2f} ms, forward + backward {fb_ms:.2f} ms ({gb / fb_ms * 1e3:.1f} GB/s effective)")


if __name__ == "__main__":
    main()
