"""Plots and a README table from the JSON rows of bench/bench_rational.py.

    python bench/plot_results.py                                  # every bench/results/*rational*.json
    python bench/plot_results.py bench/results/h200_rational_2026-11-28.json
    python bench/plot_results.py ROWS.json --ours flashkat_compiled_pau --phase fwdbwd
    python bench/plot_results.py ROWS.json --outdir /tmp/plots --no-plots --table-out table.md
    python bench/plot_results.py --merge h200_rational_2026-11-29 A.json B.json   # two runs as one set
    python bench/plot_results.py ROWS.json --gpu-time        # GPU kernel time (gpu_*_ms) instead of do_bench
    python bench/plot_results.py ROWS.json --graphed --phase fwdbwd   # one CUDA graph per step (--graph-capture)

For each JSON file and each dtype in it, one PNG beside the file (or in --outdir),
named ``<stem>_<dtype>.png``, with one row per phase (forward, backward,
forward + backward) and two columns:

  left    effective GB/s of every method per shape (grouped bars, each labelled
          with its % of the copy ceiling), the copy ceiling of that shape and
          dtype drawn as a black line across its group (--log-gbps: log scale)
  right   speed-up of the project's method (--ours) over each peer per shape:
          peer ms / ours ms, log scale, > 1 means flashkat is faster

and, on stdout, a markdown table per file (one row per dtype x shape x method:
ms, GB/s, % of the copy ceiling and the speed-up of --ours over that row's
method, each for fwd / bwd / fwd+bwd, or for the one --phase) to paste into the
README.

The rows are those bench_rational.py writes (keys device, torch, triton, date,
dtype, shape "NxLxC", method, copy_gbps, {fwd,bwd,fwdbwd}_{ms,gbps}, err_*,
peak_mb).  Rows without *_gbps (e.g. bench_cpu.py's, whose shape is a list) get
them from the shape and dtype with the same byte counts: forward 2 elements,
backward 3, forward + backward 5.

Methods whose names start with "flashkat_" are the project's own, except
"flashkat_style_triton" (the FlashKAT paper's autograd.Function, a peer); every
other method is a peer.  The speed-ups are of --ours, by default
flashkat_compiled_op: what a KAT model's activation becomes under the backend
(KAT's Triton autograd.Function and its PyTorch reference are both rewritten into
the project's op).  matplotlib is not a dependency of the project: without it
only the table is printed.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from benchlib import effective_gbps  # noqa: E402

PHASES = ("fwd", "bwd", "fwdbwd")
PHASE_TITLE = {"fwd": "forward", "bwd": "backward", "fwdbwd": "forward + backward"}
ELEMENT_SIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
# methods named flashkat_* that are peers, not the project's
NOT_OURS = {"flashkat_style_triton"}
# the default --ours: the first of these present in the rows.  flashkat_compiled_op is what
# a KAT model's rational becomes under the backend (KAT's Triton Function and its PyTorch
# reference are both rewritten into the project's op)
OURS_PREFERENCE = ("flashkat_compiled_op", "flashkat_compiled_pau", "flashkat_ops_eager", "flashkat_pau")
ERR_KEYS = ("err_y", "err_dx", "err_dnum", "err_dden")


def is_project(method: str) -> bool:
    return method.startswith("flashkat_") and method not in NOT_OURS


def shape_str(shape) -> str:
    if isinstance(shape, (list, tuple)):
        return "x".join(str(int(v)) for v in shape)
    return str(shape)


def shape_numel(shape: str) -> int:
    n = 1
    for v in shape.split("x"):
        n *= int(v)
    return n


def _num(v):
    """A positive finite float, or None."""
    if v is None:
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


# ----------------------------------------------------------------------------
# Rows
# ----------------------------------------------------------------------------
def _gbps(row: dict, phase: str, ms: float):
    """GB/s of a row's phase from its shape and dtype (None when they are unknown)."""
    if row["dtype"] not in ELEMENT_SIZE:
        return None
    try:
        return effective_gbps(phase, shape_numel(row["shape"]) * ELEMENT_SIZE[row["dtype"]], ms)
    except ValueError:
        return None


def load_rows(path: str) -> list:
    with open(path) as f:
        rows = json.load(f)
    if isinstance(rows, dict):
        rows = rows.get("rows", [])
    if not isinstance(rows, list):
        return []
    out = []
    for r in rows:
        if not isinstance(r, dict) or not {"dtype", "shape", "method"} <= r.keys():
            continue
        r = dict(r)
        r["shape"] = shape_str(r["shape"])
        for p in PHASES:
            ms = _num(r.get(f"{p}_ms"))
            r[f"{p}_ms"] = ms
            gbps = _num(r.get(f"{p}_gbps"))
            if gbps is None and ms is not None:
                gbps = _gbps(r, p, ms)
            r[f"{p}_gbps"] = gbps if ms is not None else None
        r["copy_gbps"] = _num(r.get("copy_gbps"))
        out.append(r)
    return out


def gpu_time_rows(rows: list) -> list:
    """The rows that carry GPU kernel time (bench_rational's gpu_*_ms, torch.profiler), with it as
    their times: forward, forward + backward, and backward as their difference (GPU times add up;
    the CPU-side cost of a call, which the do_bench medians include when the GPU waits, is gone)."""
    out = []
    for r in rows:
        f, fb = _num(r.get("gpu_fwd_ms")), _num(r.get("gpu_fwdbwd_ms"))
        if f is None or fb is None:
            continue
        r = {k: v for k, v in r.items() if not k.startswith("gpu_")}
        times = {"fwd": f, "bwd": fb - f if fb > f else None, "fwdbwd": fb}
        for p in PHASES:
            r[f"{p}_ms"] = times[p]
            r[f"{p}_gbps"] = _gbps(r, p, times[p]) if times[p] is not None else None
        out.append(r)
    return out


def graphed_rows(rows: list) -> list:
    """The rows that carry bench_rational --graph-capture's times (forward + backward captured
    whole into one CUDA graph per step, timed by do_bench on its replay), with it as their
    forward + backward time; forward and backward alone are not captured (use --phase fwdbwd)."""
    out = []
    for r in rows:
        fb = _num(r.get("graphed_fwdbwd_ms"))
        if fb is None:
            continue
        r = {k: v for k, v in r.items() if not k.startswith("graphed_") and not k.startswith("gpu_")}
        for p in PHASES:
            r[f"{p}_ms"] = fb if p == "fwdbwd" else None
            r[f"{p}_gbps"] = _gbps(r, p, fb) if p == "fwdbwd" else None
        out.append(r)
    return out


def merge_duplicates(rows: list) -> list:
    """One row per (device, dtype, shape, method): medians over repeated rows (several runs
    concatenated into one file), in the order of first appearance."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r.get("device"), r["dtype"], r["shape"], r["method"]), []).append(r)
    out = []
    for rs in groups.values():
        m = dict(rs[0])
        if len(rs) > 1:
            for k in [f"{p}_{u}" for p in PHASES for u in ("ms", "gbps")] + ["copy_gbps"]:
                vals = [r[k] for r in rs if r.get(k) is not None]
                m[k] = statistics.median(vals) if vals else None
            for p in PHASES:  # GB/s of the median time, as bench_rational.py computes it
                if m[f"{p}_ms"] is not None:
                    m[f"{p}_gbps"] = _gbps(m, p, m[f"{p}_ms"]) or m[f"{p}_gbps"]
            m["runs"] = len(rs)
        out.append(m)
    return out


def ordered(values):
    seen = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def pick_ours(rows: list, wanted: str | None) -> str | None:
    present = ordered(r["method"] for r in rows)
    if wanted:
        if wanted not in present:
            print(f"note: --ours {wanted} has no rows here; speed-ups left blank", file=sys.stderr)
        return wanted
    for m in OURS_PREFERENCE:
        if m in present:
            return m
    project = [m for m in present if is_project(m)]
    return project[0] if project else None


def index(rows: list) -> dict:
    return {(r["dtype"], r["shape"], r["method"]): r for r in rows}


def speedup(idx: dict, dtype: str, shape: str, method: str, ours: str | None, phase: str):
    """method's ms / ours' ms: how many times faster ours is than method (None if unknown)."""
    if ours is None:
        return None
    a = idx.get((dtype, shape, method))
    b = idx.get((dtype, shape, ours))
    if a is None or b is None or a.get(f"{phase}_ms") is None or b.get(f"{phase}_ms") is None:
        return None
    return a[f"{phase}_ms"] / b[f"{phase}_ms"]


def pct(r: dict, phase: str):
    g, c = r.get(f"{phase}_gbps"), r.get("copy_gbps")
    return 100.0 * g / c if g is not None and c else None


# ----------------------------------------------------------------------------
# Markdown table
# ----------------------------------------------------------------------------
def _f(v, fmt: str, suffix: str = "") -> str:
    return "–" if v is None else format(v, fmt) + suffix


def _ms(v) -> str:
    if v is None:
        return "–"
    return format(v, ".3f") if v < 100 else format(v, ".1f")


def markdown_table(rows: list, ours: str | None, phase: str | None, errors: bool) -> str:
    idx = index(rows)
    phases = PHASES if phase is None else (phase,)
    stamps = ordered(tuple(r.get(k, "?") for k in ("device", "torch", "triton", "date")) for r in rows)
    lines = []
    for dev, tv, trv, date in stamps:
        lines.append(", ".join(v for v in (dev, f"torch {tv}", f"Triton {trv}", date) if v and "?" not in v) + ".  ")
    lab = " / ".join({"fwd": "fwd", "bwd": "bwd", "fwdbwd": "f+b"}[p] for p in phases)
    ours_lab = ours or "flashkat"
    head = ["shape", "dtype", "method", "copy GB/s", f"ms ({lab})", f"GB/s ({lab})", f"% of copy ({lab})",
            f"{ours_lab} speed-up ({lab})"]
    gpu = [p for p in ("fwd", "fwdbwd") if p in phases and any(_num(r.get(f"gpu_{p}_ms")) for r in rows)]
    if gpu:
        glab = " / ".join({"fwd": "fwd", "fwdbwd": "f+b"}[p] for p in gpu)
        head += [f"GPU ms ({glab})", f"GPU % of copy ({glab})"]
    if errors:
        head.append("max rel. err")
    lines.append(f"Speed-up: this row's ms / {ours_lab}'s ms (> 1: {ours_lab} is faster).  "
                 "% of copy: effective GB/s / a device copy of the same tensor (read + write)."
                 + ("  GPU ms: time the GPU spends in kernels per call (torch.profiler), without the CPU-side "
                    "cost of a call that the do_bench medians include when the GPU waits for the CPU." if gpu else ""))
    lines.append("")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("| " + " | ".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + " |")
    for dtype in ordered(r["dtype"] for r in rows):
        for shape in ordered(r["shape"] for r in rows if r["dtype"] == dtype):
            case = [r for r in rows if r["dtype"] == dtype and r["shape"] == shape]
            for r in case:
                m = r["method"]
                name = f"**{m}**" if m == ours else m
                ms = " / ".join(_ms(r[f"{p}_ms"]) for p in phases)
                gb = " / ".join(_f(r[f"{p}_gbps"], ".0f") for p in phases)
                pc = " / ".join(_f(pct(r, p), ".0f", "%") for p in phases)
                if m == ours:
                    sp = "(ours)"
                else:
                    sp = " / ".join(_f(speedup(idx, dtype, shape, m, ours, p), ".2f", "x") for p in phases)
                cells = [shape, dtype, name, _f(r.get("copy_gbps"), ".0f"), ms, gb, pc, sp]
                if gpu:
                    gms = [_num(r.get(f"gpu_{p}_ms")) for p in gpu]
                    cells.append(" / ".join(_ms(v) for v in gms))
                    gp = []
                    for p, v in zip(gpu, gms):
                        g = _gbps(r, p, v) if v else None
                        gp.append(100.0 * g / r["copy_gbps"] if g and r.get("copy_gbps") else None)
                    cells.append(" / ".join(_f(v, ".0f", "%") for v in gp))
                if errors:
                    errs = [float(r[k]) for k in ERR_KEYS if r.get(k) is not None]
                    cells.append(_f(max(errs) if errs else None, ".1e"))
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------
def plot_dtype(rows: list, dtype: str, ours: str | None, peers: list | None, path: str,
               log_gbps: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["dtype"] == dtype]
    idx = index(rows)
    shapes = ordered(r["shape"] for r in rows)
    methods = ordered(r["method"] for r in rows)
    # peers first, then the project's methods, ours last
    methods = ([m for m in methods if not is_project(m)] + [m for m in methods if is_project(m) and m != ours]
               + ([ours] if ours in methods else []))
    peer_list = [m for m in (peers or [m for m in methods if not is_project(m)]) if m in methods and m != ours]
    cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    color = {m: cmap(i % cmap.N) for i, m in enumerate(methods)}

    # the phases some row measured (graphed rows hold forward + backward only): no empty panels
    phases = [p for p in PHASES if any(r.get(f"{p}_gbps") is not None for r in rows)] or list(PHASES)
    fig, axes = plt.subplots(len(phases), 2, squeeze=False,
                             figsize=(max(14.0, 4 + 2 * (1.0 + 1.1 * len(shapes))), max(6.0, 14 * len(phases) / 3)))
    stamp = rows[0]
    parts = [stamp.get("device"), dtype, stamp.get("torch") and f"torch {stamp['torch']}",
             stamp.get("triton") and f"Triton {stamp['triton']}", stamp.get("date")]
    fig.suptitle(" - ".join(str(p_) for p_ in parts if p_), fontsize=13)
    xs = list(range(len(shapes)))
    group_w = 0.84

    for row, phase in enumerate(phases):
        # ---- GB/s against the copy ceiling ---------------------------------
        ax = axes[row][0]
        w = group_w / max(1, len(methods))
        for i, m in enumerate(methods):
            rs = [idx.get((dtype, s, m)) or {} for s in shapes]
            vals = [r.get(f"{phase}_gbps") for r in rs]
            pos = [x - group_w / 2 + (i + 0.5) * w for x in xs]
            ax.bar(pos, [v if v is not None else 0 for v in vals], w, color=color[m], label=m,
                   edgecolor="black" if m == ours else "none", linewidth=1.2 if m == ours else 0,
                   hatch="//" if is_project(m) else None)
            for p_, r, v in zip(pos, rs, vals):
                share = pct(r, phase) if r else None
                if v is not None and share is not None:
                    ax.annotate(f"{share:.0f}%", (p_, v), ha="center", va="bottom", fontsize=5.5, rotation=90,
                                xytext=(0, 2), textcoords="offset points")
        for j, s in enumerate(shapes):
            ceil = [r["copy_gbps"] for r in rows if r["shape"] == s and r.get("copy_gbps")]
            if ceil:
                ax.hlines(ceil[0], xs[j] - group_w / 2, xs[j] + group_w / 2, colors="black", linewidth=2,
                          label="copy ceiling" if j == 0 else None)
        if log_gbps:
            ax.set_yscale("log")
        else:
            ax.set_ylim(0, ax.get_ylim()[1] * 1.12)  # room for the % labels
        ax.set_title(f"{PHASE_TITLE[phase]}: effective GB/s (label: % of the copy ceiling)", fontsize=10)
        ax.set_xticks(xs)
        ax.set_xticklabels(shapes, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("GB/s")
        ax.grid(axis="y", alpha=0.3)

        # ---- speed-up of ours over each peer -------------------------------
        ax = axes[row][1]
        w = group_w / max(1, len(peer_list))
        drawn = []
        for i, m in enumerate(peer_list):
            vals = [speedup(idx, dtype, s, m, ours, phase) for s in shapes]
            pos = [x - group_w / 2 + (i + 0.5) * w for x in xs]
            keep = [(p_, v) for p_, v in zip(pos, vals) if v is not None]
            if not keep:
                continue
            ax.bar([p_ for p_, _ in keep], [v for _, v in keep], w, color=color[m], label=f"vs {m}")
            for p_, v in keep:
                ax.annotate(f"{v:.2g}x", (p_, v), ha="center", va="bottom", fontsize=5.5, rotation=90,
                            xytext=(0, 2), textcoords="offset points")
            drawn.extend(v for _, v in keep)
        ax.axhline(1.0, color="black", linewidth=1)
        if drawn:
            ax.set_yscale("log")
            lo, hi = min(drawn + [1.0]), max(drawn + [1.0])
            ax.set_ylim(lo / 1.5, hi * 3)
        else:
            ax.text(0.5, 0.5, f"no rows of {ours}" if ours else "no project method in the rows",
                    ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{PHASE_TITLE[phase]}: speed-up of {ours} (peer ms / its ms)", fontsize=10)
        ax.set_xticks(xs)
        ax.set_xticklabels(shapes, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("x (> 1: flashkat faster)")
        ax.grid(axis="y", alpha=0.3, which="both")

    fig.tight_layout(rect=(0, 0, 1, 0.9), h_pad=2)
    for col in (0, 1):
        h, lab = axes[0][col].get_legend_handles_labels()
        if lab:
            box = axes[0][col].get_position()
            fig.legend(h, lab, loc="lower left", bbox_to_anchor=(box.x0, box.y1 + 0.025), ncol=3, fontsize=8,
                       frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="*", help="row files (default: bench/results/*rational*.json)")
    ap.add_argument("--ours", default=None,
                    help="the project method the speed-ups are of (default: the first present of "
                    + ", ".join(OURS_PREFERENCE) + ")")
    ap.add_argument("--peers", default=None,
                    help="comma list of peers in the speed-up plots (default: all non-project methods)")
    ap.add_argument("--phase", choices=PHASES, default=None,
                    help="table columns for this phase only (default: all three)")
    ap.add_argument("--dtypes", default=None, help="comma list (default: every dtype in the rows)")
    ap.add_argument("--errors", action="store_true", help="add the largest relative error of each row to the table")
    ap.add_argument("--outdir", default=None, help="where the PNGs go (default: beside each JSON)")
    ap.add_argument("--no-plots", action="store_true", help="the table only")
    ap.add_argument("--merge", default=None, metavar="NAME",
                    help="treat the rows of all files as one set named NAME (PNGs NAME_<dtype>.png beside the "
                    "first file)")
    ap.add_argument("--table-out", default=None, help="also write the markdown table(s) to this file")
    ap.add_argument("--log-gbps", action="store_true", help="log scale for GB/s (small shapes stay visible)")
    ap.add_argument("--graphed", action="store_true",
                    help="use the rows' graphed_fwdbwd_ms (bench_rational --graph-capture: one CUDA graph "
                         "per forward + backward step) as their forward + backward time; with --phase fwdbwd")
    ap.add_argument("--gpu-time", action="store_true",
                    help="use the rows' GPU kernel time (gpu_*_ms) instead of the do_bench medians; backward = "
                    "f+b - forward; names get a _gpu suffix")
    args = ap.parse_args(argv)

    paths = args.json or sorted(glob.glob(os.path.join(HERE, "results", "*rational*.json")))
    if not paths:
        print("no row files given and none found under bench/results/ (*rational*.json)", file=sys.stderr)
        return 1
    have_mpl = not args.no_plots
    if have_mpl:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            have_mpl = False
            print("matplotlib is not installed: no plots, the markdown table only "
                  "(pip install matplotlib for the PNGs)", file=sys.stderr)
    status = 0
    # datasets: (name for the PNGs and the heading, rows, folder of its first file)
    datasets = []
    loaded = []
    for path in paths:
        try:
            loaded.append((path, load_rows(path)))
        except (OSError, ValueError) as e:
            print(f"{path}: cannot read rows ({type(e).__name__}: {e})", file=sys.stderr)
            status = 1
    if args.merge and loaded:
        datasets.append((args.merge, [r for _, rows in loaded for r in rows],
                         os.path.dirname(os.path.abspath(loaded[0][0]))))
    else:
        for path, rows in loaded:
            datasets.append((os.path.splitext(os.path.basename(path))[0], rows, os.path.dirname(os.path.abspath(path))))
    tables = []
    for name, rows, folder in datasets:
        rows = merge_duplicates(rows)
        if args.gpu_time:
            name, rows = f"{name}_gpu", gpu_time_rows(rows)
        elif args.graphed:
            name, rows = f"{name}_graphed", graphed_rows(rows)
        if args.dtypes:
            keep = args.dtypes.split(",")
            rows = [r for r in rows if r["dtype"] in keep]
        if not rows:
            print(f"{name}: no rows", file=sys.stderr)
            status = 1
            continue
        ours = pick_ours(rows, args.ours)
        table = f"### {name}\n\n" + markdown_table(rows, ours, args.phase, args.errors) + "\n"
        print(table)
        tables.append(table)
        if have_mpl:
            outdir = args.outdir or folder
            os.makedirs(outdir, exist_ok=True)
            peers = args.peers.split(",") if args.peers else None
            for dtype in ordered(r["dtype"] for r in rows):
                png = os.path.join(outdir, f"{name}_{dtype}.png")
                plot_dtype(rows, dtype, ours, peers, png, args.log_gbps)
                print(f"wrote {png}", file=sys.stderr)
    if args.table_out and tables:
        with open(args.table_out, "w") as f:
            f.write("\n".join(tables))
        print(f"wrote {args.table_out}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
