"""One training step (forward, cross-entropy, backward, AdamW) of KAT-T / KAT-S: flashkat vs its peers (issue 4).

    python bench/bench_train.py                                   # GPU: KAT-T + KAT-S, float32 + bf16, all methods
    python bench/bench_train.py --models kat_t --dtypes bfloat16 --plot
    python bench/bench_train.py --device cpu --models test --batch 2 --img-size 16 --steps 2 --warmup 1 \\
        --threads 1 --out /tmp/train_smoke.json                   # CPU smoke test (KAT_TEST, 2 blocks)

Models (tests/kat_modules.py, 8 groups, KAN MLPs ``rational -> fc1 -> rational -> fc2``):

  kat_t   KAT-T: embed 192, depth 12, heads 3   (peer: timm vit_tiny_patch16_224)
  kat_s   KAT-S: embed 384, depth 12, heads 6   (peer: timm vit_small_patch16_224)
  test    KAT_TEST: embed 32, depth 2, heads 2, 4x4 patches, 10 classes (peer: a timm
          VisionTransformer of the same shape), for CPU smoke tests

``--img-size`` (default 224) and ``--config-overrides k=v,...`` (fields of
KATViTConfig: embed_dim, depth, num_heads, mlp_ratio, patch_size, num_classes,
num_groups...) change the KAT model; the ViT peer is then built with the same
shape (timm ``VisionTransformer``) instead of by name.

Methods (one after another per model x dtype; the model, optimiser and caches are
freed between them):

  flashkat        the KAT model (KAT_Group) under torch.compile(backend="flashkat"): KAT's
                  activation is rewritten into flashkat::rational_fwd / rational_bwd
  inductor_kat    the same KAT model under torch.compile(backend="inductor")
  eager_kat       the same KAT model, eager. On CUDA KAT_Group runs KAT-style Triton
                  kernels (per-element atomic backward); on the CPU KAT's own choice is its
                  pure-PyTorch function (column rational_path says which)
  eager_flashkat  the model with FlashKAT-style modules (FlashKAT_Group: 2-D backward grid,
                  atomics per tile), eager. Needs Triton on CUDA; on the CPU it runs only
                  under TRITON_INTERPRET=1 (set before launch), otherwise the row is a skip
  vit_inductor    timm's ViT-T / ViT-S (GELU MLPs) under torch.compile(backend="inductor");
                  a skip row when timm is not installed

The KAT model is built once per (model, dtype) from a fixed seed, and every method
starts from a copy of the same initial weights; inputs are one synthetic batch
(fixed seed, standard normal images, uniform labels).  bfloat16 means
torch.autocast(device, dtype=torch.bfloat16) around forward and loss, with float32
parameters and AdamW state; float16 the same with torch.float16 and a GradScaler (the
loss scaled before backward, the step skipped and the scale lowered on inf / NaN
gradients, as fp16 training does).  Inductor's FX-graph and AOTAutograd caches are off
(``--keep-caches`` keeps them), so compile times are cold and the flashkat row's
rewrite counters prove the rewrite fired.

Columns of the JSON rows (bench/results/train_<device tag>_<date>.json; one row per
model x dtype x method):

  device, torch, triton, date      where and when it ran
  model, dtype, method, batch, img_size, config   what ran (config: the KAT config)
  rational_path                    the activation's code: "triton_atomic" (KAT_Group on
                                   CUDA), "torch" (KAT's pure-PyTorch function),
                                   "flashkat_triton" (FlashKAT_Group), "gelu" (ViT)
  params                           parameter count
  first_step_s                     the first step, compile included (compiled methods:
                                   Dynamo + AOTAutograd + Inductor, forward and backward)
  warmup, steps                    untimed warm-up steps after the first; timed steps
  step_ms_median, step_ms_mean, step_ms_min
                                   per timed step: CUDA events around each step (CPU:
                                   perf_counter around each step)
  step_ms_wall                     wall time of all timed steps / steps (one sync at the end)
  base_mb                          CUDA memory allocated before the timed steps (weights,
                                   the last warm-up step's gradients, AdamW state)
  peak_mb                          torch.cuda.max_memory_allocated over the timed steps
                                   (peak stats reset after warm-up): base + activations +
                                   gradients + workspace.  None on the CPU
  loss                             loss of the last step (a finite number: the step trained)
  memory_peak                      (--memory-peak, CUDA) one more step with the allocator's history:
                                   the peak above the bytes live before it and the largest
                                   allocations live at that peak, each with its innermost frames
                                   (for compiled code the generated wrapper's line, which names the
                                   buffer and its shape); bench/benchlib.py memory_at_peak
  cudagraph_skips                  (--compile-mode reduce-overhead) graphs Inductor ran without CUDA
                                   graphs, counters["inductor"]["cudagraph_skips"] after warm-up
  flashkat_counters                counters["flashkat"] after compiling (flashkat only):
                                   "rewrites" should equal rational_sites
  left_alone                       (flashkat rows) the recognisers' near misses, "node: reason"
  note                             e.g. "only k of n activation sites rewritten"
  rational_sites                   the KAT/FlashKAT activation modules in the model
  graph_breaks                     Dynamo graph breaks (compiled methods)
  vs_vit_inductor, vs_inductor_kat, vs_eager_kat, vs_eager_flashkat
  gpu_busy_vs_vit_inductor         (with --profile) GPU-busy ms per step / the ViT's
                                   (flashkat rows) flashkat median / peer median: < 1 is faster
  kat_extra_act_mb                 (flashkat rows) the activations a KAT block saves that a
                                   ViT block does not: one float32 (B, L, D) tensor per block
                                   (float32: the first rational's output, fc1's saved input;
                                   bf16 autocast: the norm's float32 output, which the first
                                   rational saves; see kat_extra_act_mb)
  mem_target_ok                    (flashkat rows) peak_mb <= vit_inductor peak_mb +
                                   kat_extra_act_mb
  skipped / error                  why a method has no numbers

Issue 4 targets (batch 128, 224 x 224, one H200): a KAT-T step under flashkat at most
1.10x ViT-T under Inductor (reported: float32 38.2 ms, bf16 autocast 14.9 ms); KAT-S
likewise against ViT-S (97.9 ms float32); the peak memory of a KAT-T step under
flashkat no higher than Inductor's on ViT-T plus the activations KAT adds.  The printed
table checks the ratio against the ViT measured in the same run (and shows the issue's
ViT numbers for reference).

``--plot`` writes a bar chart (median ms/step per method, grouped by model and dtype)
beside the JSON, with the same name and a .png suffix, when matplotlib is importable;
``--plot-only F.json ...`` writes it for results files measured elsewhere.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import functools
import gc
import json
import math
import os
import statistics
import sys
import time
import traceback

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import kat_modules as km  # noqa: E402
from benchlib import device_name, gpu_activities, memory_at_peak, triton_version  # noqa: E402

MODELS = {
    "kat_t": (km.KAT_TINY, "vit_tiny_patch16_224"),
    "kat_s": (km.KAT_SMALL, "vit_small_patch16_224"),
    "test": (km.KAT_TEST, None),
}
DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
METHODS = ("flashkat", "inductor_kat", "eager_kat", "eager_flashkat", "vit_inductor")
# issue 4: ViT step times under Inductor on the GPU machine (batch 128, 224 x 224), ms
ISSUE_VIT_MS = {("kat_t", "float32"): 38.2, ("kat_t", "bfloat16"): 14.9, ("kat_s", "float32"): 97.9}
TARGET_RATIO = 1.10


# ----------------------------------------------------------------------------
# Where it runs
# ----------------------------------------------------------------------------
def _device_name(device: torch.device) -> str:
    name = device_name(device)
    return name if device.type == "cuda" else f"{name}, {torch.get_num_threads()} threads"


def _device_tag(device: torch.device) -> str:
    return "cpu" if device.type == "cpu" else torch.cuda.get_device_name(device).split()[-1].lower()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------
def parse_overrides(text: str) -> dict:
    """``"depth=2,embed_dim=64,mlp_ratio=4.0"`` -> dict with int / float values."""
    out = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        key, _, val = item.partition("=")
        if not _:
            raise SystemExit(f"--config-overrides: expected key=value, got {item!r}")
        key = key.strip()
        if key not in vars(km.KAT_TINY):
            raise SystemExit(f"--config-overrides: unknown field {key!r}; fields: {sorted(vars(km.KAT_TINY))}")
        try:
            out[key] = int(val)
        except ValueError:
            out[key] = float(val)
    return out


def kat_config(model: str, img_size: int, overrides: dict):
    cfg = MODELS[model][0]
    return cfg.replace(img_size=img_size, **overrides)


def build_vit(model: str, cfg, by_name: bool) -> nn.Module:
    """timm's ViT peer: by name (ViT-T / ViT-S) when the shape is the stock one, else a
    timm VisionTransformer of the KAT config's shape.  Raises ImportError without timm."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    name = MODELS[model][1]
    if by_name and name is not None:
        return timm.create_model(name, pretrained=False, img_size=cfg.img_size, num_classes=cfg.num_classes)
    return VisionTransformer(img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans,
                             num_classes=cfg.num_classes, embed_dim=cfg.embed_dim, depth=cfg.depth,
                             num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio)


def rational_sites(model: nn.Module) -> int:
    return sum(isinstance(m, (km.KAT_Group, km.KAT_Group_Torch, km.FlashKAT_Group)) for m in model.modules())


def kat_extra_act_mb(cfg, batch: int) -> float:
    """One float32 (B, L, D) tensor per block, in float32 and under bf16 autocast alike.

    A KAN MLP is norm -> rational -> fc1 -> rational -> fc2 where a ViT's is norm -> fc1 ->
    GELU -> fc2.  float32: the first rational saves the norm's output (the ViT's fc1 saves that
    too) and fc1 saves the rational's output: one extra float32 tensor.  bf16 autocast: fc1
    saves a bf16 copy of its input in both models, but KAT's first rational computes in float32
    on the norm's float32 output (its custom_fwd(cast_inputs=float32), kept exactly: no round
    trip to drop there) and saves that output in float32: again one extra float32 tensor.
    (Checked on the CPU with saved_tensors_hooks on a compiled block of each kind; the
    2026-11-28 JSON rows carry the earlier estimate, half of this in bf16.)"""
    tokens = (cfg.img_size // cfg.patch_size) ** 2 + 1
    return cfg.depth * batch * tokens * cfg.embed_dim * 4 / 2**20


# ----------------------------------------------------------------------------
# One method
# ----------------------------------------------------------------------------
def make_step(run, params, amp_dtype, device: torch.device, fused: bool):
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05, **({"fused": True} if fused else {}))
    # float16 trains with loss scaling (bf16 and float32 need none)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

    def step(images, labels):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = F.cross_entropy(run(images), labels)
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        return loss

    return step, opt


def time_steps(step, images, labels, steps: int, device: torch.device):
    """(per-step ms list, wall ms per step, last loss)."""
    sync(device)
    if device.type == "cuda":
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
        t0 = time.perf_counter()
        for start, end in ev:
            start.record()
            loss = step(images, labels)
            end.record()
        sync(device)
        wall = (time.perf_counter() - t0) * 1e3 / steps
        times = [s.elapsed_time(e) for s, e in ev]
    else:
        times = []
        t0 = time.perf_counter()
        for _ in range(steps):
            t = time.perf_counter()
            loss = step(images, labels)
            times.append((time.perf_counter() - t) * 1e3)
        wall = (time.perf_counter() - t0) * 1e3 / steps
    return times, wall, float(loss.detach().float().item())


def profile_steps(step, images, labels, steps: int, device: torch.device) -> dict:
    """GPU-busy milliseconds per step (kernels, memsets, copies; gaps left out), kernel
    launches per step and the 25 largest GPU activities [name, us per step, calls per step]:
    a step whose wall time is far above its GPU-busy time waits on the CPU that launches it."""
    sync(device)
    t0 = time.perf_counter()
    per = gpu_activities(lambda: step(images, labels), steps)
    wall = (time.perf_counter() - t0) * 1e3 / steps
    ranked = sorted(per.items(), key=lambda kv: -kv[1][0])
    return {"profile_steps": steps, "profile_wall_ms": round(wall, 3),
            "gpu_busy_ms": round(sum(us for us, _ in per.values()) / 1e3, 3),
            "gpu_launches_per_step": round(sum(n for _, n in per.values()), 1),
            "gpu_top": [[k[:100], round(us, 1), round(n, 1)] for k, (us, n) in ranked[:25]],
            # every activity, for side-by-side accounting of two methods
            "gpu_all": [[k[:160], round(us, 2), round(n, 2)] for k, (us, n) in ranked]}


def skip_reason(method: str, device: torch.device):
    if method == "eager_flashkat" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return ("skipped: FlashKAT_Group launches Triton kernels: needs CUDA (on the CPU, set TRITON_INTERPRET=1 "
                "before launching)")
    if method == "vit_inductor":
        try:
            import timm  # noqa: F401
        except Exception as e:  # noqa: BLE001
            return f"skipped: timm not installed ({type(e).__name__}: {e})"
    return None


def run_method(method: str, model_name: str, cfg, initial_kat: nn.Module, amp_dtype, args,
               device: torch.device) -> dict:
    """Build, compile, warm up, time; returns the measured columns."""
    from torch._dynamo.utils import counters

    compiled_backend = {"flashkat": "flashkat", "inductor_kat": "inductor", "vit_inductor": "inductor"}.get(method)
    if method in ("flashkat", "inductor_kat", "eager_kat"):
        model = copy.deepcopy(initial_kat)
        path = "triton_atomic" if device.type == "cuda" else "torch"
    elif method == "eager_flashkat":
        torch.manual_seed(args.seed)
        model = km.build_kat_vit(cfg, rational="flashkat", device=device.type)
        # the same weights as the KAT model; FlashKAT_Group's own coefficients (same init)
        model.load_state_dict(initial_kat.state_dict(), strict=False)
        path = "flashkat_triton"
    elif method == "vit_inductor":
        torch.manual_seed(args.seed)
        model = build_vit(model_name, cfg, by_name=not args.config_overrides)
        path = "gelu"
    else:
        raise ValueError(f"unknown method {method!r}")
    model = model.to(device).train()
    row = {"rational_path": path, "params": sum(p.numel() for p in model.parameters()),
           "rational_sites": rational_sites(model)}
    run = model
    if compiled_backend:
        torch._dynamo.reset()
        counters.clear()
        opts = json.loads(args.flashkat_options) if args.flashkat_options and compiled_backend == "flashkat" else None
        if opts:
            row["flashkat_options"] = opts
            run = torch.compile(model, backend=compiled_backend, options=opts)
        else:
            run = torch.compile(model, backend=compiled_backend, mode=args.compile_mode)
    step, opt = make_step(run, model.parameters(), amp_dtype, device, args.fused_adamw)

    g = torch.Generator().manual_seed(args.seed + 1)
    images = torch.randn(args.batch, cfg.in_chans, cfg.img_size, cfg.img_size, generator=g).to(device)
    labels = torch.randint(0, cfg.num_classes, (args.batch,), generator=g).to(device)

    from flashkat_inductor.recognisers import collect_reports

    sync(device)
    t0 = time.perf_counter()
    with collect_reports() as reports:
        step(images, labels)
        sync(device)
    row["first_step_s"] = round(time.perf_counter() - t0, 3)
    if compiled_backend:
        row["graph_breaks"] = int(sum(counters["graph_break"].values()))
    if method == "flashkat":
        row["flashkat_counters"] = dict(counters["flashkat"])
        misses = sorted({f"{nm.node}: {nm.reason}" for rep in reports for nm in rep.near_misses})
        if misses:
            row["left_alone"] = misses[:20]
        done = row["flashkat_counters"].get("rewrites", 0)
        if done < row["rational_sites"]:
            row["note"] = (f"only {done} of {row['rational_sites']} activation sites rewritten"
                           + (f"; left alone: {misses[0][:160]}" if misses else ""))
    for _ in range(args.warmup):
        step(images, labels)
    sync(device)
    if compiled_backend and args.compile_mode == "reduce-overhead":
        # graphs Inductor ran without CUDA graphs (a step then pays every launch on the CPU)
        row["cudagraph_skips"] = int(counters["inductor"]["cudagraph_skips"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        row["base_mb"] = round(torch.cuda.memory_allocated(device) / 2**20, 1)
    times, wall, loss = time_steps(step, images, labels, args.steps, device)
    row.update(warmup=args.warmup, steps=args.steps,
               step_ms_median=round(statistics.median(times), 3), step_ms_mean=round(statistics.mean(times), 3),
               step_ms_min=round(min(times), 3), step_ms_wall=round(wall, 3), loss=round(loss, 5))
    row["peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None
    if args.profile and device.type == "cuda":
        try:
            row.update(profile_steps(step, images, labels, args.profile, device))
        except Exception as e:  # noqa: BLE001 - the timing above stands without the profile
            row["profile_error"] = f"{type(e).__name__}: {e}"[:300]
    if args.memory_peak and device.type == "cuda":
        try:
            row["memory_peak"] = memory_at_peak(functools.partial(step, images, labels))
        except Exception as e:  # noqa: BLE001
            row["memory_peak_error"] = f"{type(e).__name__}: {e}"[:300]
    if method == "eager_flashkat" and device.type != "cuda":
        row["note"] = "Triton interpreter (TRITON_INTERPRET=1): a correctness run, its times mean nothing"
    if not math.isfinite(loss):
        row["note"] = "; ".join(filter(None, [row.get("note"), "non-finite loss"]))
    del step, opt, run, model, images, labels
    return row


# ----------------------------------------------------------------------------
# Summary, table, plot
# ----------------------------------------------------------------------------
def _ms(rows, model, dtype, method):
    for r in rows:
        if (r["model"], r["dtype"], r["method"]) == (model, dtype, method) and r.get("step_ms_median"):
            return r
    return None


def add_ratios(rows, model: str, dtype: str, cfg, batch: int) -> None:
    fk = _ms(rows, model, dtype, "flashkat")
    if fk is None:
        return
    for peer in ("vit_inductor", "inductor_kat", "eager_kat", "eager_flashkat"):
        p = _ms(rows, model, dtype, peer)
        fk[f"vs_{peer}"] = round(fk["step_ms_median"] / p["step_ms_median"], 3) if p else None
    fk["kat_extra_act_mb"] = round(kat_extra_act_mb(cfg, batch), 3)
    vit = _ms(rows, model, dtype, "vit_inductor")
    if vit and fk.get("gpu_busy_ms") and vit.get("gpu_busy_ms"):
        # --profile: GPU work per step, free of the CPU-side launch cost that can bound small steps
        fk["gpu_busy_vs_vit_inductor"] = round(fk["gpu_busy_ms"] / vit["gpu_busy_ms"], 3)
    if vit and fk.get("peak_mb") is not None and vit.get("peak_mb") is not None:
        fk["mem_target_ok"] = fk["peak_mb"] <= vit["peak_mb"] + fk["kat_extra_act_mb"]


def print_table(rows, models, dtypes) -> None:
    print("\nmodel  dtype     method          median ms   mean ms  first step s   peak MB  rewrites  note")
    for model in models:
        for dtype in dtypes:
            for r in rows:
                if (r["model"], r["dtype"]) != (model, dtype):
                    continue
                if "step_ms_median" in r:
                    rw = (f"{r['flashkat_counters'].get('rewrites', 0)}/{r['rational_sites']}"
                          if "flashkat_counters" in r else "")
                    peak = f"{r['peak_mb']:9.1f}" if r.get("peak_mb") is not None else f"{'-':>9}"
                    print(f"{model:6s} {dtype:9s} {r['method']:15s} {r['step_ms_median']:9.2f} {r['step_ms_mean']:9.2f} "
                          f"{r['first_step_s']:13.2f} {peak} {rw:>9}  {r.get('note', '')[:110]}")
                else:
                    print(f"{model:6s} {dtype:9s} {r['method']:15s} {'-':>9} {'-':>9} {'-':>13} {'-':>9} {'':>9}  "
                          f"{r.get('skipped') or 'ERROR ' + ' '.join(str(r.get('error')).split())[:110]}")
    print("\nratios, flashkat median / peer median (< 1: flashkat faster)")
    print("model  dtype     vs vit_inductor (target <= 1.10)  vs inductor_kat  vs eager_kat  vs eager_flashkat  "
          "memory target")
    for model in models:
        for dtype in dtypes:
            fk = _ms(rows, model, dtype, "flashkat")
            if fk is None:
                print(f"{model:6s} {dtype:9s} (no flashkat timing)")
                continue

            def f(k):
                return f"{fk[k]:.2f}" if fk.get(k) is not None else "-"

            vit = fk.get("vs_vit_inductor")
            verdict = "" if vit is None else (" OK" if vit <= TARGET_RATIO else " MISSED")
            ref = ISSUE_VIT_MS.get((model, dtype))
            vit_txt = f"{f('vs_vit_inductor')}{verdict}"
            if ref is not None:
                vit_txt += f" (issue ViT {ref} ms -> {fk['step_ms_median'] / ref:.2f})"
            mem = fk.get("mem_target_ok")
            mem_txt = "-" if mem is None else (
                f"{'OK' if mem else 'MISSED'}: {fk['peak_mb']:.0f} MB vs ViT "
                f"{_ms(rows, model, dtype, 'vit_inductor')['peak_mb']:.0f} + {fk['kat_extra_act_mb']:.0f} MB")
            print(f"{model:6s} {dtype:9s} {vit_txt:33s} {f('vs_inductor_kat'):>15s} {f('vs_eager_kat'):>12s} "
                  f"{f('vs_eager_flashkat'):>18s}  {mem_txt}")
            if fk.get("gpu_busy_vs_vit_inductor") is not None:
                g = fk["gpu_busy_vs_vit_inductor"]
                print(f"{'':16s} GPU-busy time vs vit_inductor (--profile): {g:.2f}"
                      f"{' OK' if g <= TARGET_RATIO else ' MISSED'} ({fk['gpu_busy_ms']:.2f} vs "
                      f"{_ms(rows, model, dtype, 'vit_inductor')['gpu_busy_ms']:.2f} ms/step)")


def plot(rows, png: str) -> None:
    """Grouped bars: median ms/step per method, one group per (model, dtype)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001
        print(f"--plot: matplotlib not importable ({type(e).__name__}: {e}); no chart written")
        return
    groups = list(dict.fromkeys((r["model"], r["dtype"]) for r in rows))
    methods = [m for m in METHODS if any(r["method"] == m and "step_ms_median" in r for r in rows)]
    if not methods:
        print("--plot: no timed rows; no chart written")
        return
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups) * len(methods) / 2), 4.5))
    every = [r["step_ms_median"] for r in rows if r.get("step_ms_median")]
    if every and max(every) > 20 * min(every):  # KAT's atomic kernels beside the rest: log scale
        ax.set_yscale("log")
    for i, m in enumerate(methods):
        xs, ys = [], []
        for j, (model, dtype) in enumerate(groups):
            r = _ms(rows, model, dtype, m)
            if r is not None:
                xs.append(j + (i - (len(methods) - 1) / 2) * width)
                ys.append(r["step_ms_median"])
        bars = ax.bar(xs, ys, width, label=m)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(groups)), [f"{m}\n{d}" for m, d in groups])
    ax.set_ylabel("ms / training step (median)")
    stamp = rows[0]
    mode = stamp.get("compile_mode") or "default"
    ax.set_title(f"training step, batch {stamp['batch']}, {stamp['img_size']}x{stamp['img_size']}, compile mode "
                 f"{mode}\n{stamp['device']}, torch {stamp.get('torch', '?')}, {stamp.get('date', '')}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    print("wrote", png)


# ----------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="kat_t,kat_s", help=f"comma list of {', '.join(MODELS)}")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="comma list: float32, bfloat16, float16 (autocast; float16 with a GradScaler)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma list of " + ", ".join(METHODS))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps after the first (compiling) step")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--config-overrides", default="", help="KATViTConfig fields, e.g. depth=2,embed_dim=64")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode= for the compiled methods")
    ap.add_argument("--flashkat-options", default="",
                    help='JSON dict of Inductor options for backend="flashkat" only (replaces --compile-mode there)')
    ap.add_argument("--fused-adamw", action="store_true", help="AdamW(fused=True) (default: foreach)")
    ap.add_argument("--keep-caches", action="store_true",
                    help="keep Inductor's FX-graph / AOTAutograd caches (a hit skips the rewrite counters)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", action="store_true", help="bar chart PNG beside the JSON (needs matplotlib)")
    ap.add_argument("--plot-only", nargs="+", default=None, metavar="JSON",
                    help="measure nothing: write the bar chart of each given results file beside it")
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="after timing, STEPS more steps under torch.profiler (CUDA): GPU-busy ms per step, "
                         "kernel launches per step and the largest kernels, in the row and on stdout")
    ap.add_argument("--memory-peak", action="store_true",
                    help="after timing, one more step with the CUDA allocator's history recorded: the "
                         "allocations live at its peak, with the generated code's lines (JSON memory_peak)")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/train_<device tag>_<date>.json)")
    args = ap.parse_args(argv)
    if args.plot_only:
        for path in args.plot_only:
            with open(path) as f:
                plot(json.load(f), os.path.splitext(path)[0] + ".png")
        return 0

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for what, given, known in (("model", models, MODELS), ("dtype", dtypes, DTYPES), ("method", methods, METHODS)):
        bad = [g for g in given if g not in known]
        if bad:
            ap.error(f"unknown {what}(s) {bad}; choose from {list(known)}")
    overrides = parse_overrides(args.config_overrides)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)

    import flashkat_inductor.backend  # noqa: F401 - registers "flashkat" where no entry point is installed

    if not args.keep_caches:
        import torch._functorch.config as fconfig
        import torch._inductor.config as iconfig

        iconfig.fx_graph_cache = False
        if hasattr(fconfig, "enable_autograd_cache"):
            fconfig.enable_autograd_cache = False

    date = datetime.date.today().isoformat()
    stamp = {"device": _device_name(device), "torch": torch.__version__, "triton": triton_version(), "date": date,
             "compile_mode": args.compile_mode or "default"}
    print(f"{stamp['device']}; torch {stamp['torch']}; triton {stamp['triton']}; batch {args.batch}, "
          f"{args.img_size}x{args.img_size}, {args.warmup} warm-up + {args.steps} timed steps", flush=True)
    rows = []
    for model_name in models:
        cfg = kat_config(model_name, args.img_size, overrides)
        torch.manual_seed(args.seed)
        build_error = None
        try:
            # KAT's switch: device="cuda" -> the Triton autograd.Function, else its PyTorch function
            initial_kat = km.build_kat_vit(cfg, rational="kat", device=device.type)
        except Exception as e:  # noqa: BLE001
            initial_kat, build_error = None, f"building the KAT model: {type(e).__name__}: {str(e)[:500]}"
            print(f"{model_name}: FAILED {build_error}", flush=True)
        for dtype in dtypes:
            for method in methods:
                row = dict(stamp, model=model_name, dtype=dtype, method=method, batch=args.batch,
                           img_size=cfg.img_size, config=repr(cfg))
                reason = skip_reason(method, device)
                if build_error:
                    row["error"] = build_error
                elif reason:
                    row["skipped"] = reason
                    print(f"{model_name} {dtype} {method}: {reason}", flush=True)
                else:
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    try:
                        row.update(run_method(method, model_name, cfg, initial_kat, DTYPES[dtype], args, device))
                        extra = (f", counters['flashkat'] {row['flashkat_counters']}"
                                 if method == "flashkat" else "")
                        if "cudagraph_skips" in row:
                            extra += f", graphs not captured {row['cudagraph_skips']}"
                        print(f"{model_name} {dtype} {method}: median {row['step_ms_median']:.2f} ms/step "
                              f"(first step {row['first_step_s']:.1f} s"
                              + (f", peak {row['peak_mb']:.0f} MB" if row.get("peak_mb") is not None else "")
                              + f"){extra}", flush=True)
                        if row.get("gpu_top"):
                            print(f"   profiled: wall {row['profile_wall_ms']:.2f} ms/step, GPU busy "
                                  f"{row['gpu_busy_ms']:.2f} ms/step, {row['gpu_launches_per_step']:.0f} GPU "
                                  "activities/step; largest (us/step, calls/step):", flush=True)
                            for k, us, n in row["gpu_top"]:
                                print(f"     {us:9.1f} {n:6.1f}  {k}", flush=True)
                    except Exception as e:  # noqa: BLE001 - one failing method must not stop the others
                        row["error"] = f"{type(e).__name__}: {str(e)[:500]}"
                        row["traceback_tail"] = traceback.format_exc()[-1500:]
                        print(f"{model_name} {dtype} {method}: FAILED {row['error'][:300]}", flush=True)
                rows.append(row)
                free(device)
            add_ratios(rows, model_name, dtype, cfg, args.batch)
        del initial_kat
        free(device)

    print_table(rows, models, dtypes)
    out = args.out or os.path.join(HERE, "results", f"train_{_device_tag(device)}_{date}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(rows, f, indent=1)
    print("wrote", out)
    if args.plot:
        plot(rows, os.path.splitext(out)[0] + ".png")
    return 0 if not any("error" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
