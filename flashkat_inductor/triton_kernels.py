"""Eager Triton kernels for the group-rational activation (forward and backward).

The math (forms, ``zero_sign`` conventions, the float64 reference) lives in
``semantics.py``; these kernels compute exactly that, for every form, every
``zero_sign``, shared or per-group coefficient rows and ``m, n <= MAX_COEFFS``.

How is each kernel parallelised?
--------------------------------
``x`` of shape ``(..., C)`` is viewed as ``(R, C)`` (``x.reshape(-1, C)``,
both strides passed, so an expanded or strided ``grad`` is read in place).
Channel ``c`` belongs to group ``c // D`` with ``D = C // G``.

Forward, ``_rational_fwd_kernel``: elementwise over 2-D tiles.
    grid = (NPROG_R, cdiv(C, BLOCK_C)); program (i, j) computes channels
    ``[j*BLOCK_C, (j+1)*BLOCK_C)`` of the row blocks i, i + NPROG_R, ...  By
    default NPROG_R = cdiv(R, BLOCK_R): one tile per program (loop of one
    iteration).  ``KernelConfig.persistent = k`` instead launches about k
    programs per SM that loop over row blocks, loading the coefficient table
    once and pipelining the loads of x (num_stages).  Rows are on grid axis 0
    (2^31 - 1 programs) because R is the unbounded dimension; axis 1 is
    limited to 65535 channel tiles.  A tile may span several groups (narrow
    groups: 96 channels per group at C = 768) or be one of several tiles of
    one group: each program gathers every coefficient once as a (1, BLOCK_C)
    row indexed by its columns' groups, so the per-element work is two Horner
    chains of fma and one division, whatever the grouping.

Backward, ``_rational_bwd_kernel``: one pass, reduction-first, no atomics.
    grid = (P, cdiv(C, BLOCK_C)); program (p, j) owns channel tile j and the
    row blocks p, p + P, p + 2P, ... (a grid-stride loop of the same trip
    count for every program, software-pipelined num_stages deep).  Per
    element it writes ``dx`` and adds the m + n coefficient-gradient terms into
    (BLOCK_R, BLOCK_C) register accumulators (float32; float64 for float64
    inputs).  At the end each program sums its accumulators over rows and
    stores one (BLOCK_C,) vector per coefficient into a workspace of shape
    (m + n, P, C) (times sign(b_j) for the safe and signed forms).  Stage 2,
    ``_rational_finish_kernel`` (one launch), reduces the workspace over P and
    over each group's channels in a fixed order, accumulated in float64, and
    writes both gradients in the coefficients' dtypes, so the coefficient
    gradients are bitwise reproducible from run to run.

    P depends on the shape only (R, C and the SM count: about
    ``_PROGRAMS_PER_SM`` programs per SM for ``_NOMINAL_BLOCK_C``-wide channel
    tiles), never on the launch configuration, so the workspace shape does not
    change when a benchmark sweeps configurations.

Sizes (R, C, D, P, trip counts) and strides are runtime integers, and R, P
and the trip counts are excluded from Triton's integer specialisation: a new
batch size never compiles a new kernel.  m, n, the form, the sign convention,
the compute dtype and the tile are ``tl.constexpr``: one kernel per
combination.

Measured on one H200 (torch 2.11, Triton 3.6, CUDA graphs, KAT shapes
128x197x3072, m, n = 6, 4, 8 groups), default configs: see _fwd_config and
_bwd_config.  Not checked by the CPU tests (Triton's interpreter): vector
widths, register counts, pipelining; they were read from sm_90 builds
(cuobjdump): 113 registers and no spills for the float32 backward at 4 x 128.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from .semantics import RationalSpec, check_args, compute_dtype

__all__ = ["MAX_COEFFS", "KernelConfig", "supports", "forward", "backward"]

MAX_COEFFS = 8  # largest m and n: the kernels hold coefficients in 8 named variables

_FORM_ID = {"safe": 0, "signed": 1, "abs_sum": 2}  # the kernels' FORM constexpr

# P heuristic (see the module docstring).  Enough programs to fill every SM a
# few times over, computed for a nominal channel-tile width so that P does not
# depend on the launch configuration.
_PROGRAMS_PER_SM = 4
_NOMINAL_BLOCK_C = 128
_BLOCK_R_MIN = 4  # no more row programs than row blocks of this height


def supports(spec: RationalSpec) -> bool:
    """True if the kernels handle this call (any form, zero_sign and grouping; m, n <= 8)."""
    return 1 <= spec.m <= MAX_COEFFS and 1 <= spec.n <= MAX_COEFFS


# ============================================================================
# Launch configurations
# ============================================================================
class KernelConfig(NamedTuple):
    """A launch configuration.

    block_r x block_c: the tile; num_warps; num_stages: software-pipelining
    depth of the loop over row blocks; persistent (forward only): 0 gives one
    tile per program, k > 0 a persistent grid of about k programs per SM (per
    channel tile) looping over row blocks.  The backward's number of row
    programs never depends on the config (see ``_row_programs``)."""

    block_r: int
    block_c: int
    num_warps: int = 4
    num_stages: int = 1
    persistent: int = 0


def _next_pow2(v: int) -> int:
    return 1 << max(0, int(v) - 1).bit_length()


def _fwd_config(R: int, C: int, G: int, dtype: torch.dtype) -> KernelConfig:
    """Heuristic forward launch: a persistent grid (see KernelConfig).

    H200, 128x197x3072 (one run each, CUDA graphs, copy ceiling 4.25 TB/s):
    float32 16x256 tiles, 4 programs per SM: 0.155 ms (94% of copy) vs 0.159 to
    0.167 ms for one tile per program; bfloat16 32x128, 8 programs per SM, loads
    pipelined 2 deep: 0.085 ms (86%) vs 0.112 to 0.138 ms for the best one tile
    per program (64x64): there the per-program coefficient gathers and the
    latency of one tile per program bound it, not bytes.  float64: untuned.
    G does not matter (a tile spans groups freely) and R is deliberately
    unused: the config, hence the compiled kernel, must not change with the
    batch size (a tiny R just masks rows)."""
    del G, R
    if dtype in (torch.float16, torch.bfloat16):
        block_c = max(16, min(128, _next_pow2(C)))
        return KernelConfig(max(1, 4096 // block_c), block_c, 4, 2, 8)
    if dtype == torch.float32:
        block_c = max(16, min(256, _next_pow2(C)))
        return KernelConfig(max(1, 4096 // block_c), block_c, 4, 1, 4)
    block_c = max(16, min(128, _next_pow2(C)))
    return KernelConfig(max(1, 2048 // block_c), block_c, 4, 1, 0)


def _bwd_config(R: int, C: int, G: int, dtype: torch.dtype, m: int = 6, n: int = 4) -> KernelConfig:
    """Heuristic backward launch: 4-row tiles, 4 warps, the row loop software-pipelined.

    H200 (one run, CUDA graphs), m, n = 6, 4: float32 4x128, 4 stages: 0.253 ms
    at 128x197x3072 (86% of copy; 0.268 ms with 3 stages, 0.320 ms unpipelined)
    and 0.075 ms at 128x197x768 (73%).  bfloat16 4x256, 3 stages: 0.221 ms
    (49%) and 0.070 ms: about 60 instructions per element, so bf16 is close to
    instruction bound here.  The m + n accumulators are (BLOCK_R, BLOCK_C)
    register tiles (about 15 registers per element of the per-thread tile at
    m, n = 6, 4: 113 registers at 4x128 / 4 warps), so the tile halves for more
    coefficients or float64 (untuned).  R is deliberately unused (a new batch
    size must not change the kernel)."""
    del G, R
    if m + n > 10 or dtype == torch.float64:
        return KernelConfig(2, max(16, min(128, _next_pow2(C))), 4, 3, 0)
    if dtype in (torch.float16, torch.bfloat16):
        return KernelConfig(4, max(16, min(256, _next_pow2(C))), 4, 3, 0)
    return KernelConfig(4, max(16, min(128, _next_pow2(C))), 4, 4, 0)


def _as_config(config) -> Optional[KernelConfig]:
    if config is None:
        return None
    cfg = KernelConfig(*config) if not isinstance(config, KernelConfig) else config
    for name in ("block_r", "block_c"):
        v = getattr(cfg, name)
        if v < 1 or v & (v - 1):
            raise ValueError(f"flashkat triton_kernels: config.{name} must be a power of two, got {v}")
    return cfg


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _fwd_row_programs(C: int, cfg: KernelConfig, device: torch.device) -> int:
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device()) if device.type == "cuda" else 1
    return max(1, triton.cdiv(cfg.persistent * sms, triton.cdiv(C, cfg.block_c)))


def _row_programs(R: int, C: int, device: torch.device) -> int:
    """P, the number of row programs of the backward: from the shape (and SM count) only."""
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device()) if device.type == "cuda" else 1
    col_tiles = triton.cdiv(C, _NOMINAL_BLOCK_C)
    p = max(1, triton.cdiv(_PROGRAMS_PER_SM * sms, col_tiles))
    return max(1, min(p, triton.cdiv(R, _BLOCK_R_MIN)))


# ============================================================================
# Device helpers
# ============================================================================
@triton.jit
def _coef(ptr, goff, sk, I: tl.constexpr, K: tl.constexpr, cmask, ABS: tl.constexpr, CDT: tl.constexpr):
    """Coefficient I of each column's group as a (1, BLOCK_C) row, converted to CDT.

    Loaded once per program (not per element).  For I >= K returns a constant 0
    that the Horner helpers never read: Triton has no lists of tensors, so the
    coefficients travel as eight named values."""
    if I < K:
        v = tl.load(ptr + goff + I * sk, mask=cmask, other=0.0).to(CDT)
        if ABS:
            v = tl.abs(v)
        out = v
    else:
        out = 0.0
    return out


@triton.jit
def _coef_table(ptr, goff, sk, K: tl.constexpr, cmask, ABS: tl.constexpr, CDT: tl.constexpr):
    """The eight coefficient slots c_0..c_7 of each column's group (see :func:`_coef`)."""
    return (_coef(ptr, goff, sk, 0, K, cmask, ABS, CDT), _coef(ptr, goff, sk, 1, K, cmask, ABS, CDT),
            _coef(ptr, goff, sk, 2, K, cmask, ABS, CDT), _coef(ptr, goff, sk, 3, K, cmask, ABS, CDT),
            _coef(ptr, goff, sk, 4, K, cmask, ABS, CDT), _coef(ptr, goff, sk, 5, K, cmask, ABS, CDT),
            _coef(ptr, goff, sk, 6, K, cmask, ABS, CDT), _coef(ptr, goff, sk, 7, K, cmask, ABS, CDT))


@triton.jit
def _coef_sign(ptr, goff, sk, I: tl.constexpr, K: tl.constexpr, cmask, USE: tl.constexpr, ZERO_KAT: tl.constexpr):
    """sign(b_I) of each column's group as a (BLOCK_C,) vector (1.0 when not USE or I >= K)."""
    if USE and I < K:
        # the sign of the value as stored (a float64 1e-300 is positive, not a float32 0)
        out = _sign(tl.load(ptr + goff + I * sk, mask=cmask, other=0.0), ZERO_KAT)
    else:
        out = 1.0
    return out


@triton.jit
def _top(c0, c1, c2, c3, c4, c5, c6, c7, K: tl.constexpr):
    """The highest present coefficient c_{K-1}."""
    if K == 8:
        p = c7
    elif K == 7:
        p = c6
    elif K == 6:
        p = c5
    elif K == 5:
        p = c4
    elif K == 4:
        p = c3
    elif K == 3:
        p = c2
    elif K == 2:
        p = c1
    else:
        p = c0
    return p


@triton.jit
def _horner(x, c0, c1, c2, c3, c4, c5, c6, c7, K: tl.constexpr):
    """sum_{i<K} c_i x^i with fma, starting from c_{K-1}: no 0 * x term (0 * inf = NaN)."""
    p = _top(c0, c1, c2, c3, c4, c5, c6, c7, K)
    if K > 7:
        p = tl.fma(p, x, c6)
    if K > 6:
        p = tl.fma(p, x, c5)
    if K > 5:
        p = tl.fma(p, x, c4)
    if K > 4:
        p = tl.fma(p, x, c3)
    if K > 3:
        p = tl.fma(p, x, c2)
    if K > 2:
        p = tl.fma(p, x, c1)
    if K > 1:
        p = tl.fma(p, x, c0)
    return p


@triton.jit
def _horner_step(p, dp, x, c, FIRST: tl.constexpr):
    """One joint Horner step for the value and the derivative."""
    if FIRST:
        dp = p  # derivative chain starts at c_{K-1}, not at 0 * x
    else:
        dp = tl.fma(dp, x, p)
    p = tl.fma(p, x, c)
    return p, dp


@triton.jit
def _horner_d(x, c0, c1, c2, c3, c4, c5, c6, c7, K: tl.constexpr):
    """(p, dp/dx) of sum_{i<K} c_i x^i by joint Horner; dp is the constant 0 when K == 1."""
    p = _top(c0, c1, c2, c3, c4, c5, c6, c7, K)
    dp = 0.0
    if K > 7:
        p, dp = _horner_step(p, dp, x, c6, K == 8)
    if K > 6:
        p, dp = _horner_step(p, dp, x, c5, K == 7)
    if K > 5:
        p, dp = _horner_step(p, dp, x, c4, K == 6)
    if K > 4:
        p, dp = _horner_step(p, dp, x, c3, K == 5)
    if K > 3:
        p, dp = _horner_step(p, dp, x, c2, K == 4)
    if K > 2:
        p, dp = _horner_step(p, dp, x, c1, K == 3)
    if K > 1:
        p, dp = _horner_step(p, dp, x, c0, K == 2)
    return p, dp


@triton.jit
def _sign(v, ZERO_KAT: tl.constexpr):
    """sign(v): "kat" gives -1 if v < 0 else +1 (NaN -> +1); "torch" gives 0 at 0 and NaN."""
    if ZERO_KAT:
        s = tl.where(v < 0, -1.0, 1.0)
    else:
        s = tl.where(v > 0, 1.0, tl.where(v < 0, -1.0, 0.0))
    return s.to(v.dtype)


# ============================================================================
# Forward kernel
# ============================================================================
@triton.jit(do_not_specialize=["R", "NPROG_R", "ITERS"])
def _rational_fwd_kernel(
    x_ptr, y_ptr, a_ptr, b_ptr,
    R, C, D, NPROG_R, ITERS,
    sxr, sxc,  # x strides (rows, channels)
    sag, sak, sbg, sbk,  # coefficient strides (group row: 0 when shared, coefficient)
    M: tl.constexpr, N: tl.constexpr, FORM: tl.constexpr, CDT: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, NUM_STAGES: tl.constexpr, ITERS_C: tl.constexpr,
):
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)

    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    # (1, BLOCK_C) offsets: loaded directly in the tile's layout, so the
    # coefficient rows need no layout conversion through shared memory
    grp = (cols // D)[None, :]
    cmask2 = cmask[None, :]
    ga = grp * sag
    gb = grp * sbg
    # Coefficient table of this tile: one (1, BLOCK_C) vector per coefficient.
    a0, a1, a2, a3, a4, a5, a6, a7 = _coef_table(a_ptr, ga, sak, M, cmask2, False, CDT)
    ABS_B: tl.constexpr = FORM != 2  # safe / signed use |b|
    b0, b1, b2, b3, b4, b5, b6, b7 = _coef_table(b_ptr, gb, sbk, N, cmask2, ABS_B, CDT)

    # Row blocks pid_r, pid_r + NPROG_R, ...: one block per program when
    # NPROG_R = cdiv(R, BLOCK_R) (ITERS = 1), or a persistent grid that loads
    # the coefficient table once per program and pipelines the loads of x.
    for it in tl.range(0, ITERS if ITERS_C == 0 else ITERS_C, num_stages=NUM_STAGES):
        rows = (pid_r + it * NPROG_R) * BLOCK_R + tl.arange(0, BLOCK_R)
        mask = (rows < R)[:, None] & cmask[None, :]
        rows64 = rows.to(tl.int64)
        # 64-bit offsets: R * C may exceed 2^31 elements.
        x_off = rows64[:, None] * sxr + cols.to(tl.int64)[None, :] * sxc
        x = tl.load(x_ptr + x_off, mask=mask, other=0.0).to(CDT)

        if FORM == 0:
            t = tl.abs(x)
        else:
            t = x
        p = _horner(x, a0, a1, a2, a3, a4, a5, a6, a7, M)
        s = _horner(t, b0, b1, b2, b3, b4, b5, b6, b7, N) * t
        if FORM == 2:
            q = 1.0 + tl.abs(s)
        else:
            q = 1.0 + s
        y = p / q

        y_off = rows64[:, None] * C + cols[None, :]
        tl.store(y_ptr + y_off, y.to(y_ptr.dtype.element_ty), mask=mask)


# ============================================================================
# Backward kernel
# ============================================================================
@triton.jit(do_not_specialize=["R", "NPROG_R", "ITERS"])
def _rational_bwd_kernel(
    dy_ptr, x_ptr, a_ptr, b_ptr, dx_ptr, ws_ptr,
    R, C, D, NPROG_R, ITERS,
    sdr, sdc,  # dy strides (may be 0: an expanded gradient is read in place)
    sxr, sxc,  # x strides
    sag, sak, sbg, sbk,
    M: tl.constexpr, N: tl.constexpr, FORM: tl.constexpr, ZERO_KAT: tl.constexpr, CDT: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, NUM_STAGES: tl.constexpr, ITERS_C: tl.constexpr,
    FAST_RCP: tl.constexpr = False,
):
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)

    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    cols64 = cols.to(tl.int64)
    # (1, BLOCK_C) offsets: loaded directly in the tile's layout, so the
    # coefficient rows need no layout conversion through shared memory
    grp = (cols // D)[None, :]
    cmask2 = cmask[None, :]
    ga = grp * sag
    gb = grp * sbg
    a0, a1, a2, a3, a4, a5, a6, a7 = _coef_table(a_ptr, ga, sak, M, cmask2, False, CDT)
    ABS_B: tl.constexpr = FORM != 2
    b0, b1, b2, b3, b4, b5, b6, b7 = _coef_table(b_ptr, gb, sbk, N, cmask2, ABS_B, CDT)

    # Register accumulators, one (BLOCK_R, BLOCK_C) tile per coefficient that
    # exists (the static guards keep absent ones out of the loop-carried state).
    # Reducing over rows once at the end, not per iteration, avoids a
    # cross-warp reduction in every iteration.
    acc_a0 = tl.zeros((BLOCK_R, BLOCK_C), CDT)
    if M > 1:
        acc_a1 = tl.zeros((BLOCK_R, BLOCK_C), CDT)
    if M > 2:
        acc_a2 = tl.zeros((BLOCK_R, BLOCK_C), CDT)
    if M > 3:
        acc_a3 = tl.zeros((BLOCK_R, BLOCK_C), CDT)
    if M > 4:
        acc_a4 = tl.zeros((BLOCK_R, BLOCK_C), CDT)
    if M > 5:
        acc_a5 = tl.zeros((BLOCK_R, BLOCK_C), CDT)
    if M > 6:
        acc_a6 = tl.zeros((BLOCK_R, BLOCK_C), CDT)
    if M > 7:
        acc_a7 = tl.zeros((BLOCK_R, BLOCK_C), CDT)
    acc_b0 = tl.zeros((BLOCK_R, BLOCK_C), CDT)
    if N > 1:
        acc_b1 = tl.zeros((BLOCK_R, BLOCK_C), CDT)
    if N > 2:
        acc_b2 = tl.zeros((BLOCK_R, BLOCK_C), CDT)
    if N > 3:
        acc_b3 = tl.zeros((BLOCK_R, BLOCK_C), CDT)
    if N > 4:
        acc_b4 = tl.zeros((BLOCK_R, BLOCK_C), CDT)
    if N > 5:
        acc_b5 = tl.zeros((BLOCK_R, BLOCK_C), CDT)
    if N > 6:
        acc_b6 = tl.zeros((BLOCK_R, BLOCK_C), CDT)
    if N > 7:
        acc_b7 = tl.zeros((BLOCK_R, BLOCK_C), CDT)

    # ---- grid-stride loop over this program's row blocks ------------------
    # Row block rb = pid_p + it * NPROG_R.  The trip count ITERS is the same
    # for every program (the last iteration of some is fully masked: no memory
    # traffic), so the loop is a plain `for` that Triton software-pipelines
    # (cp.async, NUM_STAGES deep).  ITERS_C is 0 when compiled (ITERS stays a
    # runtime int: no recompilation per batch size); Triton's interpreter
    # cannot take a runtime int as a loop bound (with numpy 2), so there the
    # trip count comes as the constexpr ITERS_C instead (see _iters_c).
    # H200, 128x197x3072 float32, 4x128 tiles: 0.25 ms pipelined 4 deep, 0.27 ms
    # 3 deep, against 0.320 ms for a `while` over this program's blocks (which
    # Triton does not pipeline) and 0.308 ms for that `while` with the next
    # block's loads issued early by hand.
    for it in tl.range(0, ITERS if ITERS_C == 0 else ITERS_C, num_stages=NUM_STAGES):
        rows = (pid_p + it * NPROG_R) * BLOCK_R + tl.arange(0, BLOCK_R)
        mask = (rows < R)[:, None] & cmask[None, :]
        rows64 = rows.to(tl.int64)
        # Masked elements read dy = 0 and x = 0, so they add exactly 0 below.
        x = tl.load(x_ptr + (rows64[:, None] * sxr + cols64[None, :] * sxc), mask=mask, other=0.0).to(CDT)
        dy = tl.load(dy_ptr + (rows64[:, None] * sdr + cols64[None, :] * sdc), mask=mask, other=0.0).to(CDT)

        if FORM == 0:
            t = tl.abs(x)
        else:
            t = x
        p, dp = _horner_d(x, a0, a1, a2, a3, a4, a5, a6, a7, M)
        h, dh = _horner_d(t, b0, b1, b2, b3, b4, b5, b6, b7, N)
        s = h * t  # s = sum_j c_j t^(j+1)
        if N > 1:
            ds = tl.fma(dh, t, h)  # ds/dt
        else:
            ds = h
        if FORM == 0:
            dq = _sign(x, ZERO_KAT) * ds
            q = 1.0 + s
        elif FORM == 1:
            dq = ds
            q = 1.0 + s
        else:
            ks = _sign(s, ZERO_KAT)
            dq = ks * ds
            q = 1.0 + tl.abs(s)

        # the one reciprocal per element: with FAST_RCP (CUDA, float32 compute) one rcp.approx.ftz.f32
        # (within 1 ulp) instead of div.full.f32 and its range checks, ~4 instructions fewer
        if FAST_RCP:
            inv_q = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [q], dtype=tl.float32,
                                              is_pure=True, pack=1)
        else:
            inv_q = 1.0 / q
        gq = dy * inv_q
        r = p * inv_q
        dx = gq * tl.fma(-r, dq, dp)
        tl.store(dx_ptr + (rows64[:, None] * C + cols64[None, :]), dx.to(dx_ptr.dtype.element_ty), mask=mask)

        w = -gq * r
        if FORM == 2:
            w = w * ks

        # da_i += gq x^i, db_j += w t^(j+1): the powers of x once per element, shared by both
        # sums (t^k = |x^k| in the safe form), every term one fma (5 fewer instructions per
        # element than running products at (m, n) = (6, 4))
        KMAX: tl.constexpr = M - 1 if M - 1 > N else N
        x2 = x * x
        if KMAX > 2:
            x3 = x2 * x
        if KMAX > 3:
            x4 = x3 * x
        if KMAX > 4:
            x5 = x4 * x
        if KMAX > 5:
            x6 = x5 * x
        if KMAX > 6:
            x7 = x6 * x
        if KMAX > 7:
            x8 = x7 * x
        acc_a0 += gq
        if M > 1:
            acc_a1 = tl.fma(gq, x, acc_a1)
        if M > 2:
            acc_a2 = tl.fma(gq, x2, acc_a2)
        if M > 3:
            acc_a3 = tl.fma(gq, x3, acc_a3)
        if M > 4:
            acc_a4 = tl.fma(gq, x4, acc_a4)
        if M > 5:
            acc_a5 = tl.fma(gq, x5, acc_a5)
        if M > 6:
            acc_a6 = tl.fma(gq, x6, acc_a6)
        if M > 7:
            acc_a7 = tl.fma(gq, x7, acc_a7)
        acc_b0 = tl.fma(w, t, acc_b0)
        if N > 1:
            acc_b1 = tl.fma(w, x2, acc_b1)
        if N > 2:
            acc_b2 = tl.fma(w, _odd_power(x3, FORM), acc_b2)
        if N > 3:
            acc_b3 = tl.fma(w, x4, acc_b3)
        if N > 4:
            acc_b4 = tl.fma(w, _odd_power(x5, FORM), acc_b4)
        if N > 5:
            acc_b5 = tl.fma(w, x6, acc_b5)
        if N > 6:
            acc_b6 = tl.fma(w, _odd_power(x7, FORM), acc_b6)
        if N > 7:
            acc_b7 = tl.fma(w, x8, acc_b7)


    # ---- stage 1 of the reduction: rows of this program -> workspace -------
    # ws[k, p, c] at k * (P * C) + p * C + c; every (k, p, c < C) is written,
    # also by programs that had no rows (zeros), so ws needs no zero-fill.
    # safe / signed: d|b_j|/db_j = sign(b_j) is constant per column, so it is
    # applied here to the partial sums (exact: a factor of -1, 0 or +1), which
    # equals applying it after the reduction and saves stage 2 three launches.
    # Loaded only now so that it holds no registers during the loop.
    SIGN_B: tl.constexpr = FORM != 2
    gb1 = (cols // D) * sbg
    k0 = _coef_sign(b_ptr, gb1, sbk, 0, N, cmask, SIGN_B, ZERO_KAT)
    k1 = _coef_sign(b_ptr, gb1, sbk, 1, N, cmask, SIGN_B, ZERO_KAT)
    k2 = _coef_sign(b_ptr, gb1, sbk, 2, N, cmask, SIGN_B, ZERO_KAT)
    k3 = _coef_sign(b_ptr, gb1, sbk, 3, N, cmask, SIGN_B, ZERO_KAT)
    k4 = _coef_sign(b_ptr, gb1, sbk, 4, N, cmask, SIGN_B, ZERO_KAT)
    k5 = _coef_sign(b_ptr, gb1, sbk, 5, N, cmask, SIGN_B, ZERO_KAT)
    k6 = _coef_sign(b_ptr, gb1, sbk, 6, N, cmask, SIGN_B, ZERO_KAT)
    k7 = _coef_sign(b_ptr, gb1, sbk, 7, N, cmask, SIGN_B, ZERO_KAT)
    kstride = NPROG_R * C
    wp = ws_ptr + pid_p * C + cols
    tl.store(wp, tl.sum(acc_a0, axis=0), mask=cmask)
    if M > 1:
        tl.store(wp + 1 * kstride, tl.sum(acc_a1, axis=0), mask=cmask)
    if M > 2:
        tl.store(wp + 2 * kstride, tl.sum(acc_a2, axis=0), mask=cmask)
    if M > 3:
        tl.store(wp + 3 * kstride, tl.sum(acc_a3, axis=0), mask=cmask)
    if M > 4:
        tl.store(wp + 4 * kstride, tl.sum(acc_a4, axis=0), mask=cmask)
    if M > 5:
        tl.store(wp + 5 * kstride, tl.sum(acc_a5, axis=0), mask=cmask)
    if M > 6:
        tl.store(wp + 6 * kstride, tl.sum(acc_a6, axis=0), mask=cmask)
    if M > 7:
        tl.store(wp + 7 * kstride, tl.sum(acc_a7, axis=0), mask=cmask)
    wb = wp + M * kstride
    tl.store(wb, tl.sum(acc_b0, axis=0) * k0, mask=cmask)
    if N > 1:
        tl.store(wb + 1 * kstride, tl.sum(acc_b1, axis=0) * k1, mask=cmask)
    if N > 2:
        tl.store(wb + 2 * kstride, tl.sum(acc_b2, axis=0) * k2, mask=cmask)
    if N > 3:
        tl.store(wb + 3 * kstride, tl.sum(acc_b3, axis=0) * k3, mask=cmask)
    if N > 4:
        tl.store(wb + 4 * kstride, tl.sum(acc_b4, axis=0) * k4, mask=cmask)
    if N > 5:
        tl.store(wb + 5 * kstride, tl.sum(acc_b5, axis=0) * k5, mask=cmask)
    if N > 6:
        tl.store(wb + 6 * kstride, tl.sum(acc_b6, axis=0) * k6, mask=cmask)
    if N > 7:
        tl.store(wb + 7 * kstride, tl.sum(acc_b7, axis=0) * k7, mask=cmask)


@triton.jit
def _odd_power(xk, FORM: tl.constexpr):
    """t^k for odd k from x^k: |x^k| in the safe form (t = |x|), x^k otherwise (t = x)."""
    if FORM == 0:
        return tl.abs(xk)
    return xk


@triton.jit
def _from_f64(v, dtype: tl.constexpr):
    """A float64 value in ``dtype``; 16-bit types through float32, as PyTorch's casts round."""
    if dtype == tl.float64:
        return v
    return v.to(tl.float32).to(dtype)


@triton.jit(do_not_specialize=["P", "C", "D"])
def _rational_finish_kernel(
    ws_ptr, da_ptr, db_ptr,
    P, C, D,
    M: tl.constexpr, N: tl.constexpr, NUM_SHARED: tl.constexpr, DEN_SHARED: tl.constexpr,
    BLOCK: tl.constexpr, ITERS_C: tl.constexpr,
):
    """Stage 2 of the backward: the coefficient gradients from the (m + n, P, C) workspace.

    grid = (m + n, G): program (k, g) sums ws[k, :, g*D:(g+1)*D] (for a shared row,
    where only g = 0 works, the whole contiguous ws[k]) in float64, in a fixed order
    (one BLOCK-wide running sum over the flattened (p, channel) index, reduced at the
    end), and stores it cast to the output's dtype: one launch for both gradients and
    every group, instead of a reduction, a transpose and two casts."""
    k = tl.program_id(0)
    g = tl.program_id(1)
    is_num = k < M
    shared = (is_num & NUM_SHARED) | ((k >= M) & DEN_SHARED)
    if (g == 0) | (shared == 0):
        src = ws_ptr + k.to(tl.int64) * P * C
        lanes = tl.arange(0, BLOCK)
        acc = tl.zeros((BLOCK,), tl.float64)
        # ITERS_C: the interpreter's constexpr trip count (the largest, P * C / BLOCK), 0 when compiled
        if shared:  # the whole (P, C) slab of coefficient k: contiguous
            n = P * C
            for start in tl.range(0, n if ITERS_C == 0 else ITERS_C * BLOCK, BLOCK, num_stages=3):
                i = start + lanes
                acc += tl.load(src + i, mask=i < n, other=0.0).to(tl.float64)
        else:  # group g's D channels of each of the P rows
            n = P * D
            for start in tl.range(0, n if ITERS_C == 0 else ITERS_C * BLOCK, BLOCK, num_stages=3):
                i = start + lanes
                acc += tl.load(src + g * D + (i // D) * C + i % D, mask=i < n, other=0.0).to(tl.float64)
        total = tl.sum(acc, axis=0)
        row = tl.where(shared, 0, g)
        if is_num:
            tl.store(da_ptr + row * M + k, _from_f64(total, da_ptr.dtype.element_ty))
        else:
            tl.store(db_ptr + row * N + (k - M), _from_f64(total, db_ptr.dtype.element_ty))


# 4096 lanes (8 warps, 16 loads in flight per thread) and loads pipelined 3 iterations deep:
# the sums are latency-bound loops over an L2-resident workspace.  H200, 128 x 197 x 3072:
# 9.2 us (float32) / 7.4 us (bf16), against 28.5 / 18.4 us with 1024 lanes unpipelined, where
# the shared numerator row's one program summed P x C = 67584 partials in 66 dependent
# iterations (bench/results/h200_rational_2026-11-28_static_nd_fwd.json, _unsplit_static.json).
_FINISH_BLOCK = 4096
_FINISH_WARPS = 8


# ============================================================================
# Host wrappers
# ============================================================================
_TL_DTYPE = {torch.float32: tl.float32, torch.float64: tl.float64}


def _interpreted() -> bool:
    return type(_rational_bwd_kernel).__name__ == "InterpretedFunction"


def _iters_c(iters: int) -> int:
    """The loop trip count as a constexpr for Triton's interpreter; 0 (use the runtime
    ITERS) when compiled."""
    return iters if _interpreted() else 0


def _coef_strides(coeffs: Tensor) -> tuple:
    """(group-row stride, coefficient stride); the row stride is 0 for a shared (1, k) row."""
    return (0 if coeffs.shape[0] == 1 else coeffs.stride(0)), coeffs.stride(1)


def _device_guard(t: Tensor):
    if t.device.type == "cuda":
        return torch.cuda.device(t.device)
    import contextlib

    return contextlib.nullcontext()


def forward(x: Tensor, numerator: Tensor, denominator: Tensor, form: str, *, config=None) -> Tensor:
    """y = P(x) / Q(x): contiguous, shape and dtype of x.

    ``config`` (a ``KernelConfig`` or tuple ``(block_r, block_c, num_warps[, num_stages])``)
    overrides the heuristic ``_fwd_config``, for benchmarks."""
    spec = check_args(x, numerator, denominator, form)
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if x.numel() == 0:
        return y
    C = x.shape[-1]
    x2 = x.reshape(-1, C)
    R = x2.shape[0]
    cfg = _as_config(config) or _fwd_config(R, C, spec.groups, x.dtype)
    sag, sak = _coef_strides(numerator)
    sbg, sbk = _coef_strides(denominator)
    n_rb = triton.cdiv(R, cfg.block_r)
    nprog = n_rb if cfg.persistent <= 0 else min(n_rb, _fwd_row_programs(C, cfg, x.device))
    iters = triton.cdiv(n_rb, nprog)
    grid = (nprog, triton.cdiv(C, cfg.block_c))
    with _device_guard(x):
        _rational_fwd_kernel[grid](
            x2, y, numerator, denominator,
            R, C, C // spec.groups, nprog, iters,
            x2.stride(0), x2.stride(1),
            sag, sak, sbg, sbk,
            M=spec.m, N=spec.n, FORM=_FORM_ID[form], CDT=_TL_DTYPE[compute_dtype(x.dtype)],
            BLOCK_R=cfg.block_r, BLOCK_C=cfg.block_c, NUM_STAGES=cfg.num_stages, ITERS_C=_iters_c(iters),
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
    return y


def backward(grad: Tensor, x: Tensor, numerator: Tensor, denominator: Tensor, form: str, zero_sign: str,
             *, config=None) -> tuple:
    """(dx, dnumerator, ddenominator) of y = P(x) / Q(x).

    dx: contiguous, shape and dtype of x; coefficient gradients in the
    coefficients' dtype and shape (a shared row gets the sum over groups),
    bitwise reproducible.  ``grad`` may have any strides, including 0.
    ``config`` overrides the heuristic ``_bwd_config``; it does not change the
    workspace shape (P comes from ``_row_programs``)."""
    spec = check_args(x, numerator, denominator, form, zero_sign)
    acc_dtype = compute_dtype(x.dtype)
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if x.numel() == 0:
        return dx, torch.zeros_like(numerator), torch.zeros_like(denominator)
    C, G = x.shape[-1], spec.groups
    D = C // G
    m, n = spec.m, spec.n
    x2 = x.reshape(-1, C)
    g2 = grad.expand(x.shape).reshape(-1, C)  # a view for expanded / mergeable strides
    R = x2.shape[0]
    cfg = _as_config(config) or _bwd_config(R, C, G, x.dtype, m, n)
    P = _row_programs(R, C, x.device)
    ws = torch.empty((m + n, P, C), dtype=acc_dtype, device=x.device)
    sag, sak = _coef_strides(numerator)
    sbg, sbk = _coef_strides(denominator)
    iters = triton.cdiv(triton.cdiv(R, cfg.block_r), P)
    grid = (P, triton.cdiv(C, cfg.block_c))
    with _device_guard(x):
        _rational_bwd_kernel[grid](
            g2, x2, numerator, denominator, dx, ws,
            R, C, D, P, iters,
            g2.stride(0), g2.stride(1),
            x2.stride(0), x2.stride(1),
            sag, sak, sbg, sbk,
            M=m, N=n, FORM=_FORM_ID[form], ZERO_KAT=(zero_sign == "kat"), CDT=_TL_DTYPE[acc_dtype],
            BLOCK_R=cfg.block_r, BLOCK_C=cfg.block_c, NUM_STAGES=cfg.num_stages, ITERS_C=_iters_c(iters),
            FAST_RCP=acc_dtype == torch.float32 and not _interpreted() and torch.version.hip is None,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )

    # ---- stage 2: fixed-order reduction over programs and group channels ---
    # One launch (_rational_finish_kernel), summed in float64: the workspace is
    # small ((m + n) x P x C), and the sums over P and D are where cancellation
    # between random-signed dy terms costs float32 the most (1.2e-6 -> 6e-7
    # relative error at 7x33x200, signed form).  sign(b) is already applied (in
    # the kernel).  Written straight into contiguous outputs of the coefficients'
    # dtypes.
    da = torch.empty((spec.num_groups, m), dtype=numerator.dtype, device=x.device)
    db = torch.empty((spec.den_groups, n), dtype=denominator.dtype, device=x.device)
    width_max = C if (spec.num_groups == 1 or spec.den_groups == 1) else D
    with _device_guard(x):
        _rational_finish_kernel[(m + n, G)](
            ws, da, db, P, C, D,
            M=m, N=n, NUM_SHARED=spec.num_groups == 1, DEN_SHARED=spec.den_groups == 1,
            BLOCK=_FINISH_BLOCK, ITERS_C=_iters_c(triton.cdiv(P * width_max, _FINISH_BLOCK)),
            num_warps=_FINISH_WARPS,
        )
    return dx, da, db
