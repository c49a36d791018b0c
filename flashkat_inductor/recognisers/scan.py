"""Finding rational-looking sites in a graph, before any pattern is traced.

Tracing a pattern costs 0.02-0.2 s and the families multiply (forms x
writings x (m, n) x ranks x which inputs require grad x training/inference),
so the backend traces only what a graph can contain.  :func:`find_sites`
walks back from every ``aten.div.Tensor`` and describes what it sees: the
family of code shape, the denominator form, the orders ``(m, n)``, the
coefficient layouts and which inputs require grad.  Each description is a
:class:`SiteHint`; the families turn hints into pattern keys.

A hint is only a guess, never a decision: the rewrite happens when a traced
pattern matches exactly and its ``extra_check`` passes.  A hint that no
pattern took is a near miss, reported by ``explain`` with the reason the scan
or the check found.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch.fx import Graph, Node

from .base import CAST_OPS, cast_dtype, dtype_name, dynamic_rewrites_enabled, same_size, val
from .canon import reciprocal_of

aten = torch.ops.aten

# Pointwise ops a hand-written rational is made of (walked through).
_POLY_OPS = {aten.add.Tensor, aten.mul.Tensor, aten.pow.Tensor_Scalar, aten.abs.default}
# Pointwise ops that make a site "not one of ours" but are still walked, to describe near misses.
_OTHER_POINTWISE = {aten.sub.Tensor, aten.neg.default, aten.div.Tensor, aten.addcmul.default,
                    aten.reciprocal.default, aten.square.default}
# Ops that only select or re-view coefficient storage.
VIEW_OPS = {
    aten.slice.Tensor, aten.select.int, aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.default,
    aten.squeeze.dims, aten.view.default, aten.reshape.default, aten.expand.default, aten.alias.default,
    aten.clone.default, aten.permute.default, aten.repeat.default, aten.t.default,
}
MAX_ORDER = 16  # coefficient counts above this are not considered rationals


@dataclasses.dataclass
class SiteHint:
    """What the scan saw at one division."""

    div: Node
    family: Optional[str] = None  # "kat_reference" | "horner" | "powers" | None
    writing: str = ""  # powers: "sum" (Python sum() over i) or "explicit" (a0 + a1*x + ...); horner: "" or "addcmul"
    form: Optional[str] = None  # "safe" | "signed" | "abs_sum" | None (unknown)
    coef: str = ""  # pointwise: "col_abs" (|b_j| in the pattern) | "pre_abs" (columns of |b|) | "plain"
    m: int = 0
    n: int = 0
    x: Optional[Node] = None
    num: list = dataclasses.field(default_factory=list)  # numerator leaves (columns, or the (G, m) tensor)
    den: list = dataclasses.field(default_factory=list)
    x_rank: int = 0
    num_sig: tuple = ()
    den_sig: tuple = ()
    grads: tuple = (False, False, False)  # requires grad: x, numerator, denominator
    q_first: bool = False  # the denominator uses x before the numerator does (statement order)
    divide: str = "div"  # how P / Q is written: "div", "reciprocal" (p * q.reciprocal()), "one_over" (p * (1 / q))
    autocast: str = ""  # kat_reference: the bmm's operands are cast to this dtype (autocast), else ""
    reason: str = ""  # why no pattern can apply (empty when one may)

    @property
    def num_side(self) -> Node:
        """The numerator P (the dividend, or the other factor of the product with 1 / Q)."""
        if self.divide == "div":
            return self.div.args[0]
        return self.div.args[1] if reciprocal_of(self.div.args[0]) is not None else self.div.args[0]

    @property
    def den_side(self) -> Node:
        """The denominator Q."""
        if self.divide == "div":
            return self.div.args[1]
        q = reciprocal_of(self.div.args[1])
        return q if q is not None else reciprocal_of(self.div.args[0])

    @property
    def name(self) -> str:
        return f"{self.family}_{self.form}" if self.family and self.form else "unrecognised"


def _shape(node):
    v = val(node)
    return tuple(v.shape) if v is not None else None


def _static(shape) -> bool:
    return shape is not None and all(isinstance(s, int) for s in shape)


# ----------------------------------------------------------------------------
# KAT's reference: div(squeeze(bmm(unsqueeze(num), powers)), squeeze(bmm(unsqueeze(|cat(1, den, 0)|), powers)))
# ----------------------------------------------------------------------------
def _through(node, ops):
    while isinstance(node, Node) and node.op == "call_function" and node.target in ops:
        node = node.args[0]
    return node


_SQUEEZE = {aten.squeeze.dim}
_VIEWS = {aten.view.default, aten.reshape.default}
_UNSQUEEZE = {aten.unsqueeze.default}


def _kat_reference(h: SiteHint) -> bool:
    num_side, den_side = h.num_side, h.den_side
    bn, bd = _through(num_side, _SQUEEZE), _through(den_side, _SQUEEZE)
    if not all(isinstance(b, Node) and b.target == aten.bmm.default for b in (bn, bd)):
        return False
    h.family, h.form, h.coef = "kat_reference", "signed", ""
    operands = [a for b in (bn, bd) for a in b.args[:2]]
    casts = {cast_dtype(a) for a in operands} - {None}
    if casts:  # autocast: every bmm operand cast to (or already in) one low-precision dtype
        dt = casts.pop()
        if casts or dt not in (torch.bfloat16, torch.float16) or any(
                cast_dtype(a) is None and (val(a) is None or val(a).dtype != dt) for a in operands):
            h.reason = "the bmm operands are cast to different dtypes"
            return True
        h.autocast = dtype_name(dt)
    num = _through(_through(bn.args[0], CAST_OPS), _UNSQUEEZE)
    dc = _through(_through(bd.args[0], CAST_OPS), _UNSQUEEZE)
    if not (isinstance(dc, Node) and dc.target == aten.abs.default):
        h.reason = "denominator coefficients of the bmm are not under |.|"
        h.form = None
        return True
    cat = dc.args[0]
    if not (isinstance(cat, Node) and cat.target == aten.cat.default and len(cat.args[0]) >= 2):
        h.reason = "denominator coefficients are not KAT's cat([ones, den, zeros])"
        return True
    den = cat.args[0][1]
    ns, ds = _shape(num), _shape(den)
    if not (ns and ds and len(ns) == 2 and len(ds) == 2 and _static(ns) and _static(ds)):
        h.reason = "coefficient shapes are not static 2-D (G, k)"
        return True
    h.num, h.den, h.m, h.n = [num], [den], ns[1], ds[1]
    if _through(bn.args[1], CAST_OPS) is not _through(bd.args[1], CAST_OPS):
        h.reason = "numerator and denominator use different power stacks"
        return True
    # powers: view(cat([ones, z, z*z, ...])) -> z -> view(clone(permute(view(x))))
    pw = _through(_through(bn.args[1], CAST_OPS), {aten.view.default, aten.reshape.default})
    if isinstance(pw, Node) and pw.target in (aten.cat.default, aten.stack.default) and len(pw.args[0]) >= 2:
        # z = view(clone(permute(view(x))))
        node = pw.args[0][1]
        for ops in (_VIEWS, {aten.clone.default}, {aten.permute.default}, _VIEWS):
            if not (isinstance(node, Node) and node.op == "call_function" and node.target in ops):
                node = None
                break
            node = node.args[0]
        if isinstance(node, Node):
            h.x = node
            h.x_rank = len(_shape(node) or ())
    if h.m <= h.n:
        h.reason = f"KAT's reference needs m > n (got m={h.m}, n={h.n}); it does not run otherwise"
    elif h.x is None or h.x_rank != 3:
        h.reason = "input is not the 3-D (B, L, C) tensor KAT's reference expects"
    elif not _static(_shape(h.x)):
        h.reason = _dynamic_reason(_shape(h.x)[-1:])
    return True


# ----------------------------------------------------------------------------
# Hand-written forms: pointwise polynomials in one tensor x with broadcast columns
# ----------------------------------------------------------------------------
def _cone(root: Node, stop: Optional[Node], limit: int = 256):
    """Pointwise nodes reachable backwards from root (root included), and the leaves."""
    inner, leaves, seen, todo = [], [], set(), [root]
    while todo and len(seen) < limit:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if (n is not stop and isinstance(n, Node) and n.op == "call_function"
                and (n.target in _POLY_OPS or n.target in _OTHER_POINTWISE)):
            inner.append(n)
            todo.extend(a for a in n.args if isinstance(a, Node))
        else:
            leaves.append(n)
    return inner, leaves


def _numel(node):
    """Element count, or None when unknown or symbolic."""
    s = _shape(node)
    if s is None or not _static(s):
        return None
    n = 1
    for d in s:
        n *= d
    return n


def _same_shape(a, b) -> bool:
    return a is not None and b is not None and len(a) == len(b) and all(same_size(u, v) for u, v in zip(a, b))


def _pick_x(inner, ref):
    """The tensor the polynomials are in: the operand the cone uses most often (the larger on ties).

    Usually full-size; a smaller one means the coefficients broadcast x to a larger tensor."""
    uses: dict = {}
    for n in inner:
        for a in n.args:
            if isinstance(a, Node) and a not in inner and _shape(a) is not None:
                uses[a] = uses.get(a, 0) + 1
    for n in inner:  # an inner full-size node fed to abs and to muls can also be x (e.g. x = a + b upstream)
        if n.target in (aten.add.Tensor, aten.mul.Tensor) and sum(1 for u in n.users if u in inner) >= 3:
            uses[n] = max(uses.get(n, 0), sum(1 for u in n.users if u in inner))
    if not uses:
        return None
    return max(uses, key=lambda k: (uses[k], _same_shape(_shape(k), ref), _numel(k) or 0))


def _sig(node, x_shape):
    """Column layout: its shape with leading ones dropped, group dims as 'G'."""
    s = _shape(node)
    if s is None or not _static(s):
        return None
    s = list(s)
    while len(s) > 1 and s[0] == 1:
        s.pop(0)
    if len(s) > len(x_shape):
        return None
    off = len(x_shape) - len(s)
    sig = []
    for i, d in enumerate(s):
        if d == 1:
            sig.append(1)
        elif isinstance(x_shape[off + i], int) and d == x_shape[off + i]:
            sig.append("G")
        else:
            return None
    return tuple(sig)


def _from_abs(node) -> bool:
    """Is node a view/selection of an |.| (coefficients made non-negative before use)?"""
    node = _through(node, VIEW_OPS)
    return isinstance(node, Node) and node.target == aten.abs.default


def _pointwise(h: SiteHint) -> bool:
    div = h.div
    ref = _shape(div)
    if ref is None:
        return False
    full = lambda nd: _same_shape(_shape(nd), ref)  # noqa: E731
    n_all, _ = _cone(h.num_side, None)
    d_all, _ = _cone(h.den_side, None)
    x = _pick_x(n_all + d_all, ref)
    if x is None:
        return False
    n_inner, n_leaves = _cone(h.num_side, x)
    d_inner, d_leaves = _cone(h.den_side, x)
    if x not in n_leaves or not (x in d_leaves or any(n.args[0] is x for n in d_inner)):
        return False  # not polynomial-looking in one tensor on both sides
    muls = [n for n in n_inner + d_inner if n.target in (aten.mul.Tensor, aten.pow.Tensor_Scalar, aten.addcmul.default)]
    if len(muls) < 2:
        return False
    h.x = x
    xs = _shape(x)
    h.x_rank = len(xs) if xs else 0
    all_inner = n_inner + d_inner
    h.family = "powers" if any(n.target == aten.pow.Tensor_Scalar for n in all_inner) else "horner"
    if h.family == "powers":
        h.writing = "sum" if any(n.target == aten.pow.Tensor_Scalar and n.args[1] == 0 for n in n_inner) else "explicit"
    elif any(n.target == aten.addcmul.default for n in all_inner):
        h.writing = "addcmul"  # Horner steps p = torch.addcmul(a_i, p, xg)
    others = sorted({str(n.target) for n in all_inner if n.target in _OTHER_POINTWISE
                     and not (h.writing == "addcmul" and n.target == aten.addcmul.default
                              and n.kwargs.get("value", 1) == 1 and len(n.args) == 3)})
    x_numel = _numel(x)

    def small(ls):  # coefficient-like: static, smaller than x and than the result
        return [l for l in ls if isinstance(l, Node) and l is not x and not full(l) and _numel(l) is not None
                and (x_numel is None or _numel(l) < x_numel)]

    h.num = small(n_leaves)
    # denominator columns: leaves, or the operands of |.| on small tensors
    d_small_abs = [n for n in d_inner if n.target == aten.abs.default and not full(n) and _numel(n) is not None]
    h.den = small(d_leaves)
    h.m, h.n = len(h.num), len(h.den)
    big_other = [l for l in n_leaves + d_leaves if isinstance(l, Node) and l is not x and full(l)]
    # form: where the |.| sits in the denominator
    big_abs = [n for n in d_inner if n.target == aten.abs.default and full(n)]
    if len(big_abs) == 1 and big_abs[0].args[0] is x:
        h.form = "safe"
    elif len(big_abs) == 1:
        h.form = "abs_sum"
    elif not big_abs:
        h.form = "signed"
    if h.form in ("safe", "signed"):
        if d_small_abs and len(d_small_abs) == h.n:
            h.coef = "col_abs"
        elif h.den and all(_from_abs(c) for c in h.den):
            h.coef = "pre_abs"
        else:
            h.coef = "plain"
    else:
        h.coef = "plain"
    # statement order: autograd accumulates x's gradient in reverse order of x's uses, so a
    # denominator written before the numerator is a different joint graph
    order = {nd: i for i, nd in enumerate(div.graph.nodes)}
    n_uses = [order[nd] for nd in n_inner if x in nd.args]
    d_uses = [order[nd] for nd in d_inner if x in nd.args]
    h.q_first = bool(n_uses and d_uses and min(d_uses) < min(n_uses))
    # layouts
    sigs_n = {_sig(c, xs) for c in h.num} if xs else {None}
    sigs_d = {_sig(c, xs) for c in h.den} if xs else {None}
    h.num_sig = next(iter(sigs_n)) if len(sigs_n) == 1 else None
    h.den_sig = next(iter(sigs_d)) if len(sigs_d) == 1 else None
    # reasons, most specific first
    if not full(x):
        h.reason = ("the coefficients broadcast x to a larger tensor, so this is not an activation of x "
                    "(groups that don't divide the channels?)")
    elif others:
        h.reason = f"uses {', '.join(others)}: not a recognised way of writing P/Q"
    elif big_other:
        h.reason = "the numerator or denominator involves a second full-size tensor"
    elif h.form is None:
        h.reason = "unknown denominator form (|.| in more than one place)"
    elif h.coef == "plain" and h.form != "abs_sum":
        h.reason = ("unknown denominator form: Q = 1 + sum b_j t^(j+1) with coefficients not under |.| "
                    "(none of safe, signed, abs_sum)")
    elif not (2 <= h.m <= MAX_ORDER and 1 <= h.n <= MAX_ORDER):
        h.reason = f"orders m={h.m}, n={h.n} outside 2 <= m, 1 <= n <= {MAX_ORDER}"
    elif h.num_sig is None or h.den_sig is None:
        h.reason = ("coefficients are not (G, 1, ...) columns broadcast over a grouped view of x "
                    "(or groups don't divide the channels)")
    elif xs is None or not _static(xs):
        h.reason = _dynamic_reason(xs[len(xs) - max(len(h.num_sig), len(h.den_sig), 1):] if xs else None)
    return True


def _dynamic_reason(channel_dims) -> str:
    """Why a site whose x has symbolic dims is left alone ("" when it is not)."""
    if channel_dims is None or not _static(channel_dims):
        return "the channel (or group) dimensions of x are symbolic"
    if not dynamic_rewrites_enabled():
        return ("x has dynamic (symbolic) batch dimensions and rewrites of dynamic shapes are turned off "
                "(FLASHKAT_DYNAMIC_REWRITES=0; unset it to rewrite them)")
    return ""


def find_sites(graph: Graph, requires_grad: Optional[dict] = None, forward: Optional[set] = None) -> list:
    """Every division of the forward computation (``p / q``, or ``p`` times ``1 / q`` or
    ``q.reciprocal()``) that looks like a rational P/Q, described.

    ``forward``: the forward part of a joint graph (divisions outside it are
    autograd's, e.g. the ``P / Q^2`` of the quotient rule)."""
    rg = requires_grad or {}
    hints = []
    roots = [(d, "div") for d in graph.find_nodes(op="call_function", target=aten.div.Tensor)]
    for mul in graph.find_nodes(op="call_function", target=aten.mul.Tensor):  # p * (1 / q), p * q.reciprocal()
        if len(mul.args) == 2 and not mul.kwargs and all(isinstance(a, Node) for a in mul.args):
            r = next((a for a in mul.args if reciprocal_of(a) is not None), None)
            fwd_users = [u for u in r.users if forward is None or u in forward] if r is not None else []
            if r is not None and len(fwd_users) == 1 and mul.args[0] is not mul.args[1]:
                roots.append((mul, "one_over" if r.target == aten.mul.Tensor else "reciprocal"))
    for div, divide in roots:
        if forward is not None and div not in forward:
            continue
        if not (len(div.args) == 2 and all(isinstance(a, Node) for a in div.args)):
            continue
        h = SiteHint(div, divide=divide)
        if not (_kat_reference(h) or _pointwise(h)):
            continue
        if h.x is not None:
            h.grads = (
                bool(rg.get(h.x, False)),
                any(rg.get(c, False) for c in h.num),
                any(rg.get(c, False) for c in h.den),
            )
        hints.append(h)
    return hints
