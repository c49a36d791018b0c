"""Train a small Kolmogorov-Arnold Transformer, unmodified KAT code, under backend="flashkat".

    python examples/train_kat.py            # bash scripts/demo.sh runs this
    python examples/train_kat.py --steps 600 --embed-dim 96 --depth 4

The model is built from the KAT-style modules of ``tests/kat_modules.py``
(``KAT_Group`` activations in KAN MLPs, 8 groups): on a GPU, ``KAT_Group``
takes its Triton ``autograd.Function`` path (KAT's kernels, with the
per-element atomic backward), on the CPU KAT's pure-PyTorch function, exactly
as KAT chooses.  The task is synthetic and learnable in a few hundred steps:
each 16 x 16 noise image holds one bright 4 x 4 patch, and the label is the
quadrant it lies in.

The script

1. compiles the model with ``torch.compile(model, backend="flashkat")`` and
   prints the activation sites the backend rewrote;
2. trains it (AdamW) with a progress bar, printing the loss as it goes down,
   then the accuracy on held-out images;
3. times training steps (forward, backward, AdamW) of the same model under
   ``backend="flashkat"``, ``backend="inductor"`` and eager, after warm-up.

Inductor's FX-graph and AOTAutograd caches are switched off for this process:
a cache hit skips the backend's passes, and the report of rewritten sites
with them.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))  # the KAT-style modules (KAT is not on PyPI)
sys.path.insert(0, REPO)  # a source checkout works without installing the package

import kat_modules as km  # noqa: E402


# ----------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------
NOISE, BRIGHTNESS = 0.3, (2.0, 3.0)  # noise std; the patch adds U(2, 3) to every channel


def quadrant_batch(batch: int, img: int, gen: torch.Generator, device) -> tuple:
    """Noise images with one bright patch; the label is the quadrant holding it."""
    half, patch = img // 2, max(2, img // 4)
    images = NOISE * torch.randn(batch, 3, img, img, generator=gen)
    labels = torch.randint(0, 4, (batch,), generator=gen)
    top = torch.randint(0, half - patch + 1, (batch,), generator=gen) + (labels // 2) * half
    left = torch.randint(0, half - patch + 1, (batch,), generator=gen) + (labels % 2) * half
    lo, hi = BRIGHTNESS
    bright = lo + (hi - lo) * torch.rand(batch, generator=gen)
    pos = torch.arange(img)
    rows = (pos >= top[:, None]) & (pos < top[:, None] + patch)  # (batch, img)
    cols = (pos >= left[:, None]) & (pos < left[:, None] + patch)
    images += bright[:, None, None, None] * (rows[:, :, None] & cols[:, None, :])[:, None]
    return images.to(device), labels.to(device)


# ----------------------------------------------------------------------------
# A progress bar without dependencies
# ----------------------------------------------------------------------------
class Progress:
    """``[#######.....]  140/300  loss 0.412  7.9 ms/step``; redrawn in place on a terminal,
    one line per 10% otherwise (logs, CI)."""

    def __init__(self, total: int, width: int = 30):
        self.total, self.width = total, width
        self.tty = sys.stdout.isatty()
        self.next_line = 0

    def update(self, done: int, text: str) -> None:
        filled = self.width * done // self.total
        line = f"  [{'#' * filled}{'.' * (self.width - filled)}] {done:>{len(str(self.total))}}/{self.total}  {text}"
        if self.tty:
            print("\r" + line, end="" if done < self.total else "\n", flush=True)
        elif done >= self.next_line or done == self.total:
            print(line, flush=True)
            self.next_line = done + max(1, self.total // 10)


# ----------------------------------------------------------------------------
# Training and timing
# ----------------------------------------------------------------------------
def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_step(model, opt, schedule=None, clip: float = 1.0):
    """One training step: forward, cross-entropy, backward, gradient clipping, AdamW.

    Clipping matters here: on the CPU, KAT's function is the signed-x form, whose
    denominator ``1 + sum |b_j| x^(j+1)`` can come close to 0 for negative x as ``b``
    trains; without clipping, training stalled at chance in some of the seeds we tried."""

    def step(images, labels):
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if schedule is not None:
            schedule.step()
        return loss

    return step


def warmup_cosine(opt, steps: int, warmup: int):
    """Linear warm-up, then cosine decay to 0 at ``steps`` (and 0 after)."""

    def factor(s: int) -> float:
        return min(1.0, (s + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * min(s, steps) / steps))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def time_steps(step, batches, device, warmup: int) -> tuple:
    """(seconds of the warm-up steps, which include compiling; ms per step after it)."""
    t0 = time.perf_counter()
    for images, labels in batches[:warmup]:
        step(images, labels)
    sync(device)
    warm_s = time.perf_counter() - t0
    times = []
    for images, labels in batches[warmup:]:
        t = time.perf_counter()
        step(images, labels)
        sync(device)
        times.append((time.perf_counter() - t) * 1e3)
    return warm_s, times


def describe_sites(reports, kat_modules: int) -> list:
    lines, seen = [], 0
    for rep in reports:
        for r in rep.rewrites:
            seen += 1
            sign0 = "+1" if r.zero_sign == "kat" else "0 "
            source = f"  [{r.source}]" if getattr(r, "source", "") else ""
            lines.append(f"    {seen:>2}. {r.pattern:<22} form={r.form:<6} sign(0)={sign0}  G={r.groups}  "
                         f"(m,n)=({r.m},{r.n})  {r.graph} graph{source}")
    head = f"  {seen} of {kat_modules} KAT activation sites rewritten to flashkat::rational_fwd / rational_bwd"
    misses = [m for rep in reports for m in rep.near_misses]
    tail = [f"    left alone: {m.node}: {m.reason}" for m in misses]
    return [head] + lines + tail


@torch.no_grad()
def accuracy(model, batches) -> float:
    model.eval()
    right = total = 0
    for images, labels in batches:
        right += (model(images).argmax(-1) == labels).sum().item()
        total += labels.numel()
    model.train()
    return right / total


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=500, help="training steps under backend='flashkat'")
    ap.add_argument("--batch", type=int, default=None, help="default 64 on CPU, 128 on GPU")
    ap.add_argument("--embed-dim", type=int, default=None, help="default 64 on CPU, 192 on GPU")
    ap.add_argument("--depth", type=int, default=None, help="default 3 on CPU, 6 on GPU")
    ap.add_argument("--heads", type=int, default=None, help="default 4 on CPU, 3 on GPU")
    ap.add_argument("--img", type=int, default=None, help="image side, default 16 on CPU, 32 on GPU")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (warm-up 10%%, cosine decay)")
    ap.add_argument("--time-steps", type=int, default=30, help="timed steps per backend, after warm-up")
    ap.add_argument("--rational", choices=("kat", "flashkat"), default="kat",
                    help="KAT's KAT_Group (default) or FlashKAT's FlashKAT_Group (GPU only)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    args = ap.parse_args(argv)

    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = False
    if hasattr(functorch_config, "enable_autograd_cache"):
        functorch_config.enable_autograd_cache = False

    import flashkat_inductor  # noqa: F401 - registers the backend in a source checkout
    from flashkat_inductor.recognisers import collect_reports
    from torch._dynamo.utils import counters

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    for name, cpu_default, gpu_default in (("batch", 64, 128), ("embed_dim", 64, 192), ("depth", 3, 6),
                                           ("heads", 4, 3), ("img", 16, 32)):
        if getattr(args, name) is None:
            setattr(args, name, gpu_default if gpu else cpu_default)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rational == "flashkat" and device.type != "cuda":
        raise SystemExit("--rational flashkat needs a GPU: FlashKAT_Group has no CPU path")
    torch.manual_seed(0)
    cfg = km.KATViTConfig(embed_dim=args.embed_dim, depth=args.depth, num_heads=args.heads, mlp_ratio=4.0,
                          img_size=args.img, patch_size=4, num_classes=4, num_groups=8)
    # KAT's own switch: device="cuda" -> the Triton autograd.Function, else the PyTorch function.
    model = km.build_kat_vit(cfg, rational=args.rational, device=device.type).to(device)
    initial = copy.deepcopy(model)  # the inductor and eager timings start from the same weights
    acts = [m for m in model.modules() if isinstance(m, (km.KAT_Group, km.FlashKAT_Group))]
    n_act = len(acts)
    n_par = sum(p.numel() for p in model.parameters())
    path = "Triton autograd.Function" if device.type == "cuda" else "pure-PyTorch function (signed-x form)"
    print(f"KAT ViT: embed {cfg.embed_dim}, depth {cfg.depth}, heads {cfg.num_heads}, {cfg.img_size}x{cfg.img_size} "
          f"images in {cfg.patch_size}x{cfg.patch_size} patches, {n_act} {type(acts[0]).__name__} "
          f"activations ({path}), {n_par / 1e3:.0f}k parameters")
    where = torch.cuda.get_device_name() if gpu else f"{torch.get_num_threads()} threads"
    print(f"device {device.type} ({where}), torch {torch.__version__}; "
          "task: which quadrant holds the bright patch (4 classes, chance 25%)")

    gen = torch.Generator().manual_seed(1)
    held_out = [quadrant_batch(256, cfg.img_size, gen, device) for _ in range(4)]
    gen = torch.Generator().manual_seed(2)
    chance = accuracy(model, held_out)

    # 1. compile under flashkat: the first step compiles forward + backward.
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    step = make_step(torch.compile(model, backend="flashkat"), opt, warmup_cosine(opt, args.steps, args.steps // 10))
    print("\n[1/3] compiling with backend='flashkat' ...", flush=True)
    counters.clear()
    t0 = time.perf_counter()
    with collect_reports() as reports:
        loss = step(*quadrant_batch(args.batch, cfg.img_size, gen, device)).item()
    sync(device)
    compile_s = time.perf_counter() - t0
    print(f"  compiled in {compile_s:.1f} s; counters['flashkat'] = {dict(counters['flashkat'])}")
    for line in describe_sites(reports, n_act):
        print(line)

    # 2. train
    print(f"\n[2/3] training {args.steps} steps (batch {args.batch}, AdamW, peak lr {args.lr}, warm-up + cosine, "
          "gradients clipped to norm 1) under backend='flashkat'")
    print(f"  held-out accuracy before training: {chance:.1%}")
    bar, losses, times = Progress(args.steps), [loss], []
    bar.update(1, f"loss {loss:.3f}")
    for i in range(2, args.steps + 1):
        images, labels = quadrant_batch(args.batch, cfg.img_size, gen, device)
        t = time.perf_counter()
        loss = step(images, labels).item()  # .item() waits for the step
        times.append((time.perf_counter() - t) * 1e3)
        losses.append(loss)
        window = losses[-20:]
        bar.update(i, f"loss {sum(window) / len(window):.3f}  {statistics.median(times[-20:]):.1f} ms/step")
    checkpoints = sorted({0, len(losses) // 4, len(losses) // 2, 3 * len(losses) // 4, len(losses) - 1})
    trace = ", ".join(f"step {c + 1}: {sum(losses[max(0, c - 9):c + 1]) / len(losses[max(0, c - 9):c + 1]):.3f}"
                      for c in checkpoints)
    print(f"  loss (mean of the last 10 steps) {trace}")
    acc = accuracy(model, held_out)
    print(f"  held-out accuracy after {args.steps} steps: {acc:.1%} (1024 images)")

    # 3. step time: flashkat vs inductor vs eager on the same batches, after warm-up, the
    # three interleaved in rounds so that a change in machine load hits them alike
    print(f"\n[3/3] step time (forward, backward, clipping, AdamW), median of {args.time_steps} steps after warm-up")
    warm, rounds = 3, 5
    batches = [quadrant_batch(args.batch, cfg.img_size, gen, device) for _ in range(args.time_steps)]
    ind, eag = copy.deepcopy(initial), copy.deepcopy(initial)
    steps = {"flashkat": step,
             "inductor": make_step(torch.compile(ind, backend="inductor"),
                                   torch.optim.AdamW(ind.parameters(), lr=args.lr)),
             "eager": make_step(eag, torch.optim.AdamW(eag.parameters(), lr=args.lr))}
    results = {name: [] for name in steps}
    warm_s = {}
    for name, fn in steps.items():
        warm_s[name], _ = time_steps(fn, batches[:warm], device, warm)  # compiles inductor's graphs
    per = -(-len(batches) // rounds)
    for r in range(rounds):
        chunk = batches[r * per:(r + 1) * per]
        for name, fn in steps.items():
            results[name] += time_steps(fn, chunk, device, 0)[1]
    results["flashkat_compile"], results["inductor_compile"] = compile_s, warm_s["inductor"]
    med = {k: statistics.median(results[k]) for k in ("flashkat", "inductor", "eager")}
    rows = (("eager", "eager", ""),
            ("inductor", 'backend="inductor"', f"   (compile + warm-up {results['inductor_compile']:.1f} s)"),
            ("flashkat", 'backend="flashkat"', f"   (compile {results['flashkat_compile']:.1f} s)"))
    for name, label, extra in rows:
        print(f"  {label:<20} {med[name]:8.2f} ms/step{extra}")
    print(f"  flashkat: {med['inductor'] / med['flashkat']:.2f}x the speed of inductor, "
          f"{med['eager'] / med['flashkat']:.2f}x the speed of eager")
    if acc < 0.9:
        print(f"  note: accuracy {acc:.1%} is below 90%; try more --steps")


if __name__ == "__main__":
    main()
