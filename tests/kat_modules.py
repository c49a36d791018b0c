"""KAT-style modules for tests: the code shapes the backend must recognise.

The real KAT (``kat_rational``) and FlashKAT packages are not on PyPI, so the
tests build their own modules that behave exactly as
``shared/kat-semantics.md`` describes (sections 1 to 3), quirks included:

``KAT_Group``
    One numerator row ``(1, 6)`` shared by every group, repeated in
    ``forward``; a per-group denominator ``(G, 4)``. ``self.rational`` is an
    *instance attribute*: on ``device="cuda"`` the bound ``apply`` of
    :class:`rational_1dgroup` (an ``autograd.Function`` launching Triton
    kernels: a 1-D elementwise forward and a per-element, 10-atomic-adds
    backward), otherwise :func:`kat_rational_torch`. The instance attribute
    matters: it is what changes how Dynamo captures the Function.
``KAT_Group_Torch``
    The same parameters around :func:`kat_rational_torch`, KAT's pure-PyTorch
    reference: stacked powers and ``bmm``, *signed-x* denominator.
``FlashKAT_Group``
    FlashKAT's layout ``numerator_v (num_groups, m)``, ``denominator_v
    (den_groups, n)`` and its ``autograd.Function``: forward block 128,
    backward on a 2-D grid (64-row tiles x groups) with register partial sums
    and 10 atomic adds per program, row and channel counts ``constexpr``.
``build_kat_vit``
    A small KAT Vision Transformer whose MLPs are KAN layers
    ``rational -> linear -> rational -> dropout -> linear``, with any of the
    modules above (or a factory) as the rational.

The Triton kernels compute the "safe" (abs-x) form with ``sign(v) = -1 if
v < 0 else +1`` for ``x`` and for ``b``, as KAT's kernels do. They run on the
GPU, or on the CPU under ``TRITON_INTERPRET=1`` (set before Triton is
imported; ``tests/conftest.py`` does it when there is no CUDA).

``device="cuda"`` in ``KAT_Group`` only chooses the implementation, as in KAT:
parameters are created on the CPU and moved with the module (``.to``/``.cuda``),
so the Triton path can be exercised on CPU tensors through the interpreter.

These modules are test fixtures written for this project from the description
(no code copied from KAT or FlashKAT).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import triton
import triton.language as tl

from flashkat_inductor.semantics import init_coefficients

__all__ = [
    "rational_fwd_kernel",
    "rational_bwd_kernel",
    "rational_fwd_triton",
    "rational_bwd_triton",
    "rational_1dgroup",
    "kat_rational_torch",
    "KAT_Group",
    "KAT_Group_Torch",
    "flashkat_rational_fwd_kernel",
    "flashkat_rational_bwd_kernel",
    "flashkat_rational_1dgroup",
    "FlashKAT_Group",
    "KATViTConfig",
    "KAT_TINY",
    "KAT_SMALL",
    "KAT_TEST",
    "make_rational",
    "KAN",
    "Attention",
    "Block",
    "KATVisionTransformer",
    "build_kat_vit",
]

# KAT's fixed orders: numerator degree 5 (6 coefficients), denominator 4 terms.
KAT_M, KAT_N = 6, 4


# ============================================================================
# KAT: the autograd.Function and its two Triton kernels
# ============================================================================
@triton.jit
def rational_fwd_kernel(x_ptr, a_ptr, b_ptr, y_ptr, numel, D, D_PER_GROUP, BLOCK: tl.constexpr):
    """y = P(x) / Q(x), safe form, one element per lane.

    Grid: 1-D, ``cdiv(numel, BLOCK)`` programs; ``x`` is read as a flat
    contiguous ``(..., D)`` buffer. ``a`` is ``(G, 6)``, ``b`` is ``(G, 4)``,
    both contiguous; each lane gathers its group's coefficients."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = (offs % D) // D_PER_GROUP
    pa = a_ptr + g * 6
    pb = b_ptr + g * 4
    a0 = tl.load(pa + 0, mask=mask, other=0.0)
    a1 = tl.load(pa + 1, mask=mask, other=0.0)
    a2 = tl.load(pa + 2, mask=mask, other=0.0)
    a3 = tl.load(pa + 3, mask=mask, other=0.0)
    a4 = tl.load(pa + 4, mask=mask, other=0.0)
    a5 = tl.load(pa + 5, mask=mask, other=0.0)
    b0 = tl.abs(tl.load(pb + 0, mask=mask, other=0.0))
    b1 = tl.abs(tl.load(pb + 1, mask=mask, other=0.0))
    b2 = tl.abs(tl.load(pb + 2, mask=mask, other=0.0))
    b3 = tl.abs(tl.load(pb + 3, mask=mask, other=0.0))
    # Horner, highest power first.
    p = tl.fma(a5, x, a4)
    p = tl.fma(p, x, a3)
    p = tl.fma(p, x, a2)
    p = tl.fma(p, x, a1)
    p = tl.fma(p, x, a0)
    ax = tl.abs(x)
    q = tl.fma(b3, ax, b2)
    q = tl.fma(q, ax, b1)
    q = tl.fma(q, ax, b0)
    q = tl.fma(q, ax, 1.0)
    tl.store(y_ptr + offs, p / q, mask=mask)


@triton.jit
def rational_bwd_kernel(dy_ptr, x_ptr, a_ptr, b_ptr, dx_ptr, da_ptr, db_ptr, numel, D, D_PER_GROUP,
                        BLOCK: tl.constexpr):
    """dx per element, and every element's 10 coefficient terms atomically
    added into float32 ``da (G, 6)`` and ``db (G, 4)``.

    Grid: 1-D, ``cdiv(numel, BLOCK)`` programs. ``dy`` is indexed as if it were
    contiguous, as KAT does (an expanded gradient is read out of bounds). P is
    evaluated term by term here, as in KAT's backward."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = (offs % D) // D_PER_GROUP
    pa = a_ptr + g * 6
    pb = b_ptr + g * 4
    a0 = tl.load(pa + 0, mask=mask, other=0.0)
    a1 = tl.load(pa + 1, mask=mask, other=0.0)
    a2 = tl.load(pa + 2, mask=mask, other=0.0)
    a3 = tl.load(pa + 3, mask=mask, other=0.0)
    a4 = tl.load(pa + 4, mask=mask, other=0.0)
    a5 = tl.load(pa + 5, mask=mask, other=0.0)
    b0 = tl.load(pb + 0, mask=mask, other=0.0)
    b1 = tl.load(pb + 1, mask=mask, other=0.0)
    b2 = tl.load(pb + 2, mask=mask, other=0.0)
    b3 = tl.load(pb + 3, mask=mask, other=0.0)
    c0 = tl.abs(b0)
    c1 = tl.abs(b1)
    c2 = tl.abs(b2)
    c3 = tl.abs(b3)

    x2 = x * x
    x3 = x2 * x
    x4 = x3 * x
    x5 = x4 * x
    t = tl.abs(x)
    t2 = t * t
    t3 = t2 * t
    t4 = t3 * t

    p = a0 + a1 * x + a2 * x2 + a3 * x3 + a4 * x4 + a5 * x5
    q = 1.0 + c0 * t + c1 * t2 + c2 * t3 + c3 * t4
    dp = a1 + 2.0 * a2 * x + 3.0 * a3 * x2 + 4.0 * a4 * x3 + 5.0 * a5 * x4
    sx = tl.where(x < 0, -1.0, 1.0)  # sign(0) = +1
    dq = sx * (c0 + 2.0 * c1 * t + 3.0 * c2 * t2 + 4.0 * c3 * t3)

    rq = 1.0 / q
    dx = dy * (dp * rq - p * dq * rq * rq)
    tl.store(dx_ptr + offs, dx, mask=mask)

    gq = dy * rq
    pg = g * 6
    tl.atomic_add(da_ptr + pg + 0, gq, mask=mask)
    tl.atomic_add(da_ptr + pg + 1, gq * x, mask=mask)
    tl.atomic_add(da_ptr + pg + 2, gq * x2, mask=mask)
    tl.atomic_add(da_ptr + pg + 3, gq * x3, mask=mask)
    tl.atomic_add(da_ptr + pg + 4, gq * x4, mask=mask)
    tl.atomic_add(da_ptr + pg + 5, gq * x5, mask=mask)
    w = -dy * p * rq * rq
    pgb = g * 4
    tl.atomic_add(db_ptr + pgb + 0, w * tl.where(b0 < 0, -1.0, 1.0) * t, mask=mask)
    tl.atomic_add(db_ptr + pgb + 1, w * tl.where(b1 < 0, -1.0, 1.0) * t2, mask=mask)
    tl.atomic_add(db_ptr + pgb + 2, w * tl.where(b2 < 0, -1.0, 1.0) * t3, mask=mask)
    tl.atomic_add(db_ptr + pgb + 3, w * tl.where(b3 < 0, -1.0, 1.0) * t4, mask=mask)


def rational_fwd_triton(x, num, den, group):
    """Launch KAT's forward kernel: returns ``P/Q`` in a new ``empty_like(x)``."""
    D = x.shape[-1]
    numel = x.numel()
    y = torch.empty_like(x)
    block = 256
    rational_fwd_kernel[(triton.cdiv(numel, block),)](x, num, den, y, numel, D, D // group, BLOCK=block)
    return y


def rational_bwd_triton(grad_output, x, num, den, group):
    """Launch KAT's backward kernel: ``(dx, dnum (G, 6) fp32, dden (G, 4) fp32)``."""
    D = x.shape[-1]
    numel = x.numel()
    dx = torch.empty_like(x)
    dnum = torch.zeros_like(num, dtype=torch.float32)
    dden = torch.zeros_like(den, dtype=torch.float32)
    block = 256
    rational_bwd_kernel[(triton.cdiv(numel, block),)](
        grad_output, x, num, den, dx, dnum, dden, numel, D, D // group, BLOCK=block
    )
    return dx, dnum, dden


class rational_1dgroup(torch.autograd.Function):  # noqa: N801 (KAT's naming)
    """KAT's Function: ``(input, num (G, 6), den (G, 4), group) -> P/Q``.

    Under CUDA autocast ``custom_fwd`` casts the floating inputs to float32 and
    runs ``forward`` with autocast off; ``custom_bwd`` runs ``backward`` under
    the forward's autocast state."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, input, weight_numerator, weight_denominator, group):
        ctx.save_for_backward(input, weight_numerator, weight_denominator)
        ctx.group = group
        return rational_fwd_triton(input, weight_numerator, weight_denominator, group)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_output):
        input, weight_numerator, weight_denominator = ctx.saved_tensors
        dx, dnum, dden = rational_bwd_triton(grad_output, input, weight_numerator, weight_denominator, ctx.group)
        return dx, dnum, dden, None


# ============================================================================
# KAT: the pure-PyTorch reference (signed-x denominator)
# ============================================================================
def kat_rational_torch(x, weight_numerator, weight_denominator, group):
    """KAT's CPU function, for ``x`` of shape ``(B, L, D)``.

    Its docstring (in KAT) promises the safe form, but it raises *signed* x to
    the powers: ``Q = 1 + sum_j |b_j| x^(j+1)``, which differs from the kernels
    for ``x < 0`` and can reach 0. Kept as is: it is a shape to recognise."""
    B, L, D = x.shape
    G = group
    z = x.view(B, L, G, D // G).permute(2, 0, 1, 3).contiguous().view(G, B * L * D // G)

    m = weight_numerator.shape[1]
    n = weight_denominator.shape[1]
    k = max(m, n)
    powers = [z]
    for _ in range(k - 2):
        powers.append(powers[-1] * z)
    powers.insert(0, torch.ones_like(z))
    powers = torch.stack(powers, dim=1)  # (G, k, N)

    numerator = torch.bmm(weight_numerator.unsqueeze(1), powers).squeeze(1)
    den_coeffs = torch.cat(
        [
            torch.ones(G, 1, dtype=weight_denominator.dtype, device=weight_denominator.device),
            weight_denominator,
            torch.zeros(G, max(0, m - n - 1), dtype=weight_denominator.dtype, device=weight_denominator.device),
        ],
        dim=1,
    ).abs()
    denominator = torch.bmm(den_coeffs.unsqueeze(1), powers).squeeze(1)

    y = numerator.div(denominator)
    return y.view(G, B, L, D // G).permute(1, 2, 0, 3).contiguous().view(B, L, D)


# ============================================================================
# KAT's modules
# ============================================================================
def _kat_params(module: nn.Module, num_groups: int, mode: str) -> None:
    num, den = init_coefficients(mode)
    module.weight_numerator = nn.Parameter(torch.tensor([num], dtype=torch.float32))  # (1, 6)
    module.weight_denominator = nn.Parameter(
        torch.tensor([den], dtype=torch.float32).repeat(num_groups, 1)
    )  # (G, 4)


class KAT_Group(nn.Module):  # noqa: N801 (KAT's naming)
    """KAT's group-rational activation.

    ``device="cuda"`` selects the Triton ``autograd.Function`` (its bound
    ``apply`` stored on the instance), anything else KAT's pure-PyTorch
    function. Parameters stay where the module is put."""

    def __init__(self, num_groups: int = 8, mode: str = "gelu", device: str = "cuda"):
        super().__init__()
        self.order = (KAT_M - 1, KAT_N)
        self.num_groups = num_groups
        self.mode = mode
        _kat_params(self, num_groups, mode)
        if device == "cuda":
            self.rational = rational_1dgroup.apply
        else:
            self.rational = kat_rational_torch

    def forward(self, input):
        assert input.dim() in (2, 3), "KAT_Group: input must be (B, L, C) or (B, C)"
        weight_numerator = self.weight_numerator.repeat(self.num_groups, 1)
        return self.rational(input, weight_numerator, self.weight_denominator, self.num_groups)

    def extra_repr(self) -> str:
        return f"num_groups={self.num_groups}, order={self.order}, mode={self.mode!r}"


class KAT_Group_Torch(nn.Module):  # noqa: N801
    """KAT's parameters around its pure-PyTorch (signed-x) function."""

    def __init__(self, num_groups: int = 8, mode: str = "gelu"):
        super().__init__()
        self.order = (KAT_M - 1, KAT_N)
        self.num_groups = num_groups
        self.mode = mode
        _kat_params(self, num_groups, mode)

    def forward(self, input):
        weight_numerator = self.weight_numerator.repeat(self.num_groups, 1)
        return kat_rational_torch(input, weight_numerator, self.weight_denominator, self.num_groups)

    def extra_repr(self) -> str:
        return f"num_groups={self.num_groups}, order={self.order}, mode={self.mode!r}"


# ============================================================================
# FlashKAT: the autograd.Function and its kernels
# ============================================================================
@triton.jit
def flashkat_rational_fwd_kernel(x_ptr, a_ptr, b_ptr, y_ptr, numel, D, D_PER_GROUP, BLOCK: tl.constexpr):
    """Same arithmetic as KAT's forward (safe form, Horner with fma).

    Grid: 1-D, ``cdiv(numel, BLOCK)`` programs of BLOCK = 128 elements."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = (offs % D) // D_PER_GROUP
    pa = a_ptr + g * 6
    pb = b_ptr + g * 4
    p = tl.load(pa + 5, mask=mask, other=0.0)
    p = tl.fma(p, x, tl.load(pa + 4, mask=mask, other=0.0))
    p = tl.fma(p, x, tl.load(pa + 3, mask=mask, other=0.0))
    p = tl.fma(p, x, tl.load(pa + 2, mask=mask, other=0.0))
    p = tl.fma(p, x, tl.load(pa + 1, mask=mask, other=0.0))
    p = tl.fma(p, x, tl.load(pa + 0, mask=mask, other=0.0))
    ax = tl.abs(x)
    q = tl.abs(tl.load(pb + 3, mask=mask, other=0.0))
    q = tl.fma(q, ax, tl.abs(tl.load(pb + 2, mask=mask, other=0.0)))
    q = tl.fma(q, ax, tl.abs(tl.load(pb + 1, mask=mask, other=0.0)))
    q = tl.fma(q, ax, tl.abs(tl.load(pb + 0, mask=mask, other=0.0)))
    q = tl.fma(q, ax, 1.0)
    tl.store(y_ptr + offs, p / q, mask=mask)


@triton.jit
def flashkat_rational_bwd_kernel(dy_ptr, x_ptr, a_ptr, b_ptr, dx_ptr, da_ptr, db_ptr,
                                 ROWS: tl.constexpr, D: tl.constexpr, D_PER_GROUP: tl.constexpr,
                                 BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """dx, and the group's coefficient gradients reduced in registers first.

    Grid: 2-D, ``(cdiv(ROWS, BLOCK_R), G)``: program ``(r, g)`` owns rows
    ``[r * BLOCK_R, (r + 1) * BLOCK_R)`` of group ``g``, walks them in sub-blocks of
    16 rows (BLOCK_R a multiple of 16) and the group's ``D_PER_GROUP`` channels in
    tiles of BLOCK_C, keeping 10 (16, BLOCK_C) partial-sum tiles; it ends with 10
    scalar atomic adds. ROWS and D are constexpr (a new kernel per batch size), as in
    FlashKAT.  (FlashKAT's own backward likewise walks its row block in sub-blocks, BLOCK_M_OUT of
    BLOCK_M_IN rows.  Ten (64, 64) float32 tiles, 320 values per thread at 4 warps,
    lived in local memory once the channel loop ran more than once: thousands of
    STL / LDL in the sm_90 build at 96 channels per group, none with 16-row
    sub-blocks.)"""
    pid_r = tl.program_id(0)
    g = tl.program_id(1)

    a0 = tl.load(a_ptr + g * 6 + 0)
    a1 = tl.load(a_ptr + g * 6 + 1)
    a2 = tl.load(a_ptr + g * 6 + 2)
    a3 = tl.load(a_ptr + g * 6 + 3)
    a4 = tl.load(a_ptr + g * 6 + 4)
    a5 = tl.load(a_ptr + g * 6 + 5)
    b0 = tl.load(b_ptr + g * 4 + 0)
    b1 = tl.load(b_ptr + g * 4 + 1)
    b2 = tl.load(b_ptr + g * 4 + 2)
    b3 = tl.load(b_ptr + g * 4 + 3)
    c0 = tl.abs(b0)
    c1 = tl.abs(b1)
    c2 = tl.abs(b2)
    c3 = tl.abs(b3)

    s_a0 = tl.zeros([16, BLOCK_C], dtype=tl.float32)
    s_a1 = tl.zeros([16, BLOCK_C], dtype=tl.float32)
    s_a2 = tl.zeros([16, BLOCK_C], dtype=tl.float32)
    s_a3 = tl.zeros([16, BLOCK_C], dtype=tl.float32)
    s_a4 = tl.zeros([16, BLOCK_C], dtype=tl.float32)
    s_a5 = tl.zeros([16, BLOCK_C], dtype=tl.float32)
    s_b0 = tl.zeros([16, BLOCK_C], dtype=tl.float32)
    s_b1 = tl.zeros([16, BLOCK_C], dtype=tl.float32)
    s_b2 = tl.zeros([16, BLOCK_C], dtype=tl.float32)
    s_b3 = tl.zeros([16, BLOCK_C], dtype=tl.float32)

    for r_start in range(0, BLOCK_R, 16):
        rows = pid_r * BLOCK_R + r_start + tl.arange(0, 16)
        rmask = rows < ROWS
        for c_start in range(0, D_PER_GROUP, BLOCK_C):
            cin = c_start + tl.arange(0, BLOCK_C)
            cmask = cin < D_PER_GROUP
            offs = rows[:, None] * D + (g * D_PER_GROUP + cin)[None, :]
            mask = rmask[:, None] & cmask[None, :]
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)

            x2 = x * x
            x3 = x2 * x
            x4 = x3 * x
            x5 = x4 * x
            t = tl.abs(x)
            t2 = t * t
            t3 = t2 * t
            t4 = t3 * t
            p = a0 + a1 * x + a2 * x2 + a3 * x3 + a4 * x4 + a5 * x5
            q = 1.0 + c0 * t + c1 * t2 + c2 * t3 + c3 * t4
            dp = a1 + 2.0 * a2 * x + 3.0 * a3 * x2 + 4.0 * a4 * x3 + 5.0 * a5 * x4
            sx = tl.where(x < 0, -1.0, 1.0)
            dq = sx * (c0 + 2.0 * c1 * t + 3.0 * c2 * t2 + 4.0 * c3 * t3)
            rq = 1.0 / q
            dx = dy * (dp * rq - p * dq * rq * rq)
            tl.store(dx_ptr + offs, dx, mask=mask)

            # Masked lanes have dy = 0, so they add nothing.
            gq = dy * rq
            s_a0 += gq
            s_a1 += gq * x
            s_a2 += gq * x2
            s_a3 += gq * x3
            s_a4 += gq * x4
            s_a5 += gq * x5
            w = -dy * p * rq * rq
            s_b0 += w * t
            s_b1 += w * t2
            s_b2 += w * t3
            s_b3 += w * t4

    tl.atomic_add(da_ptr + g * 6 + 0, tl.sum(tl.sum(s_a0, axis=1), axis=0))
    tl.atomic_add(da_ptr + g * 6 + 1, tl.sum(tl.sum(s_a1, axis=1), axis=0))
    tl.atomic_add(da_ptr + g * 6 + 2, tl.sum(tl.sum(s_a2, axis=1), axis=0))
    tl.atomic_add(da_ptr + g * 6 + 3, tl.sum(tl.sum(s_a3, axis=1), axis=0))
    tl.atomic_add(da_ptr + g * 6 + 4, tl.sum(tl.sum(s_a4, axis=1), axis=0))
    tl.atomic_add(da_ptr + g * 6 + 5, tl.sum(tl.sum(s_a5, axis=1), axis=0))
    tl.atomic_add(db_ptr + g * 4 + 0, tl.sum(tl.sum(s_b0, axis=1), axis=0) * tl.where(b0 < 0, -1.0, 1.0))
    tl.atomic_add(db_ptr + g * 4 + 1, tl.sum(tl.sum(s_b1, axis=1), axis=0) * tl.where(b1 < 0, -1.0, 1.0))
    tl.atomic_add(db_ptr + g * 4 + 2, tl.sum(tl.sum(s_b2, axis=1), axis=0) * tl.where(b2 < 0, -1.0, 1.0))
    tl.atomic_add(db_ptr + g * 4 + 3, tl.sum(tl.sum(s_b3, axis=1), axis=0) * tl.where(b3 < 0, -1.0, 1.0))


class flashkat_rational_1dgroup(torch.autograd.Function):  # noqa: N801
    """FlashKAT's Function: ``(input (B, L, D), num (G, 6), den (G, 4), group)``."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, input, weight_numerator, weight_denominator, group):
        ctx.save_for_backward(input, weight_numerator, weight_denominator)
        ctx.group = group
        D = input.shape[-1]
        numel = input.numel()
        y = torch.empty_like(input)
        block = 128
        flashkat_rational_fwd_kernel[(triton.cdiv(numel, block),)](
            input, weight_numerator, weight_denominator, y, numel, D, D // group, BLOCK=block
        )
        return y

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_output):
        input, weight_numerator, weight_denominator = ctx.saved_tensors
        group = ctx.group
        grad_output = grad_output.contiguous()
        B, L, D = input.shape
        rows = B * L
        dx = torch.empty_like(input)
        dnum = torch.zeros_like(weight_numerator, dtype=torch.float32)
        dden = torch.zeros_like(weight_denominator, dtype=torch.float32)
        block_r, block_c = 64, 64  # the kernel walks block_r in 16-row sub-blocks
        flashkat_rational_bwd_kernel[(triton.cdiv(rows, block_r), group)](
            grad_output, input, weight_numerator, weight_denominator, dx, dnum, dden,
            ROWS=rows, D=D, D_PER_GROUP=D // group, BLOCK_R=block_r, BLOCK_C=block_c,
        )
        return dx, dnum, dden, None


class FlashKAT_Group(nn.Module):  # noqa: N801 (FlashKAT's naming)
    """FlashKAT's group-rational activation: ``(B, L, in_features)`` input."""

    def __init__(self, in_features: int, num_groups: int = 1, den_groups: int = 8, m: int = 6, n: int = 4,
                 mode: str = "gelu"):
        super().__init__()
        if (m, n) != (KAT_M, KAT_N):
            raise NotImplementedError(f"FlashKAT_Group: only m=6, n=4 are implemented, got m={m}, n={n}")
        groups = max(num_groups, den_groups)
        if num_groups not in (1, groups) or den_groups not in (1, groups):
            raise ValueError(f"FlashKAT_Group: num_groups={num_groups} and den_groups={den_groups} must each be 1 "
                             "or equal")
        self.in_features = in_features
        self.num_groups = num_groups
        self.den_groups = den_groups
        self.m, self.n = m, n
        self.mode = mode
        num, den = init_coefficients(mode)
        self.numerator_v = nn.Parameter(torch.tensor([num], dtype=torch.float32).repeat(num_groups, 1))
        self.denominator_v = nn.Parameter(torch.tensor([den], dtype=torch.float32).repeat(den_groups, 1))

    def forward(self, x):
        assert x.dim() == 3, "FlashKAT_Group: input must be 3-D (B, L, C)"
        num, den = self.numerator_v, self.denominator_v
        if self.num_groups == 1 and self.den_groups > 1:
            num = num.repeat(self.den_groups, 1)
        if self.den_groups == 1 and self.num_groups > 1:
            den = den.repeat(self.num_groups, 1)
        group = max(self.num_groups, self.den_groups)
        return flashkat_rational_1dgroup.apply(x, num, den, group)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_groups={self.num_groups}, den_groups={self.den_groups}, "
                f"m={self.m}, n={self.n}, mode={self.mode!r}")


# ============================================================================
# A small KAT Vision Transformer
# ============================================================================
class KATViTConfig:
    """Shape of a KAT ViT. KAT-T/KAT-S as in the paper; KAT_TEST for CPU tests."""

    def __init__(self, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0, img_size=224, patch_size=16,
                 in_chans=3, num_classes=1000, num_groups=8, drop=0.0):
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_groups = num_groups
        self.drop = drop

    def replace(self, **kw) -> "KATViTConfig":
        d = dict(vars(self))
        d.update(kw)
        return KATViTConfig(**d)

    def __repr__(self) -> str:
        return "KATViTConfig(" + ", ".join(f"{k}={v!r}" for k, v in vars(self).items()) + ")"


KAT_TINY = KATViTConfig(embed_dim=192, depth=12, num_heads=3)
KAT_SMALL = KATViTConfig(embed_dim=384, depth=12, num_heads=6)
# Tiny enough for CPU tests: 16x16 images, 4x4 patches -> 17 tokens of 32 channels
# (4 channels per group before fc1, 16 after).
KAT_TEST = KATViTConfig(embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0, img_size=16, patch_size=4,
                        num_classes=10)

RationalSpecifier = Union[str, type, Callable[..., nn.Module]]


def make_rational(rational: RationalSpecifier, features: int, mode: str, num_groups: int = 8,
                  device: str = "cuda") -> nn.Module:
    """One rational activation over ``features`` channels initialised as ``mode``.

    ``rational`` is ``"kat"`` / :class:`KAT_Group` (Triton Function when
    ``device == "cuda"``, else KAT's torch function, exactly as KAT chooses),
    ``"kat_torch"`` / :class:`KAT_Group_Torch`, ``"flashkat"`` /
    :class:`FlashKAT_Group` (shared numerator, ``num_groups`` denominators), or
    any callable ``factory(features, mode) -> nn.Module``."""
    if rational in ("kat", KAT_Group):
        return KAT_Group(num_groups=num_groups, mode=mode, device=device)
    if rational in ("kat_torch", KAT_Group_Torch):
        return KAT_Group_Torch(num_groups=num_groups, mode=mode)
    if rational in ("flashkat", FlashKAT_Group):
        return FlashKAT_Group(features, num_groups=1, den_groups=num_groups, mode=mode)
    if isinstance(rational, str):
        raise ValueError(f"make_rational: unknown rational {rational!r}; expected 'kat', 'kat_torch', 'flashkat', "
                         "a module class or a factory(features, mode)")
    return rational(features, mode)


class KAN(nn.Module):
    """KAT's MLP: ``rational(identity) -> fc1 -> rational(gelu) -> dropout -> fc2``."""

    def __init__(self, dim: int, hidden: int, rational: RationalSpecifier = "kat", num_groups: int = 8,
                 drop: float = 0.0, device: str = "cuda"):
        super().__init__()
        self.act1 = make_rational(rational, dim, "identity", num_groups, device)
        self.fc1 = nn.Linear(dim, hidden)
        self.act2 = make_rational(rational, hidden, "gelu", num_groups, device)
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        x = self.act1(x)
        x = self.fc1(x)
        x = self.act2(x)
        x = self.drop(x)
        return self.fc2(x)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        assert dim % num_heads == 0, f"Attention: dim {dim} not divisible by num_heads {num_heads}"
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, L, C = x.shape
        qkv = self.qkv(x).reshape(B, L, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, L, C))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, rational: RationalSpecifier,
                 num_groups: int, drop: float, device: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = KAN(dim, int(dim * mlp_ratio), rational, num_groups, drop, device)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class KATVisionTransformer(nn.Module):
    """Conv patch embedding, cls token + learned position embedding, KAN blocks,
    final LayerNorm, linear head on the cls token."""

    def __init__(self, cfg: KATViTConfig = KAT_TINY, rational: RationalSpecifier = "kat", device: str = "cuda"):
        super().__init__()
        self.cfg = cfg
        assert cfg.img_size % cfg.patch_size == 0, "image size must be a multiple of the patch size"
        num_patches = (cfg.img_size // cfg.patch_size) ** 2
        D = cfg.embed_dim
        self.patch_embed = nn.Conv2d(cfg.in_chans, D, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, D))
        self.pos_drop = nn.Dropout(cfg.drop)
        self.blocks = nn.Sequential(*[
            Block(D, cfg.num_heads, cfg.mlp_ratio, rational, cfg.num_groups, cfg.drop, device)
            for _ in range(cfg.depth)
        ])
        self.norm = nn.LayerNorm(D, eps=1e-6)
        self.head = nn.Linear(D, cfg.num_classes)
        self._init_weights()

    def _init_weights(self):
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                nn.init.trunc_normal_(mod.weight, std=0.02)
                nn.init.zeros_(mod.bias)
        w = self.patch_embed.weight
        nn.init.uniform_(w, -1 / math.sqrt(w[0].numel()), 1 / math.sqrt(w[0].numel()))

    def forward(self, images):
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self.pos_embed)
        x = self.blocks(x)
        x = self.norm(x)
        return self.head(x[:, 0])


def build_kat_vit(cfg: Optional[KATViTConfig] = None, rational: RationalSpecifier = "kat", device: str = "cuda",
                  **overrides) -> KATVisionTransformer:
    """A KAT ViT. ``cfg`` defaults to KAT-T; keyword ``overrides`` replace config
    fields (``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio``, ``img_size``,
    ``patch_size``, ``num_classes``, ``num_groups``, ``drop``...). ``device``
    is KAT's ``device`` argument of ``KAT_Group`` (it picks the Triton Function
    on ``"cuda"``); the model is built on the CPU: move it with ``.to``."""
    cfg = (cfg or KAT_TINY).replace(**overrides) if overrides else (cfg or KAT_TINY)
    return KATVisionTransformer(cfg, rational=rational, device=device)
