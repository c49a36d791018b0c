"""A small KAT trained data-parallel under ``torch.compile(backend="flashkat")``: the
worker shared by ``tests/test_distributed.py`` (2 CPU processes, gloo) and
``bench/bench_distributed.py`` (torchrun, NCCL on GPUs; gloo on CPU as a smoke test).

Every rank builds the same model (same seed), wraps it with DDP or FSDP2
(``torch.distributed.fsdp.fully_shard`` on every block, then the root), compiles
it, and runs ``steps`` SGD steps on its slice of a global batch that every rank
generates identically.  The loss is the mean over the rank's slice, so the
gradient DDP / FSDP average over equal slices is the gradient of the mean over
the global batch: a single process training on the concatenated batch must
reach the same parameters (``reference``).

``result`` holds the full (unsharded) gradients of the last step and the
parameters after the last step, the flashkat counters of the rank, and the
step times.
"""
from __future__ import annotations

import os
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from kat_modules import KAT_TEST, build_kat_vit  # noqa: E402

LR = 0.1


def make_model(cfg=KAT_TEST, rational: str = "kat_torch", seed: int = 0, device: str = "cpu"):
    """The model, built on the CPU (move it with .to); ``device`` is KAT's argument ("cuda": KAT_Group
    launches its Triton Function, which the backend rewrites; "cpu": KAT's PyTorch function)."""
    torch.manual_seed(seed)
    return build_kat_vit(cfg, rational=rational, device=device)


def global_batch(cfg, batch: int, step: int):
    g = torch.Generator().manual_seed(1000 + step)
    images = torch.randn(batch, cfg.in_chans, cfg.img_size, cfg.img_size, generator=g)
    labels = torch.randint(0, cfg.num_classes, (batch,), generator=g)
    return images, labels


def _full(t):
    """A plain tensor of the whole value (FSDP2 parameters and gradients are sharded DTensors)."""
    if t is None:
        return None
    full = getattr(t, "full_tensor", None)
    return (full() if full is not None else t).detach().cpu().clone()


def reference(cfg=KAT_TEST, batch: int = 4, steps: int = 3, rational: str = "kat_torch", device: str = "cpu",
              compile_backend=None):
    """Single process, the whole batch; eager unless compile_backend is given."""
    model = make_model(cfg, rational, device=torch.device(device).type).to(device)
    run = torch.compile(model, backend=compile_backend) if compile_backend else model
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    grads = None
    for step in range(steps):
        images, labels = (t.to(device) for t in global_batch(cfg, batch, step))
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(run(images), labels).backward()
        if step == steps - 1:
            grads = {n: _full(p.grad) for n, p in model.named_parameters()}
        opt.step()
    return {"grads": grads, "params": {n: _full(p) for n, p in model.named_parameters()}}


def train(rank: int, world: int, mode: str, *, cfg=KAT_TEST, batch: int = 4, steps: int = 3,
          rational: str = "kat_torch", device: str = "cpu", backend: str = "flashkat", timed_steps: int = 0):
    """One rank's run (the process group must be initialised).  mode: "ddp" | "fsdp2"."""
    import torch.distributed as dist
    from torch._dynamo.utils import counters

    assert batch % world == 0, f"global batch {batch} must split evenly over {world} ranks"
    dev = torch.device(device)
    model = make_model(cfg, rational, device=dev.type).to(dev)
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    elif mode == "fsdp2":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(dev.type, (world,))
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        wrapped = fully_shard(model, mesh=mesh)
    else:
        raise ValueError(f"mode must be 'ddp' or 'fsdp2', got {mode!r}")
    from flashkat_inductor.recognisers import collect_reports

    counters.clear()
    torch._dynamo.reset()
    compiled = torch.compile(wrapped, backend=backend)
    reports = collect_reports()
    reports.__enter__()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    per_rank = batch // world
    grads, times = None, []
    for step in range(steps + timed_steps):
        images, labels = global_batch(cfg, batch, step if step < steps else 0)
        sl = slice(rank * per_rank, (rank + 1) * per_rank)
        images, labels = images[sl].to(dev), labels[sl].to(dev)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        dist.barrier()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(compiled(images), labels).backward()
        if step == steps - 1:
            grads = {n: _full(p.grad) for n, p in model.named_parameters()}
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t0)
        if step == steps - 1:
            params = {n: _full(p) for n, p in model.named_parameters()}
    reports.__exit__(None, None, None)
    return {"rank": rank, "mode": mode, "grads": grads, "params": params,
            "counters": dict(counters["flashkat"]), "step_s": times,
            "graphs": counters["stats"]["unique_graphs"],
            "near_misses": [m.reason for r in reports.reports for m in r.near_misses]}


def compare(result: dict, ref: dict, tol_grads: float, tol_params: float) -> list:
    """Parameters / gradients whose relative (norm) error against the reference exceeds the tolerance."""
    bad = []
    for what, tol in (("grads", tol_grads), ("params", tol_params)):
        for name, r in ref[what].items():
            v = result[what][name]
            if v is None or r is None:
                if (v is None) != (r is None):
                    bad.append((what, name, "missing"))
                continue
            err = ((v.double() - r.double()).norm() / r.double().norm().clamp_min(1e-30)).item()
            if not err <= tol:
                bad.append((what, name, err))
    return bad
