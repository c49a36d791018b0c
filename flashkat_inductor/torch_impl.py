"""The rational in plain, vectorised PyTorch: the CPU implementation of the ops
(and the fallback for orders the Triton kernels do not cover).

Horner evaluation on a ``(rows, G, D)`` view with ``(G, 1)`` coefficient
columns; rows are processed in chunks of about 2^18 elements, so temporaries
stay in cache and memory is O(N), never a ``(G, m, N)`` tensor of powers.
Arithmetic and accumulation in float32 (float64 for float64 inputs).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .semantics import RationalSpec, check_args, compute_dtype, sign

_CHUNK_ELEMS = 1 << 18  # elements per chunk: 1 MiB of float32 per temporary


def _columns(coeffs: Tensor, groups: int, dtype: torch.dtype) -> list[Tensor]:
    """(Gc, k) -> k tensors of shape (G, 1) (or (1, 1) for a shared row), in dtype."""
    c = coeffs.to(dtype)
    return [c[:, i : i + 1] for i in range(c.shape[1])]


def _horner(cols: list[Tensor], t: Tensor) -> Tensor:
    """sum_i cols[i] t^i, highest coefficient first (no 0 * t term: keeps Inf semantics)."""
    p = cols[-1].expand_as(t)
    for c in reversed(cols[:-1]):
        p = torch.addcmul(c, p, t)
    return p


def _horner_d(cols: list[Tensor], t: Tensor) -> tuple[Tensor, Tensor]:
    """(sum_i cols[i] t^i, its derivative in t)."""
    p = cols[-1].expand_as(t)
    dp = torch.zeros_like(t)
    for c in reversed(cols[:-1]):
        dp = torch.addcmul(p, dp, t)
        p = torch.addcmul(c, p, t)
    return p, dp


def _chunks(rows: int, channels: int):
    step = max(1, _CHUNK_ELEMS // max(1, channels))
    for r0 in range(0, rows, step):
        yield r0, min(rows, r0 + step)


def _den_coeffs(den: Tensor, spec: RationalSpec, dtype) -> list[Tensor]:
    cols = _columns(den, spec.groups, dtype)
    return cols if spec.form == "abs_sum" else [c.abs() for c in cols]


def forward(x: Tensor, numerator: Tensor, denominator: Tensor, form: str) -> Tensor:
    spec = check_args(x, numerator, denominator, form)
    C, G = x.shape[-1], spec.groups
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if x.numel() == 0:
        return out
    cdt = compute_dtype(x.dtype)
    a = _columns(numerator, G, cdt)
    c = _den_coeffs(denominator, spec, cdt)
    xs = x.reshape(-1, G, C // G)
    ys = out.view(-1, G, C // G)
    for r0, r1 in _chunks(xs.shape[0], C):
        xc = xs[r0:r1].to(cdt)
        p = _horner(a, xc)
        t = xc.abs() if form == "safe" else xc
        s = _horner(c, t) * t
        q = 1 + (s.abs() if form == "abs_sum" else s)
        ys[r0:r1] = p / q
    return out


def backward(grad: Tensor, x: Tensor, numerator: Tensor, denominator: Tensor, form: str, zero_sign: str):
    spec = check_args(x, numerator, denominator, form, zero_sign)
    C, G, D = x.shape[-1], spec.groups, x.shape[-1] // spec.groups
    cdt = compute_dtype(x.dtype)
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    da = torch.zeros(G, spec.m, dtype=cdt, device=x.device)
    db = torch.zeros(G, spec.n, dtype=cdt, device=x.device)
    if x.numel() > 0:
        a = _columns(numerator, G, cdt)
        c = _den_coeffs(denominator, spec, cdt)
        xs = x.reshape(-1, G, D)
        gs = grad.expand(x.shape).reshape(-1, G, D)
        dxs = dx.view(-1, G, D)
        for r0, r1 in _chunks(xs.shape[0], C):
            xc = xs[r0:r1].to(cdt)
            gc = gs[r0:r1].to(cdt)
            p, dp = _horner_d(a, xc)
            t = xc.abs() if form == "safe" else xc
            u, du = _horner_d(c, t)
            s = u * t
            ds = torch.addcmul(u, du, t)  # ds/dt
            if form == "abs_sum":
                ks = sign(s, zero_sign)
                q = 1 + s.abs()
                dq = ks * ds
            else:
                q = 1 + s
                dq = sign(xc, zero_sign) * ds if form == "safe" else ds
            gq = gc / q
            r = p / q
            dxs[r0:r1] = gq * (dp - r * dq)
            # reduction-first: one pass of running powers, one per-group sum per coefficient
            pw = gq
            for i in range(spec.m):
                if i:
                    pw = pw * xc
                da[:, i] += pw.sum(dim=2).sum(dim=0)  # inner (contiguous) dim first: a pairwise-like order
            pw = -gq * r * (ks if form == "abs_sum" else 1)
            for j in range(spec.n):
                pw = pw * t
                db[:, j] += pw.sum(dim=2).sum(dim=0)
    if form != "abs_sum":
        db = db * sign(denominator.to(cdt).expand(G, spec.n), zero_sign)
    if spec.num_groups == 1:
        da = da.sum(0, keepdim=True)
    if spec.den_groups == 1:
        db = db.sum(0, keepdim=True)
    return dx, da.to(numerator.dtype), db.to(denominator.dtype)
