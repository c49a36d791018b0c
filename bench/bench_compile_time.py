"""Compile time of a KAT-T training step: backend="flashkat" against backend="inductor".

    python bench/bench_compile_time.py [--repeats 3] [--batch 2] [--img 64] [--rational kat_torch]

Each measurement is a fresh Python process with its own empty
TORCHINDUCTOR_CACHE_DIR and TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 (no FX-graph,
AOTAutograd or autotuning cache; C++ / Triton kernels are compiled too), the two
backends alternating, ``--repeats`` processes each.  A process builds KAT-T
(tests/kat_modules.py KAT_TINY: 12 blocks, 192 channels, 24 rational sites;
``--img`` x ``--img`` images, 16 x 16 patches) with KAT's pure-PyTorch rational
(``rational="kat_torch"``, the code the recognisers rewrite), compiles it, and
times one training step (forward, cross-entropy, backward, SGD step).

Columns of the JSON rows (bench/results/compile_time_<date>.json):

  device, torch, triton          where it ran
  backend                        "flashkat" | "inductor"
  first_step_s                   wall time of the first training step: Dynamo,
                                 AOTAutograd, the graph passes (flashkat's pattern
                                 tracing and rewrites), Inductor codegen and kernel
                                 compilation, plus one step (median over processes)
  warm_step_s                    the fastest of 5 later steps (median over processes), for scale
                                 (a 2-core box shared with other work makes single steps noisy)
  compile_s                      first_step_s - warm_step_s
  runs                           compile_s of every process
  flashkat_rewrites              counters["flashkat"]["rewrites"] (flashkat only)
  pattern_tracing_s              seconds spent tracing patterns (flashkat only;
                                 part of compile_s)
  ratio                          median compile_s of flashkat / of inductor (the
                                 goal is <= 1.3)
  load_avg                       1-minute load average before and after the runs (other
                                 work on the machine slows both backends alike, runs alternate)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

from benchlib import device_name, triton_version as benchlib_triton_version  # noqa: E402


def _child(args) -> None:
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import torch
    import torch.nn.functional as F
    from torch._dynamo.utils import counters

    import flashkat_inductor.backend  # noqa: F401 - registers the backend where no entry point is installed
    from kat_modules import KAT_TINY, build_kat_vit

    torch.manual_seed(0)
    cfg = KAT_TINY.replace(img_size=args.img)
    model = build_kat_vit(cfg, rational=args.rational, device="cpu")
    images = torch.randn(args.batch, 3, args.img, args.img)
    labels = torch.randint(0, cfg.num_classes, (args.batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    compiled = torch.compile(model, backend=args.backend)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(compiled(images), labels).backward()
        opt.step()

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    warm = []
    for _ in range(5):
        t0 = time.perf_counter()
        step()
        warm.append(time.perf_counter() - t0)
    out = {"first_step_s": first, "warm_step_s": min(warm),
           "graphs": counters["stats"]["unique_graphs"]}
    if args.backend == "flashkat":
        from flashkat_inductor.recognisers import registration_stats

        out["flashkat_rewrites"] = counters["flashkat"]["rewrites"]
        out["pattern_tracing_s"] = registration_stats()["seconds"]
    print("RESULT" + json.dumps(out))


def _run(backend: str, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="fk_compile_time_") as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, TORCHINDUCTOR_FORCE_DISABLE_CACHES="1",
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--backend", backend, "--batch", str(args.batch),
               "--img", str(args.img), "--rational", args.rational]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{backend} run failed:\n{out.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT"):])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="flashkat", help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per backend")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--img", type=int, default=64)
    ap.add_argument("--rational", default="kat_torch")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/compile_time_<date>.json); '-': none")
    args = ap.parse_args(argv)
    if args.child:
        _child(args)
        return 0

    import torch

    triton_version = benchlib_triton_version()
    load0 = os.getloadavg()[0]
    runs: dict = {"flashkat": [], "inductor": []}
    for rep in range(args.repeats):
        for backend in ("inductor", "flashkat") if rep % 2 == 0 else ("flashkat", "inductor"):
            r = _run(backend, args)
            runs[backend].append(r)
            print(f"run {rep + 1}/{args.repeats} {backend:>8}: first step {r['first_step_s']:.1f} s, "
                  f"warm step {r['warm_step_s'] * 1e3:.0f} ms"
                  + (f", {r['flashkat_rewrites']} rewrites, pattern tracing {r['pattern_tracing_s']:.2f} s"
                     if backend == "flashkat" else ""), flush=True)
    device = f"{device_name()}, {os.cpu_count()} CPUs" if not torch.cuda.is_available() else torch.cuda.get_device_name()
    rows = []
    med = {}
    for backend, rs in runs.items():
        comp = [r["first_step_s"] - r["warm_step_s"] for r in rs]
        med[backend] = statistics.median(comp)
        row = {"device": device, "torch": torch.__version__, "triton": triton_version, "backend": backend,
               "model": f"KAT-T (KAT_TINY), {args.batch} x 3 x {args.img} x {args.img}, rational={args.rational}",
               "first_step_s": round(statistics.median(r["first_step_s"] for r in rs), 3),
               "warm_step_s": round(statistics.median(r["warm_step_s"] for r in rs), 4),
               "compile_s": round(med[backend], 3), "runs": [round(c, 3) for c in comp],
               "graphs": rs[0]["graphs"]}
        if backend == "flashkat":
            row["flashkat_rewrites"] = rs[0]["flashkat_rewrites"]
            row["pattern_tracing_s"] = round(statistics.median(r["pattern_tracing_s"] for r in rs), 3)
        rows.append(row)
    ratio = med["flashkat"] / med["inductor"]
    load = [round(load0, 2), round(os.getloadavg()[0], 2)]
    for row in rows:
        row["ratio"] = round(ratio, 3)
        row["load_avg"] = load
    print(f"\n{device}; torch {torch.__version__}; triton {triton_version}; load average {load}")
    print(f"compile time of a KAT-T training step: flashkat {med['flashkat']:.1f} s, inductor "
          f"{med['inductor']:.1f} s: ratio {ratio:.2f} (goal <= 1.3)")
    if args.out != "-":
        out = args.out or os.path.join(HERE, "results", f"compile_time_{datetime.date.today()}.json")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
