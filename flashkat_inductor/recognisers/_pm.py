"""Glue to Inductor's pattern matcher: version shims, tracing, lazy registration.

Everything here is independent of the rational itself; the families
(``kat_reference.py``, ``pointwise.py``) say what to trace.

Version differences handled here (checked against torch 2.11 and 2.13):

- ``register_replacement`` takes ``pattern_name=`` from 2.13 on; 2.11 does not.
- From 2.13 on ``register_replacement`` calls its ``trace_fn`` with
  ``get_decomp_fn=``; 2.11 calls ``trace_fn(fn, args)``.  Our trace functions
  accept and forward either.
- ``init_once_fakemode`` calls its function positionally on 2.11 and by keyword
  on 2.13+, so it is not used: :func:`registration_mode` enters the same
  contexts itself.
"""
from __future__ import annotations

import contextlib
import inspect
import time
from typing import Any, Callable

import torch
from torch._dynamo.utils import counters
from torch._inductor import pattern_matcher as pm

from .canon import canonicalize_commutative, cse_inplace

# ----------------------------------------------------------------------------
# Tracing the search and replacement functions
# ----------------------------------------------------------------------------
# A match is checked again by re-tracing the search function on the matched
# shapes (pattern_matcher.register_replacement's check_fn), and the replacement
# is traced for each accepted match.  A KAT model has dozens of sites with two
# or three distinct shapes, so the traces are cached per (function, argument
# metadata): a cache hit costs microseconds instead of 0.02-0.2 s.  Traces with
# symbolic shapes are not cached (their symbols belong to one shape env).
_TRACE_CACHE: dict = {}
_TRACE_CACHE_MAX = 512


def _arg_key(a: Any):
    if isinstance(a, torch.Tensor):
        for v in (*a.shape, *a.stride()):
            if not isinstance(v, int):
                raise _Uncacheable
        return ("T", tuple(a.shape), tuple(a.stride()), a.dtype, a.device.type, bool(a.requires_grad))
    if isinstance(a, (int, float, bool, str, type(None))):
        return ("S", type(a).__name__, a)
    raise _Uncacheable


class _Uncacheable(Exception):
    pass


def _view_to_reshape(gm: torch.fx.GraphModule) -> None:
    """Inductor turns ``view`` into ``reshape`` before the post-grad passes; do the same to patterns."""
    for node in gm.graph.find_nodes(op="call_function", target=torch.ops.aten.view.default):
        node.target = torch.ops.aten.reshape.default
    gm.recompile()


def make_trace_fn(kind: str) -> Callable[..., torch.fx.GraphModule]:
    """A ``trace_fn`` for ``register_replacement``.

    ``kind`` is ``"joint"`` (forward + backward, for the joint graph),
    ``"fwd"`` (forward only, for the joint graph: sites where nothing requires
    grad) or ``"post"`` (forward only, for post-grad graphs, where views are
    reshapes).  Every trace is canonicalised (operand order of commutative
    ops, one node per distinct division) exactly as the graphs we match are,
    see ``canon.py``.

    Replacement graphs carry fake values that the pattern matcher copies into
    the graph (torch 2.11 does; a value from another compile's fake mode then
    fails with "Mixing fake modes"), so they are cached per fake mode; search
    graphs only give structure and are cached across compiles."""
    base = pm.joint_fwd_bwd if kind == "joint" else pm.fwd_only

    def trace(fn, args, **kwargs):
        mode = None
        if getattr(fn, "_flashkat_replacement", False):
            mode = torch._guards.detect_fake_mode(args)
        try:
            key = (kind, fn, id(mode), tuple(_arg_key(a) for a in args))
        except _Uncacheable:
            key = None
        if key is not None and key in _TRACE_CACHE:
            cached_mode, gm = _TRACE_CACHE[key]
            if cached_mode is mode:
                return gm
        gm = base(fn, args, **kwargs)
        if kind == "post":
            _view_to_reshape(gm)
        cse_inplace(gm.graph)
        canonicalize_commutative(gm.graph)
        gm.recompile()
        if key is not None:
            if len(_TRACE_CACHE) >= _TRACE_CACHE_MAX:
                _TRACE_CACHE.clear()
            _TRACE_CACHE[key] = (mode, gm)
        return gm

    trace.__name__ = f"flashkat_trace_{kind}"
    return trace


def replacement(fn):
    """Mark a replacement function (its traces are cached per fake mode)."""
    fn._flashkat_replacement = True
    return fn


TRACE_FNS = {k: make_trace_fn(k) for k in ("joint", "fwd", "post")}

# ----------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------
_RR_PARAMS = frozenset(inspect.signature(pm.register_replacement).parameters)


@contextlib.contextmanager
def registration_mode():
    """The contexts ``init_once_fakemode`` uses: no tracing context, a private
    FakeTensorMode, and Inductor's counters left as they were (tracing a
    pattern runs passes that count)."""
    from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily

    saved = counters["inductor"].copy()
    try:
        with torch._guards.tracing(None), unset_fake_temporarily(), FakeTensorMode():
            yield
    finally:
        counters["inductor"] = saved


def register(
    search_fn: Callable,
    replace_fn: Callable,
    example_inputs: list,
    kind: str,
    pass_: pm.PatternMatcherPass,
    extra_check: Callable[[pm.Match], bool],
    name: str,
) -> bool:
    """register_replacement with our trace functions, on any supported torch.

    Must be called inside :func:`registration_mode`.  Returns False when the
    pattern could not be registered (e.g. a joint pattern under inference mode)."""
    kwargs: dict[str, Any] = {"extra_check": extra_check}
    if "pattern_name" in _RR_PARAMS:
        kwargs["pattern_name"] = name
    if "skip_duplicates" in _RR_PARAMS:
        kwargs["skip_duplicates"] = True
    if kind == "joint" and torch.is_inference_mode_enabled():
        return False
    return bool(pm.register_replacement(search_fn, replace_fn, example_inputs, TRACE_FNS[kind], pass_, **kwargs))


class Timer:
    """Accumulated registration time, reported by explain() and the tests."""

    def __init__(self):
        self.seconds = 0.0
        self.patterns = 0

    @contextlib.contextmanager
    def measure(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - t0


REGISTRATION = Timer()
