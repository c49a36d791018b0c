"""One forward + backward of the compiled rational between cudaProfilerStart and Stop, for
Nsight Compute.

The autotuner is given one backward config (so that nothing but the profiled step launches the
template), the step runs a few times to warm up, and the last one runs between
``torch.cuda.profiler.start()`` and ``stop()`` (process-wide: the backward's kernels are launched
from autograd's device thread, outside any NVTX range pushed here):

    ncu --profile-from-start off --set full -o REPORT \\
        python bench/profile_ncu.py --dtype bfloat16 --shape 128x197x3072 --config 8x128x4x3x3

(``bench/run_h200_ncu.sh`` runs it and exports the report's pages.)  Without ncu it only checks
the gradients against float64 and prints the kernels' GPU times from torch.profiler.
"""
from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16", "float16"))
    ap.add_argument("--shape", default="128x197x3072")
    ap.add_argument("--config", default="8x128x4x3x3", help="BLOCK_RxBLOCK_CxWARPSxSTAGESxPIPE_STAGES")
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args(argv)
    os.environ["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"
    sys.path.insert(0, os.path.join(HERE, ".."))

    import torch

    import flashkat_inductor as fk
    from flashkat_inductor.lowerings import backward as bw
    from flashkat_inductor.semantics import reference_backward

    assert torch.cuda.is_available(), "this profile needs a CUDA device"
    dt = getattr(torch, args.dtype)
    shape = tuple(int(v) for v in args.shape.split("x"))
    bw._state["configs"] = [tuple(int(v) for v in args.config.split("x"))]
    torch.manual_seed(0)
    x = torch.randn(shape, device="cuda").to(dt).requires_grad_()
    dy = torch.randn(shape, device="cuda").to(dt)
    a = (0.5 * torch.randn(1, 6, device="cuda")).requires_grad_()
    b = (0.5 * torch.randn(8, 4, device="cuda")).requires_grad_()
    f = torch.compile(lambda x, a, b: fk.rational(x, a, b, form="safe", zero_sign="kat"),
                      backend="flashkat", dynamic=False)

    def step():
        y = f(x, a, b)
        return torch.autograd.grad(y, (x, a, b), dy)

    for _ in range(args.warmup):
        grads = step()
    torch.cuda.synchronize()
    ref = reference_backward(dy, x.detach(), a.detach(), b.detach(), "safe", "kat")
    errs = [((g.double() - r).norm() / r.norm()).item() for g, r in zip(grads, ref)]
    print(f"{args.dtype} {args.shape} config {args.config}: errors dx / dnum / dden "
          + " / ".join(f"{e:.1e}" for e in errs), flush=True)
    torch.cuda.profiler.start()
    step()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            step()
        torch.cuda.synchronize()
    for ev in prof.key_averages():
        if ev.device_type == torch.autograd.DeviceType.CUDA and ev.count:
            total = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0.0)  # us
            print(f"   {total / ev.count:8.1f} us  x{ev.count // 5}  {ev.key[:90]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
