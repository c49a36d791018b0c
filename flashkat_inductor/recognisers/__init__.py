"""Recognisers: find group-rational activations in captured graphs and rewrite
them to ``flashkat::rational_fwd`` (whose autograd is ``flashkat::rational_bwd``).

Families (one module each):

=================  ===========================================  ======================
family             code shape                                   forms
=================  ===========================================  ======================
``kat_reference``  KAT's pure-PyTorch function (stacked powers,  signed
                   bmm, cat/abs, div), 3-D ``(B, L, C)``
``horner``         Horner on a grouped view, ``(G, 1)`` columns  safe, signed, abs_sum
``powers``         explicit powers ``x ** i`` / ``torch.pow``    safe, signed, abs_sum
=================  ===========================================  ======================

Every rewrite keeps the form the code computes and autograd's ``sign(0) = 0``
(``zero_sign="torch"``).  Patterns are traced with ``joint_fwd_bwd`` for the
joint (training) graph, one trace per combination of which inputs require
grad, and with ``fwd_only`` for sites where nothing requires grad and for
post-grad (inference) graphs.

How lazily: nothing is traced at import.  For each graph, :func:`scan.find_sites`
describes every division that looks like ``P / Q`` (family, form, ``(m, n)``,
layouts, grads), and only the pattern keys those descriptions name are traced,
once per process (``_PASSES``).  Only the passes of this graph's keys are
applied, so what a graph becomes does not depend on what was compiled before
(the FX-graph cache key stays complete).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Optional

import torch
from torch._dynamo.utils import counters
from torch._inductor.pattern_matcher import PatternMatcherPass, stable_topological_sort
from torch.fx import Graph, Node

from . import _pm, kat_reference, pointwise
from .base import COUNTER, Rewrite, collect_rewrites, graph_context, refresh_fake_values
from .canon import (canonicalize_commutative, cse_inplace, joint_forward_nodes, joint_requires_grad,
                    undo_canonicalize)
from .scan import SiteHint, find_sites

__all__ = ["rewrite_graph", "GraphReport", "NearMiss", "Rewrite", "collect_rewrites", "collect_reports",
           "registration_stats", "COUNTER"]

_FAMILY_MODULES = (kat_reference, pointwise)
_REGISTER = {"kat_reference": kat_reference.register_key, "horner": pointwise.register_key,
             "powers": pointwise.register_key}
_PASSES: dict = {}  # PatternKey -> PatternMatcherPass (None: could not be registered)
_LAST_ERRORS: dict = {}  # PatternKey -> repr of the exception its tracing raised
log = logging.getLogger(__name__)


@dataclasses.dataclass
class NearMiss:
    """A division that looked like a rational and was left alone."""

    family: Optional[str]
    form: Optional[str]
    m: int
    n: int
    graph: str
    node: str
    reason: str


@dataclasses.dataclass
class GraphReport:
    graph: str  # "training", "inference", "training (forward graph)", "backward", ...
    rewrites: list  # Rewrite records
    near_misses: list  # NearMiss records
    keys: list  # the pattern keys this graph asked for
    registration_s: float  # seconds spent tracing patterns for this graph
    stage: str = ""  # "joint" (joint_custom_pre_pass) or "post" (post_grad_custom_pre_pass)


_REPORT_SINK: dict = {"list": None}


def registration_stats() -> dict:
    """Patterns traced so far in this process and the seconds it took."""
    return {"patterns": _pm.REGISTRATION.patterns, "seconds": _pm.REGISTRATION.seconds,
            "keys": [k for k, v in _PASSES.items() if v is not None]}


def _ensure(keys) -> float:
    spent = 0.0
    for key in keys:
        if key in _PASSES:
            continue
        before = _pm.REGISTRATION.seconds
        with _pm.REGISTRATION.measure(), _pm.registration_mode():
            p = PatternMatcherPass(pass_name=f"flashkat_{key.name}")
            try:
                ok = _REGISTER[key.family](key, p)
            except Exception as e:  # noqa: BLE001 - a pattern that cannot be traced is skipped, never fatal
                counters[COUNTER]["registration_failed"] += 1
                _PASSES[key] = None
                _LAST_ERRORS[key] = repr(e)
                log.warning("flashkat: could not trace the pattern %s (%r); such sites are left alone", key, e)
                continue
        _PASSES[key] = p if ok else None
        _pm.REGISTRATION.patterns += 1
        spent += _pm.REGISTRATION.seconds - before
    return spent


def _device(h: SiteHint) -> str:
    v = h.x.meta.get("val") if isinstance(h.x, Node) else None
    return v.device.type if isinstance(v, torch.Tensor) else "cpu"


def _keys(hints, trace_of) -> list:
    keys = []
    for h in hints:
        trace = trace_of(h)
        for mod in _FAMILY_MODULES:
            for k in mod.keys_for(h, trace, _device(h)):
                if k not in keys:
                    keys.append(k)
    return keys


def _is_backward(graph: Graph) -> bool:
    return any(n.op == "placeholder" and n.name.startswith("tangents") for n in graph.nodes)


def _site_nodes(h: SiteHint) -> set:
    """The nodes between the site's inputs and its division (the would-be match)."""
    stop = {h.x, *h.num, *h.den}
    seen, todo = set(), [h.div]
    while todo:
        n = todo.pop()
        if n in seen or n in stop or n.op != "call_function":
            continue
        seen.add(n)
        if len(seen) > 512:
            break
        todo.extend(n.all_input_nodes)
    return seen


def _diagnose(h: SiteHint, fwd: Optional[set]) -> str:
    """Why no pattern took a site (best effort: the first check that fails)."""
    from .base import FLOAT_DTYPES, dtype_name, is_contiguous, val

    if h.reason:
        return h.reason
    vals = [val(n) for n in (h.x, *h.num, *h.den)]
    if all(v is not None for v in vals):
        dtypes = sorted({dtype_name(v.dtype) for v in vals})
        coef_dtypes = {v.dtype for v in vals[1:]}
        if len(dtypes) > 1 and (h.family == "kat_reference" or len(coef_dtypes) > 1):
            return (f"mixed dtypes ({', '.join(dtypes)}): the coefficients must share one floating dtype"
                    + (" with x in KAT's reference" if h.family == "kat_reference" else ""))
        if vals[0].dtype not in FLOAT_DTYPES:
            return f"x has dtype {vals[0].dtype}, not a floating dtype"
        if len({v.device for v in vals}) > 1:
            return "x and the coefficients are on different devices"
        if not is_contiguous(vals[0]):
            return "x (the grouped view) is not contiguous"
    inner = _site_nodes(h)
    backward = set()
    if fwd is not None:
        backward = {n for n in h.div.graph.nodes if n not in fwd}
    for n in sorted(inner, key=lambda n: n.name):
        if n is h.div:
            continue
        for u in n.users:
            if u not in inner and u not in backward and u.op != "output":
                return f"intermediate {n.name} ({n.target}) is also used outside the rational, by {u.name}"
            if u.op == "output" and fwd is None:
                return f"intermediate {n.name} is also an output of the graph"
    if h.family == "kat_reference":
        xv = val(h.x)
        if xv is not None and sum(not isinstance(d, int) for d in xv.shape) > 1:
            return ("KAT reference shape with more than one symbolic dimension of x (e.g. batch and "
                    "sequence): Inductor's pattern matcher re-traces it with one symbolic input only; "
                    "mark only the batch dimension dynamic to have it rewritten")
        return "KAT reference shape, but no traced pattern matched (different dtype/device or code details)"
    return ("no traced pattern matched this code shape (see flashkat_inductor/recognisers/pointwise.py "
            "for the writings recognised)")


def rewrite_graph(graph: Graph, kind: str, is_inference: Optional[bool] = None) -> GraphReport:
    """Rewrite every recognised site of ``graph`` in place.

    ``kind`` is ``"joint"`` (joint_custom_pre_pass) or ``"post"``
    (post_grad_custom_pre_pass; backward graphs are left alone)."""
    if kind == "post" and _is_backward(graph):
        return GraphReport("backward", [], [], [], 0.0)
    if kind == "post" and is_inference is False:
        # a training forward graph: the joint pass has seen this code already (with its backward)
        return GraphReport("training (forward graph)", [], [], [], 0.0)
    if not (graph.find_nodes(op="call_function", target=torch.ops.aten.div.Tensor)
            or graph.find_nodes(op="call_function", target=torch.ops.aten.reciprocal.default)):
        return GraphReport(kind, [], [], [], 0.0)
    # Inductor runs the joint passes on inference graphs too (no tangents there).
    training = kind == "joint" and _is_backward(graph)
    rg = joint_requires_grad(graph) if training else None
    fwd = joint_forward_nodes(graph) if training else None
    if not find_sites(graph, rg, fwd):
        return GraphReport(kind, [], [], [], 0.0)  # nothing rational-looking: leave the graph untouched

    # Normalise as the patterns were (see NOTES: the joint pre-pass runs before no-op removal).
    from torch._inductor.fx_passes.post_grad import remove_noop_ops

    remove_noop_ops(graph)
    if kind == "joint":
        from torch._inductor.fx_passes.joint_graph import early_patterns

        early_patterns.apply(graph)
    cse_inplace(graph)
    if training:
        rg = joint_requires_grad(graph)
        fwd = joint_forward_nodes(graph)
    hints = find_sites(graph, rg, fwd)

    if training:
        label = "training"
        keys = _keys(hints, lambda h: "joint" if any(h.grads) else "fwd")
    elif kind == "joint":
        label = "inference"
        keys = _keys(hints, lambda h: "fwd")
    else:
        label = "inference" if is_inference in (True, None) else "training (forward graph)"
        keys = _keys(hints, lambda h: "post")
    spent = _ensure(keys)

    rewrites: list = []
    undo = canonicalize_commutative(graph)
    total = 0
    before = set(graph.nodes)
    with collect_rewrites(rewrites):
        for key in keys:
            p = _PASSES.get(key)
            if p is None:
                continue
            lab = "training (no grad at this site)" if (training and key.trace == "fwd") else label
            with graph_context(lab):
                total += p.apply(graph)
    undo_canonicalize(undo)
    if total:
        stable_topological_sort(graph)
        graph.lint()
        # views the replacements inserted must alias their bases (donated buffers, see base.py)
        refresh_fake_values(graph, [n for n in graph.nodes if n not in before])
        _attach_nodes(graph, rewrites)
    if graph.owning_module is not None:
        graph.owning_module.recompile()

    near = [NearMiss(h.family, h.form, h.m, h.n, label, h.div.name, _diagnose(h, fwd))
            for h in hints if not h.div._erased]
    report = GraphReport(label, rewrites, near, keys, spent, kind)
    if _REPORT_SINK["list"] is not None:
        _REPORT_SINK["list"].append(report)
    return report


def _attach_nodes(graph: Graph, rewrites) -> None:
    """Name, for each rewrite, the rational_fwd/bwd nodes that now compute it."""
    from .scan import VIEW_OPS

    fwd = torch.ops.flashkat.rational_fwd.default
    bwd = torch.ops.flashkat.rational_bwd.default
    chains = []
    for n in graph.nodes:
        if n.op == "call_function" and n.target in (fwd, bwd):
            x = n.args[0] if n.target is fwd else n.args[1]
            names = []
            while isinstance(x, Node):
                names.append(x.name)
                if not (x.op == "call_function" and x.target in VIEW_OPS):
                    break
                x = x.args[0]
            chains.append((n.name, names))
    for r in rewrites:
        r.node_names = [name for name, names in chains if r.x_node in names]


class collect_reports:  # noqa: N801 - context manager
    """Collect the GraphReport of every rewrite_graph call inside the block."""

    def __init__(self):
        self.reports: list = []

    def __enter__(self):
        self._old = _REPORT_SINK["list"]
        _REPORT_SINK["list"] = self.reports
        return self.reports

    def __exit__(self, *exc):
        _REPORT_SINK["list"] = self._old
        return False
