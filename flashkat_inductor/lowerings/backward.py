"""Inductor lowering of ``flashkat::rational_bwd``.

Two implementations of one computation, both deterministic (no atomics):

``TritonTemplate`` (CUDA, m and n up to ``TEMPLATE_MAX_COEFFS``)
    One fused kernel from ``backward.py.jinja`` writes dx through
    ``store_output`` (so elementwise consumers of dx fuse into it as an
    epilogue), or over dy where nothing reads dy afterwards and no epilogue
    would fuse (``_dx_into_grad``), and the m + n coefficient-gradient partial
    sums, reduction-first, into two float32 workspaces (one per coefficient
    tensor) passed as ``mutated_inputs``; Inductor reductions finish them.  See "How is the
    template parallelised?" below.

Inductor IR (CPU, and whatever the template does not take)
    ``ir.Pointwise`` for dx and m + n ``ir.Reduction``s for the coefficient
    sums, laid out so that Inductor fuses them into ONE loop nest that reads x
    and dy once.  See "The IR decomposition" below.

Per element, both compute (float32; float64 for float64 inputs), with
``t = |x|`` (safe) or ``x``, ``c = |b|`` (safe, signed) or ``b`` (abs_sum)::

    p, p'  = joint Horner of a at x         h, h' = joint Horner of c at t
    s = h t,  s' = h + h' t   (ds/dt)
    q = 1 + s   (1 + |s| for abs_sum),  q' = sign(x) s' | s' | sign(s) s'
    inv = 1 / q                               the one division per element
    gq = dy inv,  r = p inv
    dx = gq (p' - r q')
    da_i += gq x^i,  db_j += w t^(j+1),  w = -gq r (times sign(s) for abs_sum)

and after the reduction ``db_j *= sign(b_j)`` (safe, signed), a shared
``(1, k)`` row sums its groups, and the results are cast to the coefficients'
dtype.  Powers are never materialised: running products in registers.
"""
from __future__ import annotations

import functools
import operator
import os

import sympy
import torch

from .forward import (
    LoweringSpec,
    coefficient_row,
    denominator_inputs,
    generates_triton,
    flag_from_env,
    horner_d,
    int_from_env,
    load_as,
    lowering_spec,
    sign_of,
    size_hint,
    takes_ptx,
)

__all__ = ["rational_bwd_lowering", "TEMPLATE_MAX_COEFFS", "TEMPLATE_NAME"]

TEMPLATE_MAX_COEFFS = 8  # m, n <= 8: the template unrolls m + n register accumulators
TEMPLATE_NAME = "flashkat_rational_bwd"
DX_INTO_GRAD = "bwd_dx_into_grad"  # counters["flashkat"]: backward templates that wrote dx over dy
_TEMPLATE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "backward.py.jinja")

# Routing switches (tests and benchmarks): "auto" uses the template on CUDA-like
# (Triton) devices and the IR elsewhere; "ir" forces the IR decomposition.
_state = {"mode": "auto"}

# The last, tiny stage of the coefficient reductions (over rows or program
# partials, then groups) accumulates in float64: a shared coefficient row sums
# per-group gradients of both signs (cancellation by a factor 10-30 with random
# coefficients), which float32 would amplify past 1e-6.  The per-element terms
# and the first-stage partial sums stay in float32 (float64 for float64).
_FINISH_DTYPE = torch.float64


def lowering_switches() -> tuple:
    """The backward lowering's switches, for the passes' cache key (backend._switches)."""
    return (_ROW_PROGRAM_LEVELS, _ROW_SUM_LEVELS, _MIN_ROWS_PER_PROGRAM, _ONE_LAYER_MAX_TERMS,
            _SLAB_MAX_CHANNELS, _ONE_FINISH, _LANES, _ROWS_REVERSED, repr(sorted(_state.items())))


def set_backward_mode(mode: str) -> None:
    """Which backward lowering to use (tests, benchmarks; part of the passes' cache key).

    "auto": the template where Inductor generates Triton (CUDA, or a CPU with
    cpu_backend="triton"), the IR decomposition elsewhere; "ir": always the IR
    decomposition; "template": the template whenever m, n <= 8."""
    if mode not in ("auto", "ir", "template"):
        raise ValueError(f"flashkat lowering: backward mode must be 'auto', 'ir' or 'template', got {mode!r}")
    _state["mode"] = mode


# ============================================================================
# Per-element math shared by the IR nodes (ops.* values; CSE merges the copies
# that each fused node traces)
# ============================================================================
class _Element:
    """The per-element quantities of the backward at one index, computed lazily."""

    def __init__(self, spec: LoweringSpec, x, grad, numerator, denominator, x_index, g):
        from torch._inductor.virtualized import ops

        self.spec = spec
        cdt = spec.cdt
        self.x = load_as(x.make_loader(), x_index, x.get_dtype(), cdt)
        self.dy = load_as(grad.make_loader(), x_index, grad.get_dtype(), cdt)
        self.a = coefficient_row(spec, numerator, g, absolute=False)
        self.c = coefficient_row(spec, denominator, g, absolute=spec.form != "abs_sum")
        self.t = denominator_inputs(spec, self.x)
        self._ops = ops

    @functools.cached_property
    def p_dp(self):
        return horner_d(self.a, self.x)

    @functools.cached_property
    def h_dh(self):
        return horner_d(self.c, self.t)

    @functools.cached_property
    def s(self):
        return self._ops.mul(self.h_dh[0], self.t)

    @functools.cached_property
    def ks(self):  # sign(s), abs_sum only
        return sign_of(self.s, self.spec.zero_sign, self.spec.cdt)

    @functools.cached_property
    def inv_q(self):
        ops, cdt = self._ops, self.spec.cdt
        s = ops.abs(self.s) if self.spec.form == "abs_sum" else self.s
        q = ops.add(s, ops.constant(1.0, cdt))
        return ops.truediv(ops.constant(1.0, cdt), q)

    @functools.cached_property
    def gq(self):
        return self._ops.mul(self.dy, self.inv_q)

    @functools.cached_property
    def r(self):
        return self._ops.mul(self.p_dp[0], self.inv_q)

    def dx(self):
        ops, spec = self._ops, self.spec
        h, dh = self.h_dh
        ds = h if dh is None else ops.add(ops.mul(dh, self.t), h)  # ds/dt
        if spec.form == "safe":
            dq = ops.mul(sign_of(self.x, spec.zero_sign, spec.cdt), ds)
        elif spec.form == "signed":
            dq = ds
        else:
            dq = ops.mul(self.ks, ds)
        dp = self.p_dp[1]
        rdq = ops.mul(self.r, dq)
        inner = ops.neg(rdq) if dp is None else ops.sub(dp, rdq)
        return ops.mul(self.gq, inner)

    def term(self, k: int):
        """The k-th coefficient-gradient term: gq x^k (k < m) or w t^(k - m + 1)."""
        ops, spec = self._ops, self.spec
        if k < spec.m:
            v = self.gq
            for _ in range(k):
                v = ops.mul(v, self.x)
            return v
        v = ops.neg(ops.mul(self.gq, self.r))
        if spec.form == "abs_sum":
            v = ops.mul(v, self.ks)
        for _ in range(k - spec.m + 1):
            v = ops.mul(v, self.t)
        return v


# ============================================================================
# The IR decomposition
# ============================================================================
#
# x is viewed as (*lead, G, D) (index c = g * D + d).  Three kinds of nodes:
#
#   dx        ir.Pointwise over (*lead, G, D), realized contiguous, viewed (*lead, C)
#   part_k    m + n ir.Reductions over D: ranges (*lead, G), reduction (D,)
#   finish    the partials, packed into one (m + n, G, rows) buffer, summed
#             over rows (float64) by ONE reduction, then over G for a shared
#             row; sign(b) and the cast in small pointwise nodes
#
# The pointwise ranges are the reductions' ranges followed by their reduction
# ranges, so Inductor's C++ backend fuses dx and the m + n partial sums into
# one loop nest ("for rows, groups: for d in D, vectorised") that loads x and
# dy once and evaluates P, Q and the reciprocal once (CSE across the fused
# nodes); the coefficients are loop invariants of the inner loop.  The partial
# sums hold one value per row and group (D times fewer than x), so finishing
# them is cheap.  Measured at 16 x 197 x 768 (2 cores, torch 2.13): the fused
# loop nest is ~1.5 ms; finishing with one reduction per coefficient (K OpenMP
# regions) took the compiled backward to ~2.3 ms, packed into one region ~1.8 ms.
def _ir_backward(grad, x, numerator, denominator, spec: LoweringSpec):
    from torch._inductor import ir
    from torch._inductor.lowering import lowerings
    from torch._inductor.virtualized import ops

    aten = torch.ops.aten
    device = x.get_device()
    cdt = spec.cdt
    G, D = spec.groups, spec.width
    lead = list(x.get_size()[:-1])
    nlead = len(lead)
    K = spec.m + spec.n

    def element(lead_idx, g, d):
        return _Element(spec, x, grad, numerator, denominator, [*lead_idx, g * D + d], g)

    # ---- dx ---------------------------------------------------------------
    def dx_fn(idx):
        v = element(idx[:nlead], idx[nlead], idx[nlead + 1]).dx()
        return ops.to_dtype(v, x.get_dtype(), src_dtype=cdt) if x.get_dtype() != cdt else v

    dx = ir.Pointwise.create(device=device, dtype=x.get_dtype(), inner_fn=dx_fn, ranges=[*lead, G, D])
    dx.realize()
    dx = lowerings[aten.view.default](dx, list(x.get_size()))

    # ---- partial sums over each (row, group)'s D channels -------------------
    def part_fn(k):
        def fn(idx, ridx):
            return element(idx[:nlead], idx[nlead], ridx[0]).term(k)

        return fn

    rows = sympy.Integer(1)
    for s_ in lead:
        rows = rows * s_
    # Unrealized, each partial-sum reduction is realized straight into its
    # slice of ONE (K, G, rows) buffer (rows contiguous), so the finishing sum
    # over rows is a single reduction over contiguous rows for all K * G
    # outputs: one OpenMP region instead of K (on 2 cores every region is a
    # barrier, and barriers are what stalls under load).
    parts = [
        ir.Reduction.create(
            device=device, dst_dtype=cdt, src_dtype=cdt, inner_fn=part_fn(k),
            ranges=[*lead, G], reduction_ranges=[D], reduction_type="sum",
        )
        for k in range(K)
    ]
    packed = _pack_partials(parts, lead, rows, G)
    if packed is not None:
        pk = packed.make_loader()
        fdt = _FINISH_DTYPE
        per_group = ir.Reduction.create(  # (K, G): sum over rows
            device=device, dst_dtype=fdt, src_dtype=fdt,
            inner_fn=lambda idx, ridx: load_as(pk, [idx[0], idx[1], ridx[0]], cdt, fdt),
            ranges=[K, G], reduction_ranges=[rows], reduction_type="sum",
        )
        per_group.realize()
        pg = per_group.make_loader()
        total = None
        if spec.num_shared or spec.den_shared:  # (K,): and over groups
            total = _sum_rows(lowerings[aten.permute.default](per_group, [1, 0])).make_loader()

        def coefficient_sum(k, shared):
            k_ = sympy.Integer(k)
            return (lambda idx: total([k_])) if shared else (lambda idx: pg([k_, idx[0]]))

        sums = [coefficient_sum(k, spec.num_shared if k < spec.m else spec.den_shared) for k in range(K)]
    else:  # one buffer per coefficient, each summed over its rows on its own
        sums = []
        for k, part in enumerate(parts):
            part.realize()
            shared = spec.num_shared if k < spec.m else spec.den_shared
            flat = lowerings[aten.view.default](part, [rows * G, 1] if shared else [rows, G])
            sums.append(_sum_rows(flat).make_loader())  # (1,) or (G,)
    return (dx, *_finish_coefficients(spec, sums, numerator, denominator))


def _pack_partials(parts, lead, rows, G):
    """Realize the (*lead, G) reductions ``parts`` straight into one (K, G, rows) buffer.

    The mechanism of ``ir.ConcatKernel`` (a no-op kernel owning the storage,
    each input given a non-owning layout into it), used directly: its
    ``create`` looks at the FX node being lowered (torch 2.11 asserts that
    node is a cat), and the slices here are transposed.  Returns None where
    this Inductor's internals differ; the caller then keeps separate buffers."""
    from torch._inductor import ir
    from torch._inductor.virtualized import V

    try:
        first = parts[0]
        device, dtype = first.get_device(), first.get_dtype()
        size = [len(parts), G, rows]
        kernel = ir.ConcatKernel(
            name=None, layout=ir.FixedLayout(device, dtype, size, ir.FlexibleLayout.contiguous_strides(size)),
            inputs=[],
        )
        box = ir.StorageBox(kernel)
        lead_strides = list(ir.FlexibleLayout.contiguous_strides(lead)) if lead else []
        for k, part in enumerate(parts):
            dst = ir.ReinterpretView(
                data=box,
                layout=ir.FixedLayout(device, dtype, [*lead, G], [*lead_strides, rows], offset=k * G * rows),
            )
            kernel.inputs.append(ir.ConcatKernel.realize_into(part, dst))
        kernel.name = V.graph.register_buffer(kernel)
        kernel.inputs = ir.ConcatKernel.unwrap_storage(kernel.inputs)
        V.graph.register_operation(kernel)
        return ir.TensorBox(box)
    except Exception:  # noqa: BLE001 - internals moved: fall back to separate buffers
        return None


def _sum_rows(t):
    """Sum a (R, W) tensor over R in float64: one Inductor reduction, deterministic.

    (Inductor's C++ reductions split the rows over the threads and switch to
    cascade summation past 4096 terms, which keeps float32 rounding small; a
    hand-made two-level sum here cost one OpenMP region per block of rows.)"""
    from torch._inductor import ir

    R, W = t.get_size()
    loader = t.make_loader()
    fdt = _FINISH_DTYPE
    out = ir.Reduction.create(
        device=t.get_device(), dst_dtype=fdt, src_dtype=fdt,
        inner_fn=lambda idx, ridx: load_as(loader, [ridx[0], idx[0]], t.get_dtype(), fdt),
        ranges=[W], reduction_ranges=[R], reduction_type="sum",
    )
    out.realize()
    return out


def _select(i, values: list):
    """values[i] for a sympy index i (a chain of where on the index: the lists are short)."""
    from torch._inductor.virtualized import ops

    v = values[-1]
    for k in range(len(values) - 2, -1, -1):
        hit = ops.eq(ops.index_expr(i, torch.int32), ops.constant(k, torch.int32))
        v = ops.where(hit, values[k], v)
    return v


def _finish_coefficients(spec: LoweringSpec, sums: list, numerator, denominator):
    """dnum (Gn, m), dden (Gd, n) from the m + n per-coefficient sums.

    ``sums[k]`` loads the sum of coefficient k at ``[g]`` ((G,) per-group
    sums, or (1,) for a shared row, where g is 0).  sign(b) is applied after
    the reduction (safe, signed); results are cast to the coefficients' dtype."""
    from torch._inductor import ir
    from torch._inductor.virtualized import ops

    fdt = _FINISH_DTYPE
    b_loader = denominator.make_loader()

    def num_fn(idx):
        gi, i = idx
        v = _select(i, [sums[k]([gi]) for k in range(spec.m)])
        return ops.to_dtype(v, numerator.get_dtype(), src_dtype=fdt)

    def den_fn(idx):
        gj, j = idx
        v = _select(j, [sums[spec.m + k]([gj]) for k in range(spec.n)])
        if spec.form != "abs_sum":  # d|b_j|/db_j, after the reduction
            b = load_as(b_loader, [gj, j], denominator.get_dtype(), fdt)
            v = ops.mul(v, sign_of(b, spec.zero_sign, fdt))
        return ops.to_dtype(v, denominator.get_dtype(), src_dtype=fdt)

    dnum = ir.Pointwise.create(
        device=numerator.get_device(), dtype=numerator.get_dtype(), inner_fn=num_fn,
        ranges=list(numerator.get_size()),
    )
    dden = ir.Pointwise.create(
        device=denominator.get_device(), dtype=denominator.get_dtype(), inner_fn=den_fn,
        ranges=list(denominator.get_size()),
    )
    return dnum, dden


# ============================================================================
# The Triton template
# ============================================================================
#
# How is the template parallelised?
#   x and dy are viewed as (R, C).  grid = (NPROG, cdiv(C, BLOCK_C)): program
#   (p, j) owns channel tile j and the row blocks p, p + NPROG, ... (a
#   grid-stride `while` loop).  Per element it computes dx (stored through
#   store_output, where Inductor splices any fused epilogue) and adds the
#   m + n coefficient terms into (BLOCK_R, BLOCK_C) register accumulators;
#   at the end each program sums them over rows and stores them into its
#   coefficient tensor's workspace (``_workspace``):
#   - below _SLAB_MAX_CHANNELS (4096), summed over slabs of adjacent channels too
#     (``_slab``: a power of two dividing the group width, or C for a shared
#     row, and every config's BLOCK_C), at [(g k + i), e NPROG + p], g the
#     output row, e its slab, the programs fastest: each output's finishing sum
#     is then one contiguous run of 132 to 1,056 entries at KAT's shapes (an
#     inner reduction, one program per output), in one layer: a backward is
#     three kernels;
#   - from _SLAB_MAX_CHANNELS and for odd group widths, one entry per channel at [p, c, i], coefficient-minor
#     (so that the finishing reduction iterates its outputs in their (group,
#     coefficient) order and Inductor fuses the sign of b and the cast into
#     it), summed by Inductor's reductions, split in two layers where long.
#   The workspaces' program entries (NPROG) and the slabs come from the shapes
#   (and the SM count) only, never from a config, so every autotuning choice
#   writes the same workspaces.  A config launches NPROG_RUN <= NPROG row
#   programs (one of _ROW_PROGRAM_LEVELS), and its programs write zeros into the
#   entries no program of theirs owns.  For a given choice the sums run in a
#   fixed order: the coefficient gradients are deterministic.
#
# Configurations are a starting point for H200 (BLOCK_R x BLOCK_C x warps):
# 8 x 128 x 4 keeps 8 elements per thread and m + n = 10 accumulators in
# registers; the others trade rows for channels for narrow tensors.  First
# H200 reading (torch 2.11, do_bench of the compiled backward op alone, wrapper
# included): 0.352 ms at 128 x 197 x 3072 float32, 0.296 ms in bf16, against
# 0.251 / 0.231 ms for the project's eager Triton kernel.  Second reading
# (torch.profiler, kernel alone): 0.342 ms against the eager kernel's 0.228 ms.
# The difference is the loop: the eager kernel's row loop is a `for` that Triton
# software-pipelines (0.25 ms at 4 stages against 0.32 ms for a `while`, H200,
# same tiles), the template's was a `while`.  So the autotuner is also offered
# the eager kernel's tuned launches with a pipelined `for` (a 5th entry,
# PIPE_STAGES): 4 x 128 tiles 4 deep (its float32 pick), 4 x 256 3 deep (its
# bf16 pick) and 8 x 128 3 deep.  The `while` configs stay: autotuning measures
# every choice on the device, so the pick is never slower than before.
# Pipelining stages x and dy through shared memory, and in bf16 Triton reads them back one 16-bit
# element at a time: the sm_90 build of the 4 x 256 3-deep loop at 3072 bf16 issues 50
# instructions per element (LDS.U16 and its shift for each of x and dy, the stage's barriers).
# Loading the next row block into registers in the loads' own layout (PIPE_STAGES = -1; -2 two
# blocks ahead) takes it to 43.4 (LDG.128, 168 registers), but offered beside the pipelined
# loops it lost every one of 26 H200 autotunings (bench/results: calls 24-26 of 2026-11-29), and
# with every choice's time recorded (call 31, bench/probe_template_choices.py) one to four blocks
# ahead were 18-138% slower than the best pipelined loop at 768-3072 bf16, 23-88% at 3072 float32:
# it stays a template mode (`_state["configs"]`), not offered.
#
# Row programs (NPROG_RUN): C / nominal BLOCK_C column tiles, times programs per SM, over the
# SMs, at each level of _ROW_PROGRAM_LEVELS, and every config is offered at every level.  One
# level, (128, 4), by default.  Neither of two counts wins everywhere (H200, bf16 template at
# 128 x 197 rows, us, calls 24-26): with (128, 4) 27.6 / 50.5 / 97.2 / 172.9 at 384 / 768 / 1536
# / 3072 channels, with (256, 3) 34.0 / 46.1 / 91.0 / 168.4; float32 at 384 40.0 against 32.8, at
# 3072 221.8 against 226.3.  Offering both (FLASHKAT_ROW_PROGRAM_LEVELS=128x4,256x3) lets the
# autotuner take the better per shape (bf16 template 2-9% faster at 768-3072 channels, calls 27-28),
# but a KAT-T bf16 training step did not move (8.60 / 8.71 ms against 8.68 / 8.62 / 8.61) and
# autotuning twice the choices added 12-18 s to its first step: off by default
# (bench/run_h200_levels.sh).
def _parse_levels(raw: str, name: str) -> tuple:
    try:
        levels = tuple((int(c), int(p)) for c, p in (item.lower().split("x") for item in raw.split(",")))
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a comma list of CxP, e.g. 128x4,256x3")
    if not levels or any(c < 1 or p < 1 for c, p in levels):
        raise ValueError(f"{name}={raw!r}: nominal widths and programs per SM must be >= 1")
    return levels


def _levels_from_env() -> tuple:
    raw = os.environ.get("FLASHKAT_ROW_PROGRAM_LEVELS", "").strip()
    return _parse_levels(raw, "FLASHKAT_ROW_PROGRAM_LEVELS") if raw else ((128, 4),)


_ROW_PROGRAM_LEVELS = _levels_from_env()

# ROW_SUM (the template's accumulators summed over each row block's rows: (1, BLOCK_C) instead of
# (BLOCK_R, BLOCK_C), half the registers or less, so twice the programs per SM; backward.py.jinja):
# the pipelined 4-warp configs of _ROW_SUM_BASE are offered with it beside the others, at the
# row-program levels of _ROW_SUM_LEVELS (appended to _ROW_PROGRAM_LEVELS in _all_levels()).  The
# sm_90 builds at 3072 bf16 take 64 registers at 8 x 128 against 128 without, 96 at 16 x 128
# against 226.  Every choice timed on the H200 (bench/probe_template_choices.py, device call 36 of
# 2026-11-29, bench/run_h200_rowsum.sh), bf16, best with ROW_SUM against best without:
#   3072: 148.6 us (16 x 128, 4 deep, 128 x 8 programs) against 173.2 us (8 x 128, 3 deep)
#   1536:  80.9 us (16 x 128, 4 deep, 128 x 4)          against  98.9 us (4 x 256, 3 deep)
#    768:  43.7 us (16 x 128, 4 deep, 128 x 4)          against  52.7 us (4 x 256, 3 deep)
# the 7 best choices at 3072 and the 13 best at 1536 and 768 had it; 16 x 128 led everywhere,
# 8 x 128 next; 4 x 256 and 4 x 128 with it trailed, and 128 x 5 programs never led.  float32 at 3072: 227.1 us with it
# against 223.5 us without (the autotuner keeps the latter).  Graphed step (rational forward +
# backward, GPU): bf16 3072 0.248 ms against 0.268 ms in call 34.  So it is offered by default, at
# 128 x 8 and 128 x 4 programs; FLASHKAT_ROW_SUM_LEVELS=CxP[,CxP] names other levels, `off` none.
# The workspaces hold the largest level's entries for every choice: at 3072 without slabs the
# finishing sums over 44 programs' per-channel entries took 10.0-11.1 us (calls 38-39) against
# 6.2-6.8 us over 22 (calls 29-34).  With slabs at 3072 (_slab, since call 41) they take 3.2 us,
# and the graphed bf16 / fp16 / float32 step there took 0.236 / 0.233 / 0.372 ms with both levels,
# 0.238 / 0.236 / 0.374 with 128 x 4 alone (without slabs), in one run: both stay.
# The 64-wide 2-warp loops (the last two of _ROW_SUM_BASE) led every choice at 192 channels in
# call 41, bf16 and fp16 (16 x 64 pipelined 4 deep 15.4-15.6 us, 32 x 64 3 deep 16.0-16.3, against
# 19.1-19.3 for the best 128-wide loop, a quarter of whose lanes 192 channels leave idle), and
# 32 x 64 tied the best at 3072 bf16 with slabs (151.7 us; bench/run_h200_slabs.sh).
_ROW_SUM_DEFAULT = ((128, 8), (128, 4))


def _row_sum_levels_from_env() -> tuple:
    raw = os.environ.get("FLASHKAT_ROW_SUM_LEVELS", "").strip()
    if raw.lower() == "off":
        return ()
    return _parse_levels(raw, "FLASHKAT_ROW_SUM_LEVELS") if raw else _ROW_SUM_DEFAULT


_ROW_SUM_LEVELS = _row_sum_levels_from_env()
_ROW_SUM_BASE = [(16, 128, 4, 4, 4), (16, 128, 4, 3, 3), (8, 128, 4, 4, 4), (8, 128, 4, 3, 3),
                 (16, 64, 2, 4, 4), (32, 64, 2, 3, 3)]
# Tried and removed (commit 9646483, device call 49 of 2026-11-29, bench/run_h200_pairs.sh): ROW_SUM
# loops over 8 x 256 tiles whose per-group coefficient rows were gathered once per pair of adjacent
# channels and joined, so that each thread held two adjacent channels and read x and dy back from
# shared memory two or four at a time (sm_90 build at 3072 bf16: 47.5 instructions per element and
# 96 registers, against 48.75 and 105 for 16 x 128).  Offered beside these, the autotuner kept
# 16 x 128 at 3072 bf16 and fp16 (150.4-150.8 us), so they went.
# LANES (ROW_SUM 2 in backward.py.jinja): the ROW_SUM loops' work in the loads' own layout, VEC
# adjacent channels (16 bytes) per thread, the coefficient rows gathered once per VEC channels of
# one group, and each thread's terms summed in the thread (its VEC channels of each of its rows).
# The other loops hold one column per thread (the per-group coefficient rows' layout), so Triton
# reads x and dy back from the pipeline's shared memory one 16-bit element at a time and
# transposes dx through shared memory for its store.  sm_90 build at 3072 bf16, 16 x 128 pipelined
# 4 deep (bench/probe_sass.py): 47.1 instructions per element against 48.75 (LDS.128 instead of
# LDS.U16, no transpose), 128 registers against 105 (four 4-warp programs per SM both).  On the
# H200 (device call 50 of 2026-11-29, bench/run_h200_lanes.sh) every choice's autotuning time was
# within 1% of the best ROW_SUM loop's at 768-3072 channels in bf16 / fp16 (3072 bf16: 148.7 us
# against 149.3), the graphed step 0.232-0.234 ms against 0.232-0.233 without them; with the row
# blocks walked from the last (ROWS_REVERSED below) they were the autotuner's pick at every width
# from 192 to 3072 in bf16 and fp16 (call 52, bench/run_h200_defaults.sh; float32 kept the plain
# 4 x 128 loop), always one of these two, so only they are offered (five offered at first: each
# choice costs compile and autotuning time, KAT-T bf16's first step took 87 s against 51 s with
# none, call 53).  Offered beside the others where VEC divides C, the group width, BLOCK_C and the
# slabs (_lanes_fit), at the ROW_SUM levels; FLASHKAT_LANES=0 withdraws them.
_LANES_BASE = [(16, 128, 4, 4, 4), (16, 64, 2, 4, 4)]


def _lanes_from_env() -> bool:
    """FLASHKAT_LANES: 1 (the default) or 0."""
    return flag_from_env("FLASHKAT_LANES", True)


_LANES = _lanes_from_env()

# ROWS_REVERSED: the pipelined loops walk their row blocks from the last to the first, so that a
# backward begins with the rows read or written last before it, which may still be in L2 (50 MB on
# an H200): dy's last rows in a training step (the next layer's backward has just written dy, in
# row order), x's in a lone rational's graphed step (its forward has just read x).  H200, 128 x
# 197 x 3072, one CUDA graph per step, two interleaved rounds in one call: the template 144.0-146.6
# us against 152.3-153.3, the step 0.224-0.227 ms wall against 0.232-0.233 in bf16 / fp16 (device
# call 51 of 2026-11-29, bench/run_h200_orders.sh).  The same run had the grid as (column tiles,
# row programs), so that the programs running together read whole rows: no faster (0.233-0.235),
# nor with both (0.231-0.234), so that order went.  FLASHKAT_ROWS_REVERSED=0 walks them forwards.
_ROWS_REVERSED = flag_from_env("FLASHKAT_ROWS_REVERSED", True)
_MIN_ROWS_PER_PROGRAM = 8
_ONE_LAYER_MAX_TERMS = 4096  # finishing sums up to this long run in one layer (_finish_from_workspaces)


def _slab_max_from_env() -> int:
    """FLASHKAT_SLAB_MAX_CHANNELS: the template sums slabs of channels below this width only
    (_slab); 4096 without it."""
    return int_from_env("FLASHKAT_SLAB_MAX_CHANNELS", 4096, lambda v: v >= 1, "a positive channel count, e.g. 2048")


_SLAB_MAX_CHANNELS = _slab_max_from_env()

# ONE_FINISH: where both workspaces hold slabs, both coefficient tensors' finishing sums are one
# Inductor reduction over one (m rows + n rows) output, with the sign of b and the cast fused after
# it, the two gradients views of it (_finish_in_one): a backward is then two kernels (the template
# and that one) instead of three, one launch fewer per rational backward (24 per KAT-T step).
# On by default (FLASHKAT_ONE_FINISH=0 gives the two finishing kernels back): H200, 128 x 197 x
# 3072, one CUDA graph per step, wall time, bf16 / fp16, two interleaved rounds in one call each:
# 0.238 / 0.236 ms with two finishing kernels against 0.236 / 0.234 with one (device call 47 of
# 2026-11-29, bench/run_h200_pdl.sh; 0.238 / 0.238 against 0.236 / 0.236 in call 45,
# bench/run_h200_wall.sh).  The CUDA template-numerics and dx-over-dy tests and KAT-T bf16
# training under cudagraph trees ran with it (call 46).
def _one_finish_from_env() -> bool:
    """FLASHKAT_ONE_FINISH: 1 (the default) or 0."""
    return flag_from_env("FLASHKAT_ONE_FINISH", True)


_ONE_FINISH = _one_finish_from_env()


def _next_pow2(v: int) -> int:
    return 1 << max(0, int(v) - 1).bit_length()


def _all_levels() -> tuple:
    """Every row-program level a config may name: _ROW_PROGRAM_LEVELS, then _ROW_SUM_LEVELS."""
    return _ROW_PROGRAM_LEVELS + _ROW_SUM_LEVELS


def _template_configs(C_hint: int, cdt: torch.dtype, k: int):
    """(BLOCK_R, BLOCK_C, num_warps, num_stages, PIPE_STAGES, row-program level, ROW_SUM) choices
    offered to the autotuner, the level an index into _all_levels() (``_state["configs"]``
    overrides them; its entries may leave out PIPE_STAGES, the level and ROW_SUM, meaning 0)."""
    if _state.get("configs"):
        return [tuple(c) + (0,) * (7 - len(c)) for c in _state["configs"]]
    cmax = max(16, min(256, _next_pow2(C_hint)))
    base = [(8, 128, 4, 1, 0), (16, 128, 8, 1, 0), (4, 256, 4, 1, 0), (16, 64, 4, 1, 0), (32, 64, 8, 1, 0),
            (4, 128, 4, 4, 4), (4, 256, 4, 3, 3), (8, 128, 4, 3, 3),
            # pipelined loops won every H200 pick since (BLOCK_R = 4): wider and lighter ones too
            (4, 256, 8, 3, 3), (2, 256, 4, 4, 4), (8, 256, 8, 3, 3)]
    def sizes(configs):
        sized = []
        for br, bc, w, st, pipe in configs:
            bc = min(bc, cmax)
            if cdt == torch.float64 or k > 10:  # register pressure: halve the rows
                br = max(1, br // 2)
            if (br, bc, w, st, pipe) not in sized:
                sized.append((br, bc, w, st, pipe))
        return sized

    out = [cfg + (level, 0) for level in range(len(_ROW_PROGRAM_LEVELS)) for cfg in sizes(base)]
    first = len(_ROW_PROGRAM_LEVELS)
    out += [cfg + (first + i, 1) for i in range(len(_ROW_SUM_LEVELS)) for cfg in sizes(_ROW_SUM_BASE)]
    if _LANES:
        out += [cfg + (first + i, 2) for i in range(len(_ROW_SUM_LEVELS)) for cfg in sizes(_LANES_BASE)]
    return out


def _row_programs(device: torch.device, R, C_hint: int, level: tuple = _ROW_PROGRAM_LEVELS[0]) -> int:
    """Row programs at one of _ROW_PROGRAM_LEVELS, (nominal BLOCK_C, programs per SM): enough
    to fill the device a few times over, from the shapes only."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
    else:  # the Triton interpreter on CPU (tests): a few programs
        sms = 2
    nominal_c, per_sm = level
    col_tiles = max(1, -(-C_hint // nominal_c))
    p = max(1, -(-(per_sm * sms) // col_tiles))
    if isinstance(R, (int, sympy.Integer)):  # static rows: no more programs than row blocks
        p = min(p, max(1, -(-int(R) // _MIN_ROWS_PER_PROGRAM)))
    return p


_template_state: dict = {}


def _template():
    """The TritonTemplate, created once (template names are global in Inductor)."""
    if "t" not in _template_state:
        from torch._inductor.select_algorithm import SymbolicGridFn, TritonTemplate

        existing = TritonTemplate.all_templates.get(TEMPLATE_NAME)
        if existing is not None:
            _template_state["t"] = existing
        else:
            @SymbolicGridFn
            def flashkat_rational_bwd_grid(R, C, meta, *, cdiv):
                return (meta["NPROG_RUN"], cdiv(C, meta["BLOCK_C"]), 1)

            with open(_TEMPLATE_FILE) as f:
                source = f.read()
            _template_state["t"] = TritonTemplate(name=TEMPLATE_NAME, grid=flashkat_rational_bwd_grid, source=source)
    return _template_state["t"]


_TL_ACC = {torch.float32: "tl.float32", torch.float64: "tl.float64"}
_FORM_ID = {"safe": 0, "signed": 1, "abs_sum": 2}


def _template_backward(grad, x, numerator, denominator, spec: LoweringSpec):
    """dx from the template (epilogue-fusable), coefficient gradients from its workspace; None if it declines."""
    from torch._inductor import ir
    from torch._inductor.lowering import lowerings
    from torch._inductor.select_algorithm import autotune_select_algorithm
    from torch._inductor.virtualized import V

    aten = torch.ops.aten
    device = x.get_device()
    size = list(x.get_size())
    C = size[-1]
    R = sympy.Integer(1)
    for s_ in size[:-1]:
        R = R * s_
    if V.graph.sizevars.statically_known_equals(R * C, 0):
        return None  # empty: the IR path handles it without a launch
    if len(size) > 9:
        return None  # the template indexes at most 8 leading dimensions
    G, K = spec.groups, spec.m + spec.n
    C_hint = size_hint(C)

    # Template kernels read through pointers: realized (R, C) views (copies only
    # if x or dy cannot be viewed so, e.g. a permuted x).
    x2 = ir.ExternKernel.realize_input(lowerings[aten.view.default](x, [R, C]))
    g2 = ir.ExternKernel.realize_input(lowerings[aten.view.default](grad, [R, C]))
    a = ir.ExternKernel.realize_input(numerator)
    b = ir.ExternKernel.realize_input(denominator)

    # the workspaces hold the largest count's entries; each choice launches its level's count
    level_programs = [_row_programs(device, R, C_hint, level) for level in _all_levels()]
    nprog = max(level_programs)
    configs = _template_configs(C_hint, spec.cdt, K)
    ws_num, slab_num, per_num = _workspace(spec, C, C_hint, spec.m, spec.num_shared, configs, nprog, device)
    ws_den, slab_den, per_den = _workspace(spec, C, C_hint, spec.n, spec.den_shared, configs, nprog, device)
    # dx in x's own shape (contiguous): Inductor matches the template's store
    # with an epilogue's loads dimension by dimension (on GPU it does not merge
    # loops before fusing), so an (R, C) output would not fuse with a consumer
    # indexing (B, L, C).  The grid still sees (R, C) (call_sizes).
    out_size = size if len(size) >= 2 else [1, C]
    inputs = [x2, g2, a, b, ws_num, ws_den]
    mutated = [ws_num, ws_den]
    into_grad = _dx_into_grad(x2, g2, R, C)
    if into_grad:
        # dx over dy's buffer (mutated), which nothing reads afterwards: no dx-sized allocation,
        # as Inductor's in-place reuse gives pointwise kernels (it never does so for templates).
        # The template's own output is then a one-element placeholder it never writes.
        layout = ir.FixedLayout(device, torch.float32, [1], [1])
        mutated = [g2, ws_num, ws_den]
    else:
        layout = ir.FixedLayout(device, x.get_dtype(), out_size, ir.FlexibleLayout.contiguous_strides(out_size))
    # 1/q as one approximate reciprocal (rcp.approx.ftz.f32, within 1 ulp; inline PTX, which the
    # Triton interpreter cannot run) on NVIDIA CUDA (takes_ptx) in float32 compute;
    # `_state["fast_rcp"]` overrides
    fast_rcp = _state.get("fast_rcp")
    if fast_rcp is None:
        fast_rcp = takes_ptx(device) and spec.cdt == torch.float32
    choices: list = []
    errors = []
    offered = set()
    vec = max(1, 16 // x.get_dtype().itemsize)  # channels per 16 bytes of x: the LANES loops (ROW_SUM 2)
    for block_r, block_c, warps, stages, pipe, level, row_sum in configs:
        if row_sum == 2 and not _lanes_fit(spec, C, vec, block_c, pipe, slab_num, slab_den):
            continue
        nprog_run = level_programs[level]
        if (block_r, block_c, warps, stages, pipe, nprog_run, row_sum) in offered:  # levels that coincide
            continue
        offered.add((block_r, block_c, warps, stages, pipe, nprog_run, row_sum))
        err = _template().maybe_append_choice(
            choices,
            input_nodes=inputs,
            layout=layout,
            mutated_inputs=mutated,
            num_stages=stages,
            num_warps=warps,
            M=spec.m, N=spec.n, G=G,
            NUM_SHARED=spec.num_shared, DEN_SHARED=spec.den_shared,
            FORM=_FORM_ID[spec.form], ZERO_KAT=spec.zero_sign == "kat",
            NLEAD=len(out_size) - 1, NPROG=nprog, NPROG_RUN=nprog_run, SLAB_NUM=slab_num, SLAB_DEN=slab_den,
            PER_NUM=per_num, PER_DEN=per_den, BLOCK_R=block_r, BLOCK_C=block_c, DX_INTO_GY=into_grad,
            ACC_TYPE=_TL_ACC[spec.cdt], PIPE_STAGES=pipe, FAST_RCP=fast_rcp, ROW_SUM=int(row_sum), VEC=vec,
            ROW_REPS=_row_reps(block_r, block_c, warps, vec) if row_sum == 2 else 1,
            EVEN_C=int(isinstance(C, (int, sympy.Integer)) and int(C) % block_c == 0),
            ROWS_REVERSED=int(_ROWS_REVERSED and pipe > 0),
            call_sizes=[R, C],
        )
        if err is not None:
            errors.append(err)
    if not choices:
        raise NotImplementedError(f"flashkat lowering: no backward template config compiled: {errors}")
    res = autotune_select_algorithm(TEMPLATE_NAME, choices, inputs, layout)
    dx = res[0] if isinstance(res, tuple) else res  # torch 2.11: the node; 2.13+: (node, choice)
    if into_grad:  # dx is dy's buffer, read after the template's mutation of it
        from torch._dynamo.utils import counters

        from ..recognisers.base import COUNTER

        counters[COUNTER][DX_INTO_GRAD] += 1
        dx = lowerings[aten.view.default](ir.TensorBox(g2), size)
    elif len(out_size) != len(size):  # 1-D x
        dx = lowerings[aten.view.default](dx, size)

    # ---- stage 2: sum the workspace over programs and the group's slabs
    # (and over groups for a shared row): one fixed-order Inductor reduction
    # per output, with the sign of b and the cast fused after it.
    return (dx, *_finish_from_workspaces(spec, nprog, numerator, denominator,
                                         (ws_num, slab_num, per_num), (ws_den, slab_den, per_den)))


def _lanes_fit(spec: LoweringSpec, C, vec: int, block_c: int, pipe: int, slab_num: int, slab_den: int) -> bool:
    """A LANES loop (ROW_SUM 2: VEC adjacent channels of one group per lane group, summed in the
    thread) applies where VEC divides C, the group width, BLOCK_C and both workspaces' slabs, and
    VEC is 4 or more (16-bit and float32 x; float64, 2 per 16 bytes, keeps the other loops)."""
    width = spec.width
    return (vec >= 4 and pipe >= 0 and isinstance(C, (int, sympy.Integer)) and int(C) % vec == 0
            and isinstance(width, (int, sympy.Integer)) and int(width) % vec == 0 and block_c % vec == 0
            and slab_num % vec == 0 and slab_den % vec == 0)


def _row_reps(block_r: int, block_c: int, warps: int, vec: int) -> int:
    """Rows of a LANES tile that each thread holds (Triton's blocked layout of the loads: VEC
    channels per thread, lane groups across a warp's threads, then rows across threads and warps,
    repeated): the loop sums them in the thread too."""
    groups = block_c // vec
    rows_per_layout = max(1, 32 // groups) * warps
    return max(1, block_r // rows_per_layout)


@functools.lru_cache(None)
def _view_targets() -> frozenset:
    """The FX targets that only view their input (the chain from dy's buffer to this backward)."""
    from ..recognisers.base import RESHAPES

    return frozenset(RESHAPES + (torch.ops.aten.alias.default,))


def _dx_into_grad(x2, g2, R, C) -> bool:
    """True where the template may write dx over dy: nothing reads dy after this backward, dy's
    buffer is the backward's own (computed in this graph: not an input, not a view of a larger
    or shared buffer), contiguous (R, C) in x's dtype, and no pointwise op consumes dx (an
    epilogue fused into the template's store_output is worth more than the buffer).

    Inductor frees dy right after the template and allocates dx before it, so at a training
    step's memory peak (the first KAN block of the backward) both were live: one activation-sized
    tensor more than a ViT, whose GELU backward Inductor computes in place.  Decided on the FX
    graph being lowered (``V.graph.current_node``: this ``rational_bwd``; dy its first argument)
    and on the IR (the buffer that backs dy after realisation)."""
    from torch._inductor import ir
    from torch._inductor.virtualized import V

    if _state.get("dx_into_grad") is False:
        return False
    node = getattr(V.graph, "current_node", None)
    if node is None or node.target is not torch.ops.flashkat.rational_bwd.default or not node.args:
        return False
    # FX: dy, through plain views, each with this backward as its only reader, down to a node
    # computed in this graph
    g = node.args[0]
    while True:
        if not isinstance(g, torch.fx.Node) or len(g.users) != 1 or g.op != "call_function":
            return False
        if g.target in _view_targets():
            g = g.args[0]
            continue
        break
    if any(a is g for a in node.args[1:]):  # dy's storage is also x
        return False
    # dx's readers, through views: no pointwise op (it would fuse into the template's store as an
    # epilogue)
    readers = [u for item in node.users if item.target is operator.getitem and item.args[1] == 0
               for u in item.users]
    while readers:
        u = readers.pop()
        if u.op != "call_function":
            continue
        if u.target in _view_targets():
            readers.extend(u.users)
        elif torch.Tag.pointwise in getattr(u.target, "tags", ()):
            return False
    # IR: g2 views all of one computed buffer, contiguous (R, C), x's dtype
    sizevars = V.graph.sizevars
    if not isinstance(g2, ir.ReinterpretView) or g2.get_dtype() != x2.get_dtype():
        return False
    layout = g2.get_layout()
    if not (isinstance(layout, ir.FixedLayout) and sizevars.statically_known_equals(layout.offset, 0)
            and len(layout.stride) == 2 and sizevars.statically_known_equals(layout.stride[1], 1)
            and sizevars.statically_known_equals(layout.stride[0], C)):
        return False
    name = g2.get_name()
    if name == x2.get_name() or name in V.graph.graph_inputs or name in V.graph.constants:
        return False
    buf = V.graph.try_get_buffer(name)
    # a buffer some kernel computed (a pointwise or reduction, a matmul, a template), never an
    # input, a mutation or a fallback's output that may alias one of its inputs
    if not isinstance(buf, (ir.ComputedBuffer, ir.ExternKernelOut, ir.TemplateBuffer)):
        return False
    if buf.get_mutation_names() or buf.get_inputs_that_alias_output():
        return False
    if not isinstance(buf.get_output_spec(), (ir.FixedLayout, ir.FlexibleLayout)):
        return False
    return sizevars.statically_known_equals(buf.get_numel(), R * C)


def _workspace(spec: LoweringSpec, C, C_hint: int, k: int, shared: bool, configs, nprog: int, device):
    """(workspace, slab, entries per output row) of one coefficient tensor's partial sums.

    slab > 1: (rows x k, per x NPROG), rows = 1 (shared) or G, per = the row's span / slab:
    entry [(g k + i), e NPROG + p], programs fastest; slab = 1: (NPROG, C, k), per unused (0)."""
    from torch._inductor.lowering import empty_strided

    span = C if shared else spec.width
    slab = _slab(span, configs, C_hint)
    if slab == 1:
        return empty_strided([nprog, C, k], None, dtype=spec.cdt, device=device), 1, 0
    rows = 1 if shared else spec.groups
    per = int(span) // slab
    return empty_strided([rows * k, per * nprog], None, dtype=spec.cdt, device=device), slab, per


def _slab(span, configs, c_hint: int) -> int:
    """Channels the template sums into one workspace entry, where one entry may cover ``span``
    channels (a group's width, or all C for a shared row): the largest power of two dividing span,
    at most every config's BLOCK_C (all powers of two, so the slab divides each: the workspace is
    the same whatever the config); 1 where span is symbolic, or where C >= _SLAB_MAX_CHANNELS.

    Why there was a limit at 2048: summing slabs in the template (a reshape of each program's sums)
    cost the fastest bf16 config of the time at 3072 channels 11% (H200: 8 x 128 tiles 0.166 -> 4 x 256 0.184 ms,
    logs_h200_2026-11-29/call7_ and call9_rational_capture.log), while at 192-1536 every pick got
    faster (2-8%) and the finishing sums, a share of a step there, went from four kernels to two.
    At 3072 the finishing sums are 3% of a step.

    Since the ROW_SUM loops lead at 3072 (device calls 38-39), the finishing sums there were 11.1 us
    of the 244 us bf16 step (10.0 of 387 in float32: four kernels over 44 row programs' entries),
    against 2.6-3.0 us at 192-1536 channels, where slabs are summed.  In the sm_90 builds at 3072
    slabs leave the ROW_SUM loops as they are (bf16 16 x 128: 95 registers and 770 instructions
    in the loop, against 95 and 769 without; the sums follow the loop once per program), while the
    plain 8 x 128 bf16 loop goes from 128 to 152 registers (the 11% above) and float32 4 x 128
    from 80 to 96 (still 5 programs per SM, of the 4 its level launches).
    Timed in one run (device call 41 of 2026-11-29, bench/run_h200_slabs.sh), the graphed step at
    3072 with slabs against without: bf16 0.236 / 0.243 ms, fp16 0.233 / 0.240, float32 0.372 /
    0.379 (GPU); two finishing kernels of 1.5-1.7 us instead of four of 1.3-4.5 us, the template
    153 -> 156 us in bf16 and 223 us in float32 both.  So the limit is 4096 since
    (FLASHKAT_SLAB_MAX_CHANNELS=2048 restores the old one)."""
    if not isinstance(span, (int, sympy.Integer)) or c_hint >= _SLAB_MAX_CHANNELS:
        return 1
    d = int(span)
    return max(1, min(d & -d, min(c[1] for c in configs)))


def _finish_in_one(spec: LoweringSpec, nprog: int, numerator, denominator, num_ws: tuple, den_ws: tuple):
    """_ONE_FINISH: (dnum, dden) as views of one realized buffer of m rows + n rows outputs, one
    reduction over both workspaces' runs (an output's entries past its own run masked off) with the
    sign of b and the cast after it; None where it does not apply (off, a workspace without slabs,
    or coefficient tensors of two dtypes)."""
    from torch._inductor import config, ir
    from torch._inductor.lowering import lowerings
    from torch._inductor.virtualized import ops
    from torch.utils._sympy.functions import FloorDiv, ModularIndexing

    (ws_n, slab_n, per_n), (ws_d, slab_d, per_d) = num_ws, den_ws
    out_dtype = numerator.get_dtype()
    if not (_ONE_FINISH and slab_n > 1 and slab_d > 1 and denominator.get_dtype() == out_dtype):
        return None
    cdt, fdt, n = spec.cdt, _FINISH_DTYPE, spec.n
    t_num = (1 if spec.num_shared else spec.groups) * spec.m  # outputs [0, t_num): the numerator's
    t_all = t_num + (1 if spec.den_shared else spec.groups) * n
    len_n, len_d = per_n * nprog, per_d * nprog
    length = max(len_n, len_d)
    load_n, load_d, load_b = ws_n.make_loader(), ws_d.make_loader(), denominator.make_loader()

    def below(index, bound: int):
        return ops.lt(ops.index_expr(index, torch.int64), ops.constant(bound, torch.int64))

    def fn(idx, ridx):
        o, r = idx[0], ridx[0]
        is_num = below(o, t_num)
        mask_n = is_num if len_n == length else ops.and_(is_num, below(r, len_n))
        mask_d = ops.logical_not(is_num) if len_d == length else ops.and_(ops.logical_not(is_num), below(r, len_d))
        v_n = ops.masked(mask_n, lambda: load_as(load_n, [o, r], cdt, fdt), 0.0)
        v_d = ops.masked(mask_d, lambda: load_as(load_d, [o - t_num, r], cdt, fdt), 0.0)
        return ops.add(v_n, v_d)

    with config.patch(split_reductions=config.split_reductions and length > _ONE_LAYER_MAX_TERMS):
        red = ir.Reduction.create(device=ws_n.get_device(), dst_dtype=fdt, src_dtype=fdt, inner_fn=fn,
                                  ranges=[t_all], reduction_ranges=[length], reduction_type="sum")
    red.realize()
    load_sum = red.make_loader()

    def final_fn(idx):
        o = idx[0]
        v = load_sum(idx)
        if spec.form != "abs_sum":  # d|b_j|/db_j, after the reduction, on the denominator's outputs
            is_den = ops.logical_not(below(o, t_num))
            j = o - t_num
            b_index = [sympy.Integer(0), j] if spec.den_shared else [FloorDiv(j, n), ModularIndexing(j, 1, n)]
            b = ops.masked(is_den, lambda: load_as(load_b, b_index, denominator.get_dtype(), fdt), 0.0)
            v = ops.where(is_den, ops.mul(v, sign_of(b, spec.zero_sign, fdt)), v)
        return ops.to_dtype(v, out_dtype, src_dtype=fdt)

    both = ir.Pointwise.create(device=ws_n.get_device(), dtype=out_dtype, inner_fn=final_fn, ranges=[t_all])
    both.realize()
    aten = torch.ops.aten
    dnum = lowerings[aten.slice.Tensor](both, 0, 0, t_num)
    dden = lowerings[aten.slice.Tensor](both, 0, t_num, t_all)
    return (lowerings[aten.view.default](dnum, list(numerator.get_size())),
            lowerings[aten.view.default](dden, list(denominator.get_size())))


def _finish_from_workspaces(spec: LoweringSpec, nprog: int, numerator, denominator, num_ws: tuple, den_ws: tuple):
    from torch._inductor import config, ir
    from torch._inductor.virtualized import ops

    one = _finish_in_one(spec, nprog, numerator, denominator, num_ws, den_ws)
    if one is not None:
        return one

    cdt, G, C = spec.cdt, spec.groups, spec.channels
    fdt = _FINISH_DTYPE
    device = num_ws[0].get_device()

    def coefficient_sum(workspace: tuple, k: int, shared: bool):
        ws, slab, per = workspace
        wl = ws.make_loader()
        rows = 1 if shared else G
        span = C if shared else spec.width  # channels per output row
        if slab > 1:  # [(g k + i), e NPROG + p]: each output one contiguous run (an inner reduction)
            reduction_ranges = [per * nprog]

            def fn(idx, ridx):
                return load_as(wl, [idx[0] * k + idx[1], ridx[0]], cdt, fdt)
        else:  # [p, c, i]: the row's span of channels (all C for a shared row, whose g is 0)
            reduction_ranges = [nprog, span]

            def fn(idx, ridx):
                return load_as(wl, [ridx[0], idx[0] * span + ridx[1], idx[1]], cdt, fdt)

        # One layer where it is short: the template has summed each program's rows and slabs, so
        # an output sums NPROG x (entries per row): 264 at KAT's 768 and 192 channels on the H200
        # (D / slab = 3 per group), 1056 for a shared row at 768 (88 programs x 12 slabs of 64).
        # Inductor would split even those in two layers when a few outputs leave the device
        # idle: four kernels per backward, whose launches and gaps cost more than the sums.
        # Longer sums (slabs of 1: wide or odd group widths) keep Inductor's split: with one
        # entry per channel, 8448 per output, one layer was slower (10.1 + 2.1 + 1.3 us against
        # 2.2 + 1.9 + 1.5 + 1.2 us split, 128 x 197 x 3072 float32,
        # bench/results/h200_rational_2026-11-28_unsplit_static.json and _static_nd_fwd.json).
        # The slab layout puts the programs fastest because an outer reduction (outputs fastest,
        # the layout before) runs on one program here: 4.9 us per call at KAT-T's 192 channels
        # (792 entries, h200_train_2026-11-29_kat_t_bfloat16_fused_adamw_profile_slabs.json).
        terms = nprog * size_hint(span) // slab
        with config.patch(split_reductions=config.split_reductions and terms > _ONE_LAYER_MAX_TERMS):
            red = ir.Reduction.create(
                device=device, dst_dtype=fdt, src_dtype=fdt, inner_fn=fn,
                ranges=[rows, k], reduction_ranges=reduction_ranges, reduction_type="sum",
            )
        red.realize()
        return red.make_loader()

    num_sum = coefficient_sum(num_ws, spec.m, spec.num_shared)
    den_sum = coefficient_sum(den_ws, spec.n, spec.den_shared)
    b_loader = denominator.make_loader()

    def num_fn(idx):
        v = num_sum(idx)
        return ops.to_dtype(v, numerator.get_dtype(), src_dtype=fdt)

    def den_fn(idx):
        v = den_sum(idx)
        if spec.form != "abs_sum":  # d|b_j|/db_j, after the reduction
            b = load_as(b_loader, idx, denominator.get_dtype(), fdt)
            v = ops.mul(v, sign_of(b, spec.zero_sign, fdt))
        return ops.to_dtype(v, denominator.get_dtype(), src_dtype=fdt)

    dnum = ir.Pointwise.create(device=device, dtype=numerator.get_dtype(), inner_fn=num_fn,
                               ranges=list(numerator.get_size()))
    dden = ir.Pointwise.create(device=device, dtype=denominator.get_dtype(), inner_fn=den_fn,
                               ranges=list(denominator.get_size()))
    return dnum, dden


def _use_template(x, spec: LoweringSpec) -> bool:
    mode = _state["mode"]
    if mode == "ir":
        return False
    if spec.m > TEMPLATE_MAX_COEFFS or spec.n > TEMPLATE_MAX_COEFFS:
        return False
    device = x.get_device()
    if device is None:
        return False
    if mode == "template":
        return True
    # CUDA, or Inductor generating Triton for the CPU (cpu_backend="triton", e.g. the
    # interpreter-backed tests): the template is what that backend runs.
    return generates_triton(device)


# ============================================================================
# Entry point
# ============================================================================
def rational_bwd_lowering(grad, x, numerator, denominator, form, zero_sign):
    spec = lowering_spec(x, numerator, denominator, form, zero_sign)
    if _use_template(x, spec):
        out = _template_backward(grad, x, numerator, denominator, spec)
        if out is not None:
            return out
    return _ir_backward(grad, x, numerator, denominator, spec)
