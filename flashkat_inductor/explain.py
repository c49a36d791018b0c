"""``explain``: which rational activations the flashkat backend found, and why not the others.

    >>> from flashkat_inductor.explain import explain
    >>> rows = explain(model, images)          # compiles, runs forward (+ backward), prints a table
    >>> [r.pattern for r in rows.rewritten]
    ['kat_reference_signed', 'kat_reference_signed', ...]

Every row is a :class:`SiteRow`: a site that was rewritten (pattern, form,
sign convention at 0, groups, ``(m, n)``, training or inference graph, and the
kernels it became in the generated code), or a division that looked like
``P / Q`` and was left alone, with the reason when it is known (an
intermediate used elsewhere, coefficients that are not group columns, a
denominator that is none of the supported forms, a code shape no pattern
covers).

KAT's and FlashKAT's Triton ``autograd.Function``s appear as pattern
``kat_function_safe`` (``flashkat_inductor.kat_functions``), with the kernels
they launched (``source``) and, when left alone, the check that failed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from typing import Optional

import torch

__all__ = ["explain", "SiteRow", "Explanation"]


@dataclasses.dataclass
class SiteRow:
    """One rational site (rewritten) or near miss (left alone)."""

    status: str  # "rewritten" | "left alone"
    pattern: str  # counter name, e.g. "horner_safe" ("-" when the family or form is unknown)
    form: Optional[str]  # "safe" | "signed" | "abs_sum" | None
    zero_sign: Optional[str]  # "torch" for every rewrite of PyTorch code; None for near misses
    groups: Optional[int]
    m: int
    n: int
    graph: str  # "training", "inference", "training (forward graph)", ...
    kernels: list = dataclasses.field(default_factory=list)  # generated kernels / extern calls
    reason: str = ""  # near misses: why the site was left alone
    node: str = ""  # the graph node (rewrites: of x; near misses: the division; Functions: the
    # autograd_function_apply node)
    source: str = ""  # rewritten autograd.Functions: the Triton kernels they launched


class Explanation(list):
    """A list of :class:`SiteRow`, with the compile's totals."""

    compile_s: float = 0.0
    registration_s: float = 0.0
    patterns_traced: int = 0

    @property
    def rewritten(self) -> list:
        return [r for r in self if r.status == "rewritten"]

    @property
    def near_misses(self) -> list:
        return [r for r in self if r.status != "rewritten"]

    def table(self) -> str:
        head = ("status", "pattern", "form", "0-sign", "G", "(m,n)", "graph", "kernels / reason")
        lines = []
        for r in self:
            last = ", ".join(r.kernels) if r.status == "rewritten" else r.reason
            if r.status == "rewritten" and r.source:
                last = f"{r.source} -> {last}"
            lines.append((r.status, r.pattern, r.form or "?", r.zero_sign or "-",
                          "?" if r.groups is None else str(r.groups), f"({r.m},{r.n})", r.graph, last))
        widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
        widths[-1] = len(head[-1])
        fmt = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
        out = [fmt(head), fmt(["-" * w for w in widths])]
        out += [fmt(l) for l in lines]
        out.append(f"{len(self.rewritten)} rewritten, {len(self.near_misses)} left alone; compile "
                   f"{self.compile_s:.1f} s, of which tracing patterns {self.registration_s:.2f} s "
                   f"({self.patterns_traced} patterns)")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()


# ----------------------------------------------------------------------------
# Kernels in the generated code
# ----------------------------------------------------------------------------
_KERNEL_DEF = re.compile(r"^(\w+) = async_compile\.\w+\(", re.M)
_META = re.compile(r"Original ATen: \[([^\]]*)\]")


def _rational_kernels(codes) -> dict:
    """{"fwd": [...], "bwd": [...]}: kernels computing the ops, and extern calls of them."""
    found = {"fwd": [], "bwd": []}
    for code in codes:
        lines = code.splitlines()
        for i, line in enumerate(lines):
            m = _KERNEL_DEF.match(line)
            if not m:
                continue
            name = m.group(1)
            meta = " ".join(lines[max(0, i - 6): i])
            aten = _META.findall(meta)
            for which in ("fwd", "bwd"):
                if f"rational_{which}" in name or any(f"flashkat.rational_{which}" in a for a in aten):
                    if name not in found[which]:
                        found[which].append(name)
        for which in ("fwd", "bwd"):
            if f"torch.ops.flashkat.rational_{which}" in code:
                tag = f"extern flashkat.rational_{which}"
                if tag not in found[which]:
                    found[which].append(tag)
    return found


# ----------------------------------------------------------------------------
# explain()
# ----------------------------------------------------------------------------
@contextlib.contextmanager
def _no_compile_caches():
    """A cache hit skips the passes, and explain needs them to run."""
    import torch._functorch.config as fconfig
    from torch._inductor import config as iconfig

    patches = {}
    if hasattr(fconfig, "enable_autograd_cache"):
        patches["enable_autograd_cache"] = False
    with iconfig.patch(fx_graph_cache=False), fconfig.patch(**patches):
        yield


def _outputs_requiring_grad(out) -> list:
    leaves = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    return [t for t in leaves if t.requires_grad and t.is_floating_point()]


def explain(fn_or_module, *example_inputs, backward: Optional[bool] = None, options: Optional[dict] = None,
            print_table: bool = True) -> Explanation:
    """Compile ``fn_or_module`` with the flashkat backend, run it once on
    ``example_inputs`` (and its backward when an output requires grad, unless
    ``backward=False``), and return every rational site found.

    The parameters' and inputs' ``.grad`` are restored afterwards.  Compile
    caches are bypassed for this one compile, so the passes always run."""
    from torch._inductor.utils import run_and_get_code

    from .backend import flashkat_backend
    from .capture_shim import mark_flashkat_backend
    from .recognisers import collect_reports, registration_stats

    def backend(gm, inputs):  # a fresh backend object: never served from Dynamo's cache of another compile
        return flashkat_backend(gm, inputs, **({"options": options} if options else {}))

    mark_flashkat_backend(backend)  # torch 2.11's capture shim acts for flashkat compiles only

    compiled = torch.compile(fn_or_module, backend=backend)
    tensors = [t for t in example_inputs if isinstance(t, torch.Tensor)]
    params = list(fn_or_module.parameters()) if isinstance(fn_or_module, torch.nn.Module) else []
    saved = [(t, t.grad) for t in tensors + params]

    def run():
        out = compiled(*example_inputs)
        need = _outputs_requiring_grad(out)
        if need and backward is not False:
            torch.autograd.backward(need, [torch.ones_like(t) for t in need])
        return out

    reg0 = registration_stats()
    t0 = time.perf_counter()
    try:
        with collect_reports() as reports, _no_compile_caches():
            _, codes = run_and_get_code(run)
    finally:
        for t, g in saved:
            t.grad = g
    result = Explanation()
    result.compile_s = time.perf_counter() - t0
    reg1 = registration_stats()
    result.registration_s = reg1["seconds"] - reg0["seconds"]
    result.patterns_traced = reg1["patterns"] - reg0["patterns"]

    kernels = _rational_kernels(codes)
    joint_misses: set = set()
    for rep in reports:
        if rep.stage == "joint":
            joint_misses = set()
        for w in rep.rewrites:
            ks = []
            if any("rational_fwd" in n for n in w.node_names) or not w.node_names:
                ks += kernels["fwd"]
            if any("rational_bwd" in n for n in w.node_names):
                ks += kernels["bwd"]
            result.append(SiteRow("rewritten", w.pattern, w.form, w.zero_sign, w.groups, w.m, w.n, w.graph,
                                  ks, "", w.x_node, getattr(w, "source", "")))
        for nm in rep.near_misses:
            if rep.stage == "joint":
                joint_misses.add(nm.node)
            elif nm.node in joint_misses:
                continue  # the same division, seen again by the post-grad pass of the same compile
            pattern = f"{nm.family}_{nm.form}" if nm.family and nm.form else "-"
            result.append(SiteRow("left alone", pattern, nm.form, None, None, nm.m, nm.n, nm.graph, [],
                                  nm.reason, nm.node))
    if print_table:
        print(result.table())
    return result
