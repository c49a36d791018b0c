"""The group-rational activation (GR-KAN), defined once.

Every other layer of the project (the eager PyTorch implementation, the Triton
kernels, the Inductor lowerings, the pattern rewrites) is tested against the
float64 reference in this module.

The function
------------
``x`` has shape ``(..., C)``: channels last, ``G`` groups, ``C % G == 0``,
channel ``c`` belongs to group ``g(c) = c // (C // G)``.  The numerator
coefficients ``a`` have shape ``(Gn, m)`` and the denominator coefficients
``b`` shape ``(Gd, n)``, where each of ``Gn`` and ``Gd`` is 1 (one row shared
by every group) or ``G``, and ``G = max(Gn, Gd)``::

    P(x) = sum_{i<m} a[g, i] x^i
    y    = P(x) / Q(x)

with one of three denominators (they are different functions):

=========== ======================================== =========================
form        Q(x)                                     where it occurs
=========== ======================================== =========================
``safe``    ``1 + sum_j |b[g, j]| |x|^(j+1)``        KAT / FlashKAT kernels
``signed``  ``1 + sum_j |b[g, j]| x^(j+1)``          KAT's pure-PyTorch code
``abs_sum`` ``1 + |sum_j b[g, j] x^(j+1)|``          Pade Activation Unit "B"
=========== ======================================== =========================

The sign of ``|.|`` at exactly zero is part of the semantics:
``zero_sign="torch"`` uses ``sign(0) = 0`` (PyTorch autograd of ``abs``),
``zero_sign="kat"`` uses ``sign(v) = -1 if v < 0 else +1`` (KAT's and
FlashKAT's kernels), for ``x``, for ``b`` and for the inner sum of ``abs_sum``.
With KAT's ``identity`` initialisation every ``b_j`` is 0: under ``"torch"``
those coefficients get zero gradient forever, under ``"kat"`` they train.

Gradients, written with ``t = |x|`` (safe) or ``t = x`` (signed, abs_sum),
``s = sum_j c_j t^(j+1)`` where ``c_j = |b_j|`` (safe, signed) or ``b_j``
(abs_sum), ``P' = dP/dx`` and ``Q' = dQ/dx``::

    dx   = dy * (P' / Q - P Q' / Q^2)
    da_i = sum over the group's elements of  dy x^i / Q
    db_j = sum over the group's elements of -dy P / Q^2 * t^(j+1) * k_j

with ``k_j = sign(b_j)`` (safe, signed) or ``sign(s)`` (abs_sum, per element),
and ``Q' = sign(x) ds/dt`` (safe), ``ds/dx`` (signed), ``sign(s) ds/dx``
(abs_sum).  A coefficient row shared by every group gets the sum over groups.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os

import torch
from torch import Tensor

FORMS = ("safe", "signed", "abs_sum")
ZERO_SIGNS = ("torch", "kat")
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "kat_init_coefficients.json")


# ----------------------------------------------------------------------------
# The static description of one rational site
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RationalSpec:
    """Everything about a call that is not data: what kernels specialise on."""

    form: str
    zero_sign: str
    groups: int  # G = max(num_groups, den_groups)
    num_groups: int  # Gn: 1 (shared) or G
    den_groups: int  # Gd: 1 (shared) or G
    m: int  # numerator length (degree m - 1)
    n: int  # denominator length (powers 1..n)


def check_form(form, zero_sign="torch") -> None:
    if form not in FORMS:
        raise ValueError(f"flashkat rational: form must be one of {FORMS}, got {form!r}")
    if zero_sign not in ZERO_SIGNS:
        raise ValueError(f"flashkat rational: zero_sign must be one of {ZERO_SIGNS}, got {zero_sign!r}")


def _check_float(name: str, t) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"flashkat rational: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"flashkat rational: {name} has dtype {t.dtype}; expected one of "
            "float16, bfloat16, float32, float64"
        )


def check_args(x, numerator, denominator, form="safe", zero_sign="torch") -> RationalSpec:
    """Validate a call; return its spec or raise an error naming what is wrong.

    Works on real, fake and symbolic-shaped tensors (it only reads metadata)."""
    check_form(form, zero_sign)
    _check_float("x", x)
    _check_float("numerator", numerator)
    _check_float("denominator", denominator)
    if x.dim() < 1:
        raise ValueError("flashkat rational: x must have at least 1 dimension (channels last), got a 0-d tensor")
    for name, t in (("numerator", numerator), ("denominator", denominator)):
        if t.dim() != 2:
            raise ValueError(
                f"flashkat rational: {name} must be 2-D (groups, coefficients), got shape {tuple(t.shape)}"
            )
        if t.shape[1] < 1:
            raise ValueError(f"flashkat rational: {name} needs at least one coefficient, got shape {tuple(t.shape)}")
        if t.shape[0] < 1:
            raise ValueError(f"flashkat rational: {name} needs at least one group row, got shape {tuple(t.shape)}")
    gn, gd = int(numerator.shape[0]), int(denominator.shape[0])
    groups = max(gn, gd)
    if gn not in (1, groups) or gd not in (1, groups):
        raise ValueError(
            f"flashkat rational: numerator has {gn} group rows and denominator {gd}; each must be 1 "
            f"(shared by all groups) or the group count {groups}"
        )
    channels = x.shape[-1]
    if channels % groups != 0:
        raise ValueError(
            f"flashkat rational: the {channels} channels of x (its last dimension, shape {tuple(x.shape)}) "
            f"are not divisible by the {groups} groups"
        )
    devs = {x.device, numerator.device, denominator.device}
    if len(devs) != 1:
        raise ValueError(
            "flashkat rational: x, numerator and denominator must be on one device, got "
            f"x on {x.device}, numerator on {numerator.device}, denominator on {denominator.device}"
        )
    return RationalSpec(form, zero_sign, groups, gn, gd, int(numerator.shape[1]), int(denominator.shape[1]))


def compute_dtype(x_dtype: torch.dtype) -> torch.dtype:
    """Arithmetic and accumulation dtype: float64 for float64 inputs, float32 otherwise."""
    return torch.float64 if x_dtype == torch.float64 else torch.float32


def sign(v: Tensor, zero_sign: str) -> Tensor:
    """sign(v) under a convention: "torch" gives sign(0) = 0, "kat" gives +1 (and +1 for NaN)."""
    if zero_sign == "torch":
        return torch.sign(v)
    return torch.where(v < 0, -torch.ones_like(v), torch.ones_like(v))


# ----------------------------------------------------------------------------
# Float64 reference: term by term with explicit powers (deliberately not Horner,
# so it checks the Horner evaluations rather than repeating them)
# ----------------------------------------------------------------------------
def _per_channel(coeffs: Tensor, groups: int, channels: int) -> Tensor:
    """(Gc, k) -> (C, k): the coefficient row of each channel's group."""
    rows = coeffs.expand(groups, coeffs.shape[1]) if coeffs.shape[0] == 1 else coeffs
    return rows.repeat_interleave(channels // groups, dim=0)


def _ref_parts(x, numerator, denominator, form):
    spec = check_args(x, numerator, denominator, form)
    C, G = x.shape[-1], spec.groups
    x = x.double()
    a = _per_channel(numerator.double(), G, C)  # (C, m)
    b = _per_channel(denominator.double(), G, C)  # (C, n)
    t = x.abs() if form == "safe" else x
    c = b if form == "abs_sum" else b.abs()
    P = sum(a[:, i] * x**i for i in range(spec.m))
    dP = sum(i * a[:, i] * x ** (i - 1) for i in range(1, spec.m)) if spec.m > 1 else torch.zeros_like(x)
    s = sum(c[:, j] * t ** (j + 1) for j in range(spec.n))
    ds = sum((j + 1) * c[:, j] * t**j for j in range(spec.n))  # ds/dt
    return spec, x, t, b, P, dP, s, ds


def reference_forward(x: Tensor, numerator: Tensor, denominator: Tensor, form: str = "safe") -> Tensor:
    """y = P(x) / Q(x) in float64."""
    _, _, _, _, P, _, s, _ = _ref_parts(x, numerator, denominator, form)
    Q = 1 + (s.abs() if form == "abs_sum" else s)
    return P / Q


def reference_backward(grad, x, numerator, denominator, form="safe", zero_sign="torch"):
    """(dx, dnumerator, ddenominator) in float64 from the closed-form gradients."""
    spec, xd, t, b, P, dP, s, ds = _ref_parts(x, numerator, denominator, form)
    g = grad.double().expand(x.shape)
    C, G = x.shape[-1], spec.groups
    if form == "abs_sum":
        Q = 1 + s.abs()
        ks = sign(s, zero_sign)
        dQ = ks * ds
    else:
        Q = 1 + s
        dQ = sign(xd, zero_sign) * ds if form == "safe" else ds
    dx = g * (dP / Q - P * dQ / Q**2)

    rows = 1
    for size in x.shape[:-1]:
        rows *= size

    def per_group(v):  # (..., C) -> (G,): sum over every element of each group
        return v.reshape(rows, G, C // G).sum(dim=(0, 2))  # rows, not -1: C may be 0

    gq = g / Q
    da = torch.stack([per_group(gq * xd**i) for i in range(spec.m)], dim=1)  # (G, m)
    w = -g * P / Q**2
    if form == "abs_sum":
        db = torch.stack([per_group(w * ks * t ** (j + 1)) for j in range(spec.n)], dim=1)
    else:
        bg = denominator.double().expand(G, spec.n)  # (G, n) per-group rows (C may be 0)
        db = torch.stack([per_group(w * t ** (j + 1)) for j in range(spec.n)], dim=1) * sign(bg, zero_sign)
    if spec.num_groups == 1:
        da = da.sum(0, keepdim=True)
    if spec.den_groups == 1:
        db = db.sum(0, keepdim=True)
    return dx, da, db


# ----------------------------------------------------------------------------
# KAT's fitted initial coefficients
# ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _init_table() -> dict:
    with open(_DATA) as f:
        return json.load(f)


def init_modes() -> tuple:
    """Names of KAT's initialisation modes (identity, gelu, swish, ...)."""
    return tuple(_init_table())


def init_coefficients(mode: str = "gelu") -> tuple:
    """(numerator, denominator) float lists KAT ships for ``mode`` (m = 6, n = 4)."""
    table = _init_table()
    if mode not in table:
        raise ValueError(f"flashkat: unknown initialisation mode {mode!r}; expected one of {sorted(table)}")
    return list(table[mode]["numerator"]), list(table[mode]["denominator"])
