"""KAT's pure-PyTorch reference function (kat-semantics.md section 3).

``f(x, num, den, group)`` for ``x`` of shape ``(B, L, D)``: a grouped,
permuted copy ``z`` of ``x`` of shape ``(G, N)``; the stacked powers
``[1, z, z^2, ..., z^(k-1)]`` (``k = max(m, n)``, built by repeated
multiplication); ``P = bmm(num, powers)``; ``Q = bmm(|cat(1, den, 0...)|,
powers)``; ``P / Q`` permuted back.  The denominator raises *signed* ``z``:
the form is ``signed``, and PyTorch's ``abs`` gives ``sign(0) = 0``, so the
replacement is ``flashkat::rational_fwd(x, num, den, "signed", "torch")``.

The code only runs for ``m > n`` (the ``cat`` has ``m`` columns only then).
A numerator shared by every group is ``.repeat``-ed to ``(G, m)`` before the
call; the pattern takes the repeated tensor, which is exact: autograd of
``repeat`` sums the per-group gradients the op returns.  The group count is
``num.shape[0]`` (pattern arguments must be graph values, never ints).
"""
from __future__ import annotations

import functools

import torch
from torch.fx import Node

from . import _pm
from .base import (PatternKey, coefficient_rows_ok, dtype_name, dynamic_rewrites_enabled, float_x_and_coefficients,
                   log_rewrite, same_float_and_device, same_size, static_shape, trace_dtype, val)
from .scan import SiteHint

FAMILY = "kat_reference"


def keys_for(h: SiteHint, trace: str, device: str) -> list:
    if h.family != FAMILY or h.reason:
        return []
    grads = h.grads if trace == "joint" else (False, False, False)
    xv, dv = val(h.x), val(h.den[0]) if h.den else None
    unit = xv is not None and dv is not None and xv.dim() == 3 and same_size(xv.shape[-1], dv.shape[0])
    if h.autocast:  # the casts depend on x's and the coefficients' dtypes, in every graph
        dtype = dtype_name(xv.dtype) if xv is not None else "float32"
        coef = dtype_name(dv.dtype) if dv is not None else "float32"
        return [PatternKey(FAMILY, "signed", h.m, h.n, trace, tuple(grads), device, dtype=dtype,
                           unit_groups=bool(unit), coef_dtype=coef, autocast=h.autocast)]
    return [PatternKey(FAMILY, "signed", h.m, h.n, trace, tuple(grads), device, dtype=trace_dtype(h.x, trace),
                       unit_groups=bool(unit))]


def kat_reference(x, num, den):
    """KAT's function, as written there, with the group count taken from ``num``."""
    B, L, D = x.shape
    G = num.shape[0]
    z = x.view(B, L, G, D // G).permute(2, 0, 1, 3).contiguous().view(G, B * L * D // G)
    m, n = num.shape[1], den.shape[1]
    k = max(m, n)
    powers = [z]
    for _ in range(k - 2):
        powers.append(powers[-1] * z)
    powers.insert(0, torch.ones_like(z))
    powers = torch.stack(powers, dim=1)
    numerator = torch.bmm(num.unsqueeze(1), powers).squeeze(1)
    coeffs = torch.cat(
        [
            torch.ones(G, 1, dtype=den.dtype, device=den.device),
            den,
            torch.zeros(G, max(0, m - n - 1), dtype=den.dtype, device=den.device),
        ],
        dim=1,
    ).abs()
    denominator = torch.bmm(coeffs.unsqueeze(1), powers).squeeze(1)
    y = numerator.div(denominator)
    return y.view(G, B, L, D // G).permute(1, 2, 0, 3).contiguous().view(B, L, D)


@_pm.replacement
def replacement(x, num, den):
    return torch.ops.flashkat.rational_fwd(x, num, den, "signed", "torch")


def _autocast_functions(dtype: str):
    """Search and replacement for KAT's function under ``torch.autocast(dtype)``: its bmm runs in
    ``dtype``, so it returns ``dtype``.  The replacement computes in float32 (more accurately than
    the code's low-precision bmm: the same bound as the low-precision tests) and returns ``dtype``."""
    dt = getattr(torch, dtype)

    def search(x, num, den):
        with torch.autocast(device_type=x.device.type, dtype=dt):
            return kat_reference(x, num, den)

    @_pm.replacement
    def replace(x, num, den):
        return torch.ops.flashkat.rational_fwd(x, num, den, "signed", "torch").to(dt)

    return search, replace


def make_extra_check(key: PatternKey):
    def check(match) -> bool:
        nodes = [match.kwargs.get(k) for k in ("x", "num", "den")]
        if not all(isinstance(nd, Node) for nd in nodes):
            return False
        x, num, den = (val(nd) for nd in nodes)
        if key.autocast:
            if not float_x_and_coefficients(x, [num, den]):
                return False
        elif not same_float_and_device([x, num, den]):
            return False
        if x.dim() != 3 or num.dim() != 2 or den.dim() != 2:
            return False
        if not (static_shape(num) and static_shape(den)):
            return False
        if not static_shape(x) and not dynamic_rewrites_enabled():
            return False
        if (num.shape[1], den.shape[1]) != (key.m, key.n) or num.shape[0] != den.shape[0]:
            return False
        if coefficient_rows_ok(num.shape[0], den.shape[0], x.shape[-1]) is None:
            return False
        log_rewrite(key, num.shape[0], nodes[0])
        return True

    return check


_G0, _X_SHAPE = 4, (3, 5, 4 * 7)


def example_inputs(key: PatternKey):
    gx, gn, gd = key.grads if key.trace == "joint" else (False, False, False)
    dev, dt = key.device, getattr(torch, key.dtype)
    ct = getattr(torch, key.coef_dtype) if key.coef_dtype else dt
    x_shape = (*_X_SHAPE[:-1], _G0) if key.unit_groups else _X_SHAPE  # D = 1 or D = 7
    return [
        torch.empty(x_shape, device=dev, dtype=dt, requires_grad=gx),
        torch.empty(_G0, key.m, device=dev, dtype=ct, requires_grad=gn),
        torch.empty(_G0, key.n, device=dev, dtype=ct, requires_grad=gd),
    ]


@functools.lru_cache(maxsize=None)
def _functions(autocast: str = ""):
    return _autocast_functions(autocast) if autocast else (kat_reference, replacement)


def register_key(key: PatternKey, pass_) -> bool:
    search, replace = _functions(key.autocast)
    return _pm.register(search, replace, example_inputs(key), key.trace, pass_, make_extra_check(key), key.name)
