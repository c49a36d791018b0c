"""Hand-written rationals: Horner or explicit powers on a grouped view of ``x``.

The code shapes (kat-semantics.md section 4), for ``x`` viewed as ``xg`` of
shape ``(..., G, D)`` and coefficient columns ``a_i = a[:, i:i+1]`` of shape
``(G, 1)`` (or ``(1, 1)`` for a row shared by every group; ``a[:, i, None]``,
``a[:, i].unsqueeze(-1)`` and ``a.unsqueeze(-1)[:, i]`` are the same to us)::

    # family "horner"
    p = a_{m-1};  p = p * xg + a_i  for i = m-2 .. 0        (or nested: a0 + xg * (a1 + xg * (...)))
    s = c_{n-1};  s = s * t + c_j   for j = n-2 .. 0;  s = s * t
    # family "horner", writing "addcmul": every step p = torch.addcmul(a_i, p, xg), s likewise
    # family "powers", writing "sum"
    p = sum(a_i * xg ** i for i in range(m))                (torch.pow(xg, i) is the same op)
    s = sum(c_j * t ** (j + 1) for j in range(n))
    # family "powers", writing "explicit"
    p = a_0 + a_1 * xg + a_2 * xg ** 2 + ...
    q = 1 + c_0 * t + c_1 * t ** 2 + ...                    (abs_sum: 1 + (c_0 * t + ...).abs())

    y = p / q   with   q = 1 + s       (safe:    t = xg.abs(), c_j = |b_j|)
                       q = 1 + s       (signed:  t = xg,       c_j = |b_j|)
                       q = 1 + s.abs() (abs_sum: t = xg,       c_j = b_j)

The quotient may also be written ``p * (1 / q)`` or ``p * q.reciprocal()``
(either factor first; key field ``divide``): the replacement computes ``p / q``,
the same function to within one rounding.

``|b_j|`` may be taken per column (``b[:, j:j+1].abs()``, variant
``col_abs``) or once for the whole tensor before the columns are taken
(``b.abs()[:, j:j+1]``, variant ``pre_abs``).  Operands of ``+`` and ``*``
may come in either order (see ``canon.py``).  The group dimension may be any
dimension of the view: columns ``(G, 1, 1, 1)`` against ``(B, G, D, H, W)``
are the ``(B, C, H, W)`` variant grouping over dimension 1.

What must hold for a match (each is a different joint graph):

- ``|x|`` (safe form) is computed once, as one ``xg.abs()``;
- the numerator and denominator may come in either statement order
  (``q_first``: autograd accumulates x's gradient in reverse order of x's
  uses, so the order is part of the pattern; both are traced on demand), but
  not interleaved;
- the powers of x are not shared between P and Q (``x2 = x ** 2`` used by
  both is a different graph), and no intermediate is used outside P/Q;
- in the explicit writing, the linear terms are ``a_1 * xg`` and ``c_0 * t``
  (not ``xg ** 1``).

Pattern arguments are the grouped tensor and the columns themselves, so how
the view and the columns were made does not matter.  The replacement moves the
group and within-group dimensions last, flattens them to channels, calls
``flashkat::rational_fwd(x, cat(a), cat(b), form, "torch")`` and undoes the
moves.  With ``pre_abs`` the denominator columns are already non-negative, so
the op's ``|.|`` changes no value, and its gradient ``sign(|b|)`` differs from
1 only where ``b = 0``, where the upstream ``abs`` backward multiplies by
``sign(0) = 0`` anyway: the rewrite is exact there too.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import torch
from torch.fx import Node

from . import _pm
from .base import (PatternKey, coef_trace_dtype, dynamic_rewrites_enabled, float_x_and_coefficients, is_contiguous,
                   log_rewrite, same_size, static_shape, trace_dtype, val)
from .scan import SiteHint, VIEW_OPS

aten = torch.ops.aten
FAMILIES = ("horner", "powers")


# ----------------------------------------------------------------------------
# Keys from hints
# ----------------------------------------------------------------------------
def keys_for(h: SiteHint, trace: str, device: str) -> list:
    if h.family not in FAMILIES or h.reason or h.form is None:
        return []
    if h.form == "abs_sum":
        coef = "plain"
    elif h.coef in ("col_abs", "pre_abs"):
        coef = h.coef
    else:
        return []
    grads = h.grads if trace == "joint" else (False, False, False)
    key = PatternKey(h.family, h.form, h.m, h.n, trace, tuple(grads), device,
                     h.writing, coef, h.x_rank,
                     tuple(h.num_sig), tuple(h.den_sig), h.q_first, trace_dtype(h.x, trace), h.divide,
                     coef_dtype=coef_trace_dtype(h.x, h.num + h.den, trace))
    if h.family == "horner" and h.writing == "" and _addcmul_decomposed():
        # where Inductor decomposes addcmul (torch 2.11), an addcmul Horner reaches the graphs as
        # (u * 1) * v + c, which the scan cannot tell from a plain Horner with a "* 1"
        return [key, dataclasses.replace(key, writing="addcmul")]
    return [key]


@functools.lru_cache(maxsize=None)
def _addcmul_decomposed() -> bool:
    from torch._inductor.decomposition import select_decomp_table

    return aten.addcmul.default in select_decomp_table()


# ----------------------------------------------------------------------------
# The code shapes, parameterised
# ----------------------------------------------------------------------------
def _horner_step(key: PatternKey, acc, x, c):
    return torch.addcmul(c, acc, x) if key.writing == "addcmul" else acc * x + c


def _numerator(key: PatternKey, x, a):
    if key.family == "horner":
        p = a[-1]
        for c in reversed(a[:-1]):
            p = _horner_step(key, p, x, c)
        return p
    if key.writing == "sum":
        return sum(a[i] * x**i for i in range(len(a)))
    p = a[0]
    for i in range(1, len(a)):
        p = p + a[i] * (x if i == 1 else x**i)
    return p


def _denominator(key: PatternKey, x, b):
    t = x.abs() if key.form == "safe" else x
    c = [bj.abs() for bj in b] if key.coef == "col_abs" else list(b)
    if key.family == "horner":
        s = c[-1]
        for cj in reversed(c[:-1]):
            s = _horner_step(key, s, t, cj)
        s = s * t
    elif key.writing == "sum":
        s = sum(c[j] * t ** (j + 1) for j in range(len(c)))
    elif key.form == "abs_sum":
        s = c[0] * t
        for j in range(1, len(c)):
            s = s + c[j] * t ** (j + 1)
    else:
        q = 1 + c[0] * t
        for j in range(1, len(c)):
            q = q + c[j] * t ** (j + 1)
        return q
    return 1 + (s.abs() if key.form == "abs_sum" else s)


# ----------------------------------------------------------------------------
# Layout: where the groups are
# ----------------------------------------------------------------------------
def _strip(shape) -> tuple:
    s = list(shape)
    while len(s) > 1 and s[0] == 1:
        s.pop(0)
    return tuple(s)


def _side(shapes) -> Optional[tuple]:
    """(rows, rank) of one side's columns, all alike and (g, 1, ..., 1); None otherwise."""
    stripped = {_strip(s) for s in shapes}
    if len(stripped) != 1:
        return None
    s = stripped.pop()
    if any(d != 1 for d in s[1:]):
        return None
    return s[0], len(s)


def layout(x_shape, num_shapes, den_shapes) -> Optional[tuple]:
    """(G, group_dim) of a grouped view, or None when the columns are not group columns.

    G = 1 (every coefficient row shared) gives group_dim None."""
    sn, sd = _side(num_shapes), _side(den_shapes)
    if sn is None or sd is None:
        return None
    dims = []
    for rows, rank in (sn, sd):
        if rank > len(x_shape):
            return None
        if rows != 1:
            gd = len(x_shape) - rank
            if not same_size(x_shape[gd], rows):
                return None
            dims.append((rows, gd))
    if not dims:
        return 1, None
    if len(dims) == 2 and dims[0] != dims[1]:
        return None
    return dims[0]


def _stack_columns(cols):
    """k columns of shape (g, 1, ..., 1) -> one (g, k) coefficient tensor."""
    return torch.cat([c.reshape(-1, 1) for c in cols], dim=1)


def rational_on_grouped(x, a_cols, b_cols, form: str):
    """The replacement: flashkat::rational_fwd on a channels-last flattening of the grouped view."""
    lay = layout(tuple(x.shape), [tuple(c.shape) for c in a_cols], [tuple(c.shape) for c in b_cols])
    assert lay is not None  # extra_check guarantees it
    groups, gd = lay
    num, den = _stack_columns(a_cols), _stack_columns(b_cols)
    # the code computes in the promoted dtype (a bfloat16 x with float32 coefficients: float32) and
    # returns it; so does the replacement
    dt = torch.promote_types(x.dtype, num.dtype)
    x, num, den = x.to(dt), num.to(dt), den.to(dt)
    op = torch.ops.flashkat.rational_fwd
    if gd is None or gd == x.dim() - 1:  # one group, or per-channel coefficients over the last dim
        return op(x, num, den, form, "torch")
    if gd == x.dim() - 2:  # (..., G, D): the usual grouped view
        return op(x.reshape(*x.shape[:-2], -1), num, den, form, "torch").view(x.shape)
    # (B, G, D, H, W)-like: move G and D last, flatten them to channels, then back
    xm = x.movedim((gd, gd + 1), (-2, -1))
    y = op(xm.reshape(*xm.shape[:-2], -1), num, den, form, "torch")
    return y.view(xm.shape).movedim((-2, -1), (gd, gd + 1)).contiguous()


# ----------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------
def _named(impl, names, fname):
    """A function with explicit parameter names (register_replacement reads them)."""
    src = f"def {fname}({', '.join(names)}):\n    return _impl({', '.join(names)})\n"
    ns = {"_impl": impl}
    exec(src, ns)  # noqa: S102 - generated from identifiers only
    return ns[fname]


def _argnames(m: int, n: int):
    return ["x"] + [f"a{i}" for i in range(m)] + [f"b{j}" for j in range(n)]


_SIZES = (3, 5, 6, 7, 9, 10, 11, 13)  # example sizes: no 1s (noop views), none equal to G0
_G0 = 4


def example_inputs(key: PatternKey, device: str):
    r = key.x_rank
    shape = list(_SIZES[:r])
    for sig in (key.num_sig, key.den_sig):
        off = r - len(sig)
        for i, s in enumerate(sig):
            if s == "G":
                shape[off + i] = _G0
    gx, gn, gd = key.grads if key.trace == "joint" else (False, False, False)

    dt = getattr(torch, key.dtype)
    ct = getattr(torch, key.coef_dtype) if key.coef_dtype else dt

    def col(sig, rg):
        return torch.empty(tuple(_G0 if s == "G" else 1 for s in sig), device=device, dtype=ct, requires_grad=rg)

    x = torch.empty(shape, device=device, dtype=dt, requires_grad=gx)
    return [x] + [col(key.num_sig, gn) for _ in range(key.m)] + [col(key.den_sig, gd) for _ in range(key.n)]


def _from_abs(node) -> bool:
    while isinstance(node, Node) and node.op == "call_function" and node.target in VIEW_OPS:
        node = node.args[0]
    return isinstance(node, Node) and node.target == aten.abs.default


def make_extra_check(key: PatternKey):
    names = _argnames(key.m, key.n)

    def check(match) -> bool:
        nodes = [match.kwargs.get(nm) for nm in names]
        if not all(isinstance(nd, Node) for nd in nodes):
            return False
        vals = [val(nd) for nd in nodes]
        if not float_x_and_coefficients(vals[0], vals[1:]):
            return False
        x, cols = vals[0], vals[1:]
        if not all(static_shape(c) for c in cols) or not is_contiguous(x):
            return False
        if not static_shape(x) and not dynamic_rewrites_enabled():
            return False
        for c in cols:  # broadcasting must not enlarge x (else this is not an activation of x)
            if c.dim() > x.dim():
                return False
            if not all(d == 1 or same_size(d, xd) for d, xd in zip(reversed(c.shape), reversed(x.shape))):
                return False
        lay = layout(tuple(x.shape), [tuple(c.shape) for c in cols[: key.m]], [tuple(c.shape) for c in cols[key.m:]])
        if lay is None:
            return False
        if key.coef == "pre_abs" and not all(_from_abs(nd) for nd in nodes[1 + key.m:]):
            return False
        log_rewrite(key, lay[0], nodes[0])
        return True

    return check


@functools.lru_cache(maxsize=None)
def _functions(key_no_trace: PatternKey):
    """Search and replacement functions, one object per key (the trace cache keys on them)."""
    key = key_no_trace
    m, n = key.m, key.n
    names = _argnames(m, n)

    def divide(p, q):
        if key.divide == "reciprocal":
            return p * q.reciprocal()
        if key.divide == "one_over":
            return p * (1 / q)
        return p / q

    def search_impl(x, *cols):
        if key.q_first:
            q = _denominator(key, x, cols[m:])
            return divide(_numerator(key, x, cols[:m]), q)
        return divide(_numerator(key, x, cols[:m]), _denominator(key, x, cols[m:]))

    def replace_impl(x, *cols):
        return rational_on_grouped(x, cols[:m], cols[m:], key.form)

    tag = f"{key.family}_{key.form}_{key.writing or 'h'}_{key.coef}_{m}_{n}_{key.divide}"
    return _named(search_impl, names, f"search_{tag}"), _pm.replacement(_named(replace_impl, names, f"replace_{tag}"))


def register_key(key: PatternKey, pass_) -> bool:
    base = PatternKey(key.family, key.form, key.m, key.n, "", (), "", key.writing, key.coef, 0, (), (), key.q_first,
                      divide=key.divide)
    search, replace = _functions(base)
    return _pm.register(search, replace, example_inputs(key, key.device), key.trace, pass_,
                        make_extra_check(key), key.name)
