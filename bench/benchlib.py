"""What the bench scripts share: the machine's name for the rows' stamps, GPU time from the
profiler and the hand-written safe PAU they compare against (scripts run as
``python bench/x.py`` have bench/ on sys.path, so ``from benchlib import ...`` works)."""
from __future__ import annotations

import platform
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import torch


def device_name(device: Optional[torch.device] = None) -> str:
    """The GPU's name for a CUDA device, else the CPU's model name from /proc/cpuinfo."""
    import torch  # here, not at import: plot_results.py uses this module without torch

    if device is not None and torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


# Tensor-sized reads + writes each phase must do: forward reads x, writes y; backward reads x and dy,
# writes dx; the coefficients are negligible.
PHASE_ELEMENTS = {"fwd": 2, "bwd": 3, "fwdbwd": 5}


def effective_gbps(phase: str, tensor_bytes: int, ms: float) -> float:
    """GB/s of a phase from the bytes it must move (``tensor_bytes``: one x) and its time."""
    return PHASE_ELEMENTS[phase] * tensor_bytes / ms / 1e6


def gpu_activities(run, calls: int) -> dict:
    """``{name: (device microseconds per call, launches per call)}`` of the GPU activities (kernels,
    memsets, copies) of ``calls`` calls of ``run()`` under torch.profiler; the gaps between them,
    where the GPU waits for the CPU, are left out."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            run()
        torch.cuda.synchronize()
    per = {}
    for e in prof.key_averages():
        t = getattr(e, "self_device_time_total", None)
        if t is None:
            t = getattr(e, "self_cuda_time_total", 0.0)
        if t > 0:
            us, n = per.get(e.key, (0.0, 0.0))
            per[e.key] = (us + t / calls, n + e.count / calls)
    return per


def _frame_text(frames, depth: int = 3) -> str:
    """The innermost ``depth`` Python frames of an allocation, each ``file:line function``, with the
    source line where it is Inductor's generated code (which names the buffer and its shape)."""
    import linecache
    import os

    out = []
    for fr in frames[:depth]:
        fn, line = fr.get("filename", "?"), fr.get("line", 0)
        text = f"{os.path.basename(fn)}:{line} {fr.get('name', '?')}"
        if "torchinductor" in fn:  # generated code: its line, and whether it is a backward graph
            bwd = any("tangents_" in ln for ln in linecache.getlines(fn))
            text += (" (bwd)" if bwd else "") + " | " + linecache.getline(fn, line).strip()[:110]
        out.append(text)
    return " <- ".join(out)


def memory_at_peak(run, top: int = 30) -> dict:
    """What is allocated when one call of ``run()`` reaches its peak (CUDA caching allocator, Python
    stacks recorded): the bytes live before the call, the peak (checked against
    max_memory_allocated), what of the bytes live before was freed by then, and the largest
    allocations made during the call and still live at the peak, each with its frames (for
    compiled code, the generated wrapper's line: the buffer and its shape)."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    torch.cuda.memory._record_memory_history(enabled="all", context="alloc", stacks="python", clear_history=True,
                                             max_entries=1_000_000)
    try:
        run()
        torch.cuda.synchronize()
        snap = torch.cuda.memory._snapshot()
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    dev = torch.cuda.current_device()
    trace = snap["device_traces"][dev] if len(snap["device_traces"]) > dev else []
    # the running total counts every allocation of the call and every free, also of blocks that
    # were live before it (the last step's gradients, freed by zero_grad): base + the running
    # total is torch.cuda.memory_allocated along the call
    live: dict = {}
    cur = peak = 0
    peak_at = None
    for i, ev in enumerate(trace):
        act = ev.get("action")
        if act == "alloc":
            live[ev["addr"]] = ev["size"]
            cur += ev["size"]
            if cur > peak:
                peak, peak_at = cur, i
        elif act == "free_requested":
            cur -= live.pop(ev["addr"], ev.get("size", 0))
    # replay up to the peak to list what was allocated during the call and live there
    live = {}
    freed_before = 0
    for ev in trace[: (peak_at or -1) + 1]:
        if ev.get("action") == "alloc":
            live[ev["addr"]] = (ev["size"], ev.get("frames", []))
        elif ev.get("action") == "free_requested":
            if ev["addr"] in live:
                live.pop(ev["addr"])
            else:
                freed_before += ev.get("size", 0)
    peak_live = sorted(live.values(), key=lambda t: -t[0])
    sizes: dict = {}
    for size, _ in peak_live:
        key = f"{size / 2**20:.1f}"
        sizes[key] = sizes.get(key, 0) + 1
    # every allocation of 1 MiB or more live at the peak, grouped by size and by the frames past the
    # generated code (the model's source line that made it): [MiB, count, frames]
    groups: dict = {}
    for size, frames in peak_live:
        if size >= 2**20:
            key = (round(size / 2**20, 2), _frame_text([f for f in frames if "torchinductor" not in f.get("filename", "")], 3))
            groups[key] = groups.get(key, 0) + 1
    return {"base_mb": round(base / 2**20, 1), "peak_mb": round((base + peak) / 2**20, 1),
            "live_at_peak_groups": sorted([[mb, n, fr] for (mb, fr), n in groups.items()], key=lambda t: (-t[0], t[2])),
            "peak_above_base_mb": round(peak / 2**20, 1),
            "max_memory_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            "base_freed_before_peak_mb": round(freed_before / 2**20, 1),
            "events": len(trace), "peak_event": peak_at,
            "peak_by": _frame_text(trace[peak_at].get("frames", []), 4) if peak_at is not None else None,
            "live_at_peak_mb": round(sum(s for s, _ in peak_live) / 2**20, 1),
            "live_at_peak_sizes": dict(sorted(sizes.items(), key=lambda kv: -float(kv[0]))),
            "live_at_peak_top": [[round(s / 2**20, 2), _frame_text(f)] for s, f in peak_live[:top]]}


def triton_version() -> str:
    """Triton's version, or "none" where it is not installed."""
    try:
        import triton

        return triton.__version__
    except Exception:  # noqa: BLE001 - any import failure means no usable Triton
        return "none"


def safe_pau(x, a, b):
    """A hand-written safe PAU as users write it: y = P(x) / (1 + sum_j |b_j| |x|^(j+1)),
    Horner on a (..., G, D) view, coefficient columns broadcast as (G, 1); ``a`` may be a
    shared (1, m) row, ``b`` has one row per group."""
    G = b.shape[0]
    xv = x.view(*x.shape[:-1], G, x.shape[-1] // G)
    a = a.to(x.dtype).expand(G, -1)
    b = b.to(x.dtype).abs()
    p = a[:, -1:]
    for i in reversed(range(a.shape[1] - 1)):
        p = p * xv + a[:, i : i + 1]
    t = xv.abs()
    s = b[:, -1:]
    for j in reversed(range(b.shape[1] - 1)):
        s = s * t + b[:, j : j + 1]
    return (p / (1 + s * t)).view(x.shape)
