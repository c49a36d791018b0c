"""Inductor lowering of ``flashkat::rational_fwd``: the forward as an ``ir.Pointwise``.

Being a plain pointwise node, the rational fuses with whatever surrounds it,
on CPU (one C++ loop nest) and on GPU (one Triton kernel): a bias add or a
scale before it is inlined into its loads, a ``+ 1``, a dropout or a cast
after it inlines it.  Nothing is materialised but the consumers' outputs.

Per element (compute dtype ``float32``, ``float64`` for ``float64`` inputs)::

    p = Horner(a[g], x)                    highest coefficient first
    t = |x| (safe) or x (signed, abs_sum)
    s = Horner(c[g], t) * t                c = |b| (safe, signed) or b (abs_sum)
    y = p / (1 + s)  or  p / (1 + |s|)     (abs_sum)

with ``g = c // (C // G)`` the channel's group (``FloorDiv`` in sympy, so a
symbolic channel count works), or 0 for a shared ``(1, k)`` coefficient row.
The C++ backend vectorises this: with a group width that is a multiple of the
vector width (96 at C = 768, G = 8) each coefficient is one scalar load and
broadcast per 16-lane vector; otherwise it splits the channel loop at group
boundaries (its "loop split" of ``FloorDiv`` for widths > 8) or gathers.
Measured at 16 x 197 x 768 (2 cores): 0.58 ms against 0.35 ms for a copy.

The helpers here (``LoweringSpec``, coefficient loaders, Horner chains) are
shared with the backward lowering (``backward.py``).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional

import sympy
import torch

from ..semantics import check_form, compute_dtype

__all__ = ["LoweringSpec", "lowering_spec", "rational_fwd_lowering"]


# ============================================================================
# The static description of one call, in Inductor terms
# ============================================================================
@dataclasses.dataclass(frozen=True)
class LoweringSpec:
    form: str
    zero_sign: str
    groups: int  # G
    num_shared: bool  # numerator is one (1, m) row
    den_shared: bool  # denominator is one (1, n) row
    m: int
    n: int
    channels: sympy.Expr  # C (usually a static integer)
    width: sympy.Expr  # D = C // G, channels per group
    cdt: torch.dtype  # compute / accumulation dtype


def _static_int(v, what: str) -> int:
    from torch._inductor.virtualized import V

    if isinstance(v, int):
        return v
    if isinstance(v, sympy.Integer):
        return int(v)
    try:
        return int(V.graph.sizevars.guard_int(v))
    except Exception as e:  # noqa: BLE001
        raise NotImplementedError(
            f"flashkat lowering: {what} must be a static integer, got the symbolic size {v}"
        ) from e


def size_hint(expr) -> int:
    """An example value of a (possibly symbolic) size: optimization_hint (torch 2.13+) or size_hint (2.11)."""
    from torch._inductor.virtualized import V

    sv = V.graph.sizevars
    fn = getattr(sv, "optimization_hint", None) or getattr(sv, "size_hint")
    return int(fn(expr))


def lowering_spec(x, numerator, denominator, form: str, zero_sign: str) -> LoweringSpec:
    """Read the static facts of a call from the IR nodes (validated already by the fake impl)."""
    from torch.utils._sympy.functions import FloorDiv

    check_form(form, zero_sign)
    gn, m = (_static_int(s, "the numerator's shape") for s in numerator.get_size())
    gd, n = (_static_int(s, "the denominator's shape") for s in denominator.get_size())
    groups = max(gn, gd)
    channels = sympy.sympify(x.get_size()[-1])
    if isinstance(channels, sympy.Integer):
        width = sympy.Integer(int(channels) // groups)
    else:
        width = FloorDiv(channels, groups) if groups > 1 else channels
    return LoweringSpec(
        form=form,
        zero_sign=zero_sign,
        groups=groups,
        num_shared=gn == 1,
        den_shared=gd == 1,
        m=m,
        n=n,
        channels=channels,
        width=width,
        cdt=compute_dtype(x.get_dtype()),
    )


# ============================================================================
# Building blocks evaluated inside inner_fn (ops.* values)
# ============================================================================
def group_of(spec: LoweringSpec, channel) -> sympy.Expr:
    """The group index of a channel index (sympy)."""
    from torch.utils._sympy.functions import FloorDiv

    if spec.groups == 1:
        return sympy.Integer(0)
    return FloorDiv(channel, spec.width)


def load_as(loader: Callable, index, src_dtype: torch.dtype, dtype: torch.dtype):
    from torch._inductor.virtualized import ops

    v = loader(index)
    if src_dtype != dtype:
        v = ops.to_dtype(v, dtype, src_dtype=src_dtype)
    return v


def generates_triton(device) -> bool:
    """True where Inductor emits Triton for ``device``: CUDA, or a CPU with cpu_backend="triton"."""
    from torch._inductor import config

    if device is None:
        return False
    return device.type == "cuda" or (device.type == "cpu" and getattr(config, "cpu_backend", "cpp") == "triton")


def takes_ptx(device) -> bool:
    """True where generated Triton may hold inline NVIDIA PTX: CUDA, not ROCm (whose devices are
    "cuda" too); never the interpreter, which runs on "cpu" devices."""
    return device is not None and device.type == "cuda" and torch.version.hip is None


def coefficient_row(spec: LoweringSpec, node, g, *, absolute: bool) -> list:
    """The k coefficients of group ``g`` (a sympy index) as ops values in the compute dtype."""
    from torch._inductor.virtualized import ops

    loader = node.make_loader()
    rows, k = node.get_size()
    row = sympy.Integer(0) if int(rows) == 1 else g
    vals = []
    for i in range(int(k)):
        v = load_as(loader, [row, sympy.Integer(i)], node.get_dtype(), spec.cdt)
        vals.append(ops.abs(v) if absolute else v)
    return vals


def horner(coeffs: list, t, fused: bool = False):
    """sum_i coeffs[i] t^i, highest coefficient first: no 0 * t term (keeps inf / nan semantics).
    ``fused``: each step one ``ops.fma`` (see FUSED_HORNER)."""
    from torch._inductor.virtualized import ops

    p = coeffs[-1]
    for c in reversed(coeffs[:-1]):
        p = ops.fma(p, t, c) if fused else ops.add(ops.mul(p, t), c)
    return p


def horner_d(coeffs: list, t):
    """(sum_i coeffs[i] t^i, its derivative in t) by joint Horner; the derivative is None for one coefficient."""
    from torch._inductor.virtualized import ops

    p = coeffs[-1]
    dp: Optional[object] = None
    for c in reversed(coeffs[:-1]):
        dp = p if dp is None else ops.add(ops.mul(dp, t), p)
        p = ops.add(ops.mul(p, t), c)
    return p, dp


def sign_of(v, zero_sign: str, dtype: torch.dtype):
    """sign(v): "torch" gives 0 at 0 (torch.sign), "kat" gives -1 if v < 0 else +1."""
    from torch._inductor.virtualized import ops

    if zero_sign == "torch":
        return ops.sign(v)
    return ops.where(ops.lt(v, ops.constant(0.0, dtype)), ops.constant(-1.0, dtype), ops.constant(1.0, dtype))


def denominator_inputs(spec: LoweringSpec, xv):
    """t: the variable of the denominator polynomial."""
    from torch._inductor.virtualized import ops

    return ops.abs(xv) if spec.form == "safe" else xv


# ============================================================================
# The lowering
# ============================================================================
# GROUPED_RANGES: iterate the forward as (*lead, G, D) instead of (*lead, C), so that a 1-D kernel
# indexes the group as (i // D) % G, a loop variable of its own, rather than (i % C) // D per
# element.  It applies where the rational's output is realized by itself (its consumer a matmul,
# or nothing); a consumer fused with it (a cast, + 1, a dropout) inlines it and iterates
# (*lead, C) again, where the tiling hook below and EXPANDED_COEFFICIENTS do the work.  The hook
# leaves grouped kernels 1-D (as tiles they would be (rows x groups, D), whose narrow,
# non-power-of-two D wastes lanes).  Triton only: Inductor's C++ backend already hoists each
# coefficient out of its vector loop (see the top), and that is the path the CPU figures measure.
#
# EXPANDED_COEFFICIENTS: in such a fused (*lead, C) kernel, on Triton, with 16-bit x and C not a
# multiple of _FLAT_BLOCK_MAX, read each grouped coefficient row from a (k, C) copy expanded over
# the channels (coef[i, c] = row[c // D][i], |.| applied for the denominator; one tiny kernel of
# k x C elements per call) instead of from the (G, k) parameter at c // D: a thread's consecutive
# channels then read consecutive addresses, which Triton vectorises (sm_90 builds of the bf16
# kernel at 768, 8 elements per thread: 360 instructions and 21 loads, against 696 and 81).  Where
# the rational is realized by itself the expansion is dead code, which Inductor's scheduler drops.
# (torch 2.11's view lowering realizes the (*lead, G, D) node under a fused consumer instead, and
# the consumer fuses with its grouped kernel: every kernel is iterated by groups there, and the
# expansion is never read.  2.13 and later inline the view, as described above.)
#
# GPU time of the compiled forward alone, 128 x 197 rows, H200, us
# (bench/results/h200_fwd_variants_2026-11-29.json: bench/probe_kernels.py --parts fwd_variants;
# "expanded" includes its 0.9 us kernel):
#
#     C     dtype   flat 1-D  tiled  grouped 1-D  expanded 1-D  expanded tiled  Inductor's PAU
#     192   bf16      10.2     8.9       6.0          8.7            7.7            6.0
#     768   bf16      37.2    28.7      23.4         28.3           25.9           23.5
#     1536  bf16      72.5    52.6      44.7         54.0           47.4           44.9
#     3072  bf16      87.0    87.1      86.9           -              -            86.7
#     192   f32       10.2     7.8       7.4          8.9           11.4            7.5
#     768   f32       39.6    37.6      37.8         39.4           39.1           37.8
#     1536  f32       77.1    74.1      74.1         76.5           74.6           74.0
#     3072  f32      146.5   146.0     146.3           -              -           146.3
#
# so grouped wherever it applies (Inductor's PAU, written on a (..., G, D) view, is indexed the
# same way), and, fused, tiles, expanded in bf16 only (float32 gains nothing from it).  At C a
# multiple of _FLAT_BLOCK_MAX Triton proves c // D constant over a thread's elements and loads
# each coefficient once (224 instructions, 11 loads at 3072): nothing is expanded there, nor on
# Inductor's C++ backend, which broadcasts one scalar per vector already (see the top).
GROUPED_RANGES = True
EXPANDED_COEFFICIENTS = True

# FUSED_HORNER: on Triton, every Horner step is one explicit fma.  ptxas contracts a mul and an add
# into one FFMA anyway, except where LLVM has rewritten them first: the denominator's first step,
# |c| * |x|, becomes |c * x| (a FMUL and an FADD per element in the sm_90 build of the bf16 kernel
# at 3072).  The other steps compile as before; that one is rounded once instead of twice.  C++
# keeps its mul and add.
#
# FAST_DIVISION: on CUDA, in float32 compute, for the forms whose q = 1 + s is >= 1 (safe and
# abs_sum), y = p * rcp.approx(q) (within 1 ulp; then one rounding) instead of p / q, which Triton
# compiles to div.full.f32: its range checks (q subnormal, impossible here; q > 2^126) and the
# scalings they select cost 8 sm_90 instructions per element against 5 here (the forward builds
# 27 per element at 3072 bf16, and Nsight Compute has its issue slots 82% busy at base clocks:
# bench/results/h200_ncu_2026-11-29_call32_fwd_bf16_details.csv).  q > 2^126 (|x| above about 3e9)
# keeps the exact path's behaviour: p and q are scaled by 1/4 first, so that p / q stays right
# where 1 / q would be subnormal (flushed to zero by the .ftz reciprocal: 0, or inf * 0 = nan,
# where p / q is +-inf).  The inline PTX cannot run in the Triton interpreter, nor on ROCm: NVIDIA
# CUDA only.  H200, both switches against neither, same run (device call 34 of 2026-11-29,
# bench/run_h200_forward.sh), GPU time of the forward: bf16 3072 89.2 -> 84.2 us, 1536 45.8 ->
# 44.0; fp16 3072 84.0 -> 80.5, 1536 43.4 -> 41.4; one graphed forward + backward at 3072 bf16
# 272.1 -> 267.6 us, fp16 279.6 -> 275.9.  Nsight Compute (call 33, base clocks): 62.0 -> 52.7 M
# warp instructions at 3072 bf16, issue slots 82% -> 74% busy, DRAM throughput 60% -> 67%.
FUSED_HORNER = True
FAST_DIVISION = True
_DIVIDE_ASM = ("{ .reg .pred %fkbig; .reg .f32 %fkp, %fkq, %fkr; mov.b32 %fkp, $1; mov.b32 %fkq, $2; "
               "setp.gt.f32 %fkbig, %fkq, 0f7E800000; @%fkbig mul.f32 %fkp, %fkp, 0f3E800000; "
               "@%fkbig mul.f32 %fkq, %fkq, 0f3E800000; rcp.approx.ftz.f32 %fkr, %fkq; "
               "mul.f32 $0, %fkp, %fkr; }")

# ELEMENTS_PER_THREAD: the least elements each thread handles in a 1-D Triton pointwise kernel
# that computes the forward over at least _ELEMENTS_MIN_NUMEL elements (Inductor's
# min_elem_per_thread, set by _install_elements_hook; Inductor's own configs give 8 per thread,
# 1024 elements over 4 warps, or 2, 512 over 8; with 16 they are 2048 over 4 warps and 4096 over
# 8, the largest 1-D block Inductor takes).  Fewer, longer programs, each with two 16-byte loads
# in flight per thread in bf16 / fp16 where 8 elements give one: H200, 128 x 197 x 3072, one CUDA
# graph per step, GPU time of the forward 83.5 -> 78.9 us in bf16 (80.5 -> 78.7 fp16; float32
# 144.8 with 16, 144-146 before) and of the step 0.236 -> 0.233 ms (0.235 -> 0.232 fp16), device
# call 42 of 2026-11-29 (bench/run_h200_elements.sh); the step's wall time did not move (0.237 ->
# 0.238 ms, fp16 0.236 -> 0.237), and in two interleaved rounds on one machine it was 1-2 us
# slower: bf16 / fp16 0.238 / 0.238 ms with 16 against 0.237 / 0.236 with Inductor's configs
# (device call 45, bench/run_h200_wall.sh), and with one finishing sum 0.236 / 0.234 against
# 0.235 / 0.233-0.234 (call 47, bench/run_h200_pdl.sh).  So it is 0 (Inductor's) by default; the hook
# stays, for other GPUs and shapes.  sm_90 build of the bf16 kernel at 3072: 18 instructions per
# element against 20.  Smaller kernels (KAT's odd shapes: 46,200 elements at 7 x 33 x 200) and 2-D
# tiles keep Inductor's configs (fewer programs would leave SMs idle there; tiles are untimed).
# FLASHKAT_FORWARD_ELEMENTS_PER_THREAD=N (0, 1, 2, 4, 8 or 16; 0 = Inductor's, the default) sets it.
_ELEMENTS_CHOICES = (0, 1, 2, 4, 8, 16)
_ELEMENTS_MIN_NUMEL = 1 << 22


def int_from_env(name: str, default: int, valid: Callable[[int], bool], expected: str) -> int:
    """The integer in environment variable ``name`` (``default`` where unset or blank); a clear
    ValueError naming the variable and ``expected`` where it is not an integer that ``valid`` takes."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not valid(value):
        raise ValueError(f"{name}={raw!r}: expected {expected}")
    return value


def flag_from_env(name: str, default: bool) -> bool:
    """The on / off switch in environment variable ``name``: 1 or 0 (``default`` where unset or
    blank); a clear ValueError naming it otherwise."""
    return bool(int_from_env(name, int(default), lambda v: v in (0, 1), "0 or 1"))


def _elements_per_thread_from_env() -> int:
    return int_from_env("FLASHKAT_FORWARD_ELEMENTS_PER_THREAD", 0, lambda v: v in _ELEMENTS_CHOICES,
                        f"one of {_ELEMENTS_CHOICES} (16 elements over 8 warps is Inductor's largest 1-D block, 4096)")


ELEMENTS_PER_THREAD = _elements_per_thread_from_env()


def lowering_switches() -> tuple:
    """The forward lowering's switches, for the passes' cache key (backend._switches)."""
    return (ND_TILING, GROUPED_RANGES, EXPANDED_COEFFICIENTS, _FLAT_BLOCK_MAX, FUSED_HORNER, FAST_DIVISION,
            ELEMENTS_PER_THREAD, _ELEMENTS_MIN_NUMEL)


def _divides_fast(spec: LoweringSpec, x) -> bool:
    return (FAST_DIVISION and takes_ptx(x.get_device()) and spec.cdt == torch.float32
            and spec.form in ("safe", "abs_sum"))


def _expands(spec: LoweringSpec, x) -> bool:
    c = spec.channels
    return (EXPANDED_COEFFICIENTS and spec.groups > 1 and isinstance(c, sympy.Integer)
            and int(c) % _FLAT_BLOCK_MAX != 0 and x.get_dtype() in (torch.bfloat16, torch.float16)
            and generates_triton(x.get_device()))


def expanded_rows(spec: LoweringSpec, parts: list) -> tuple:
    """(loader, first rows) of one realized (k1 + k2 + ..., C) buffer holding, for each
    ``(node, absolute)`` of ``parts`` in turn, its k rows expanded over the channels:
    ``node[c // D, i]`` (|.| if ``absolute``) in the compute dtype; ``first rows`` maps
    ``id(node)`` to the buffer row of its coefficient 0.  One buffer, so one tiny kernel per call."""
    from torch._inductor import ir
    from torch._inductor.virtualized import ops

    pieces, start = [], 0
    for node, absolute in parts:
        k = int(node.get_size()[1])
        pieces.append((start, k, node.make_loader(), node.get_dtype(), absolute))
        start += k

    def fn(idx):
        i, c = idx
        g = group_of(spec, c)
        if len(pieces) == 1:
            _, _, loader, src, absolute = pieces[0]
            v = load_as(loader, [g, i], src, spec.cdt)
            return ops.abs(v) if absolute else v
        out = ops.constant(0.0, spec.cdt)
        for first, k, loader, src, absolute in pieces:  # each row's loads masked to its own piece

            def body(first=first, loader=loader, src=src, absolute=absolute):
                v = load_as(loader, [g, i - first], src, spec.cdt)
                return ops.abs(v) if absolute else v

            row = ops.index_expr(i, torch.int64)
            inside = ops.and_(ops.ge(row, ops.constant(first, torch.int64)),
                              ops.lt(row, ops.constant(first + k, torch.int64)))
            out = ops.where(inside, ops.masked(inside, body, 0.0), out)
        return out

    buf = ir.Pointwise.create(device=parts[0][0].get_device(), dtype=spec.cdt, inner_fn=fn,
                              ranges=[sympy.Integer(start), spec.channels])
    buf.realize()
    # marked so that the tiling hook leaves this tiny kernel to Inductor's own choice
    computed = getattr(getattr(buf, "data", None), "data", None)  # TensorBox -> StorageBox -> ComputedBuffer
    if computed is not None:
        computed._flashkat_expansion = True
    return buf.make_loader(), {id(node): piece[0] for (node, _), piece in zip(parts, pieces)}


def rational_fwd_lowering(x, numerator, denominator, form, zero_sign):
    from torch._inductor import ir
    from torch._inductor.virtualized import ops

    spec = lowering_spec(x, numerator, denominator, form, zero_sign)
    x_dtype = x.get_dtype()
    cdt = spec.cdt
    x_loader = x.make_loader()
    one = 1.0
    den_abs = spec.form != "abs_sum"
    # the grouped coefficient rows, expanded over the channels where that pays (EXPANDED_COEFFICIENTS)
    parts = [(node, absolute) for node, absolute, shared in ((numerator, False, spec.num_shared),
                                                             (denominator, den_abs, spec.den_shared))
             if not shared] if _expands(spec, x) else []
    expanded, first_row = expanded_rows(spec, parts) if parts else (None, {})

    def row(node, g, c, absolute, own_groups):
        """The node's coefficients of channel c's group: from the expanded rows where there are
        some, unless the kernel iterates (*lead, G, D) itself (the group is a loop variable)."""
        if own_groups or id(node) not in first_row:
            return coefficient_row(spec, node, g, absolute=absolute)
        r0 = first_row[id(node)]
        return [expanded([sympy.Integer(r0 + i), c]) for i in range(int(node.get_size()[1]))]

    fused = FUSED_HORNER and generates_triton(x.get_device())
    fast_division = _divides_fast(spec, x)

    def inner_fn(idx, own_groups: bool = False):
        g = group_of(spec, idx[-1])
        xv = load_as(x_loader, idx, x_dtype, cdt)
        a = row(numerator, g, idx[-1], False, own_groups)
        c = row(denominator, g, idx[-1], den_abs, own_groups)
        p = horner(a, xv, fused)
        t = denominator_inputs(spec, xv)
        h = horner(c, t, fused)
        if spec.form == "abs_sum":
            q = ops.add(ops.abs(ops.mul(h, t)), ops.constant(one, cdt))
        elif fused:
            q = ops.fma(h, t, ops.constant(one, cdt))
        else:
            q = ops.add(ops.mul(h, t), ops.constant(one, cdt))
        if fast_division:
            y = ops.inline_asm_elementwise(p, q, asm=_DIVIDE_ASM, constraints="=r,r,r", dtype=torch.float32,
                                           is_pure=True, pack=1)
        else:
            y = ops.truediv(p, q)
        return ops.to_dtype(y, x_dtype, src_dtype=cdt) if x_dtype != cdt else y

    size = list(x.get_size())
    width = spec.width
    if not (GROUPED_RANGES and spec.groups > 1 and len(size) >= 1 and isinstance(width, sympy.Integer)
            and int(width) > 1 and generates_triton(x.get_device())):
        return ir.Pointwise.create(device=x.get_device(), dtype=x_dtype, inner_fn=inner_fn, ranges=size)

    # Iterated as (*lead, G, D) and viewed back as (*lead, C): the kernel then indexes the group
    # directly ((i // D) % G, which Inductor's loop simplification keeps as its own range because
    # the coefficient loads have stride 0 in d), instead of ((i % C) // D) per element
    G, D = spec.groups, int(width)

    def grouped_fn(idx):
        # g and d are loop variables where this node is computed over its own ranges; where a
        # consumer of the view inlines it, they are FloorDiv(c, D) and c mod D of the consumer's
        # channel c, and the coefficients come from the expanded rows (if any; the expansion
        # buffer is dead code otherwise, and Inductor's scheduler drops it)
        *lead, g, d = idx
        own = isinstance(g, sympy.Symbol) and isinstance(d, sympy.Symbol)
        return inner_fn([*lead, g * D + d], own_groups=own)

    from torch._inductor.lowering import lowerings

    y = ir.Pointwise.create(device=x.get_device(), dtype=x_dtype, inner_fn=grouped_fn,
                            ranges=[*size[:-1], sympy.Integer(G), sympy.Integer(D)])
    return lowerings[torch.ops.aten.view.default](y, size)


# ============================================================================
# Tiling: the rational's Triton kernels as (rows x channels) tiles
# ============================================================================
#
# Inductor flattens a contiguous pointwise kernel into one dimension, where
# every element computes its channel's group (c = i % C, g = c // D).  Triton
# proves g constant over a thread's elements, and loads each coefficient once
# per thread, only when C is a multiple of the block (i % C is then contiguous
# over the whole block); otherwise it gathers the coefficients per element.
# As 2-D tiles the coefficients are loaded once per column of a tile and
# broadcast down its rows.  This matters where the rational is fused into a
# consumer that iterates (*lead, C) (where it is realized by itself it is
# iterated (*lead, G, D): GROUPED_RANGES above).  H200, 128 x 197 rows, GPU
# time of the compiled forward (the table above, "flat 1-D" against "tiled"):
# 10.2 -> 8.9 us at 192 bf16, 37.2 -> 28.7 at 768, 72.5 -> 52.6 at 1536,
# 39.6 -> 37.6 at 768 float32; at 3072, a multiple of the block, the same
# (3072 bf16 tiled was 97.8 against 88.0 us 1-D in an earlier build,
# bench/results/h200_rational_2026-11-28_static_nd_fwd.json).
#
# So the rational's (*lead, C) kernels are tiled unless C is a multiple of
# _FLAT_BLOCK_MAX, the largest block of Inductor's 1-D pointwise configs.
# Inductor's own heuristic has no reason to tile (every access is contiguous
# or a broadcast), and its switch, ``triton.prefer_nd_tiling``, is global:
# set for a whole KAT-T training graph it doubled the first compile
# (31 -> 67 s) for the sake of the 24 rational kernels.  So the switch is set
# for the kernels that compute a ``flashkat::rational_fwd`` only; every other
# kernel's tiling is Inductor's own.  ``ND_TILING = False`` turns it off.
ND_TILING = True
_FLAT_BLOCK_MAX = 1024

_tiling_state: dict = {}


def _scheduled_buffers(node_schedule):
    """(scheduler node, its IR buffer or None) for every node of a kernel's node schedule (fused
    nodes unpacked)."""
    for entry in node_schedule:
        for snode in getattr(entry, "get_nodes", lambda: [entry])():
            yield snode, getattr(snode, "node", None)


def _wants_tiles(node_schedule) -> bool:
    """True if the kernel computes a rational forward over (*lead, C) whose C is static and not a
    multiple of _FLAT_BLOCK_MAX (a symbolic C, or one iterated as (*lead, G, D), stays 1-D)."""
    target = torch.ops.flashkat.rational_fwd.default
    found = False
    for snode, buf in _scheduled_buffers(node_schedule):
        if getattr(buf, "_flashkat_expansion", False):
            return False  # the expanded coefficient rows (k x C): nothing to gain from tiles
        for o in getattr(buf, "origins", None) or ():
            if getattr(o, "target", None) is not target:
                continue
            val = o.args[0].meta.get("val") if o.args and hasattr(o.args[0], "meta") else None
            c = val.shape[-1] if isinstance(val, torch.Tensor) and val.dim() else None
            if not isinstance(c, int) or c % _FLAT_BLOCK_MAX == 0:
                return False  # symbolic (never specialised here), or 1-D loads once per thread
            size = buf.get_size() if hasattr(buf, "get_size") else ()
            if not size or size[-1] != c:
                return False  # not iterated (*lead, C): e.g. the rational's own (*lead, G, D)
            if _reads_grouped_rational(snode, c):
                return False  # a consumer of a realized (*lead, G, D) rational: 1-D, to fuse with it
            found = True
    return found


def _reads_grouped_rational(snode, c: int) -> bool:
    """True if the scheduler node reads a realized rational forward iterated (*lead, G, D) with
    G * D == c.  Such a node only consumes the rational (torch 2.11's view lowering realizes the
    grouped node under a fused consumer, whose origins still name the rational): tiled, its
    (rows, C) tiling would differ from the grouped kernel's 1-D one, and Inductor's scheduler
    refuses to fuse kernels of different tilings (H200, torch 2.11: "tiling mismatch", the
    consumer then a kernel of its own; bench/probe_fusion.py)."""
    from torch._inductor.virtualized import V

    target = torch.ops.flashkat.rational_fwd.default
    for dep in getattr(getattr(snode, "read_writes", None), "reads", ()) or ():
        try:
            buf = V.graph.get_buffer(dep.name)
        except Exception:  # noqa: BLE001 - not a buffer of this graph
            continue
        if buf is None or getattr(buf, "_flashkat_expansion", False):
            continue
        if not any(getattr(o, "target", None) is target for o in getattr(buf, "origins", None) or ()):
            continue
        size = buf.get_size() if hasattr(buf, "get_size") else ()
        if len(size) >= 2 and size[-2] * size[-1] == c:
            return True
    return False


def install_tiling_hook() -> None:
    """Wrap ``SIMDScheduling.get_tiling_and_scores`` (once): pointwise kernels that compute the
    rational's forward on rows whose width is not a multiple of ``_FLAT_BLOCK_MAX`` are tiled as
    if ``triton.prefer_nd_tiling`` were set.  Also installs the elements hook
    (_install_elements_hook), whichever of the two hook points this Inductor has."""
    if _tiling_state.get("installed"):
        return
    from torch._inductor import config
    from torch._inductor.codegen.simd import SIMDScheduling

    _install_elements_hook(SIMDScheduling)
    original = SIMDScheduling.__dict__.get("get_tiling_and_scores")
    if not isinstance(original, classmethod):  # an Inductor without this hook point: leave it alone
        _tiling_state["installed"] = "unsupported"
        return
    func = original.__func__

    def get_tiling_and_scores(cls, node_schedule, numel, reduction_numel=sympy.S.One, coalesce_analysis=None):
        if (ND_TILING and not config.triton.prefer_nd_tiling and reduction_numel == 1
                and _wants_tiles(node_schedule)):
            with config.patch({"triton.prefer_nd_tiling": True}):
                return func(cls, node_schedule, numel, reduction_numel, coalesce_analysis)
        return func(cls, node_schedule, numel, reduction_numel, coalesce_analysis)

    get_tiling_and_scores.__doc__ = func.__doc__
    get_tiling_and_scores.__wrapped__ = func
    SIMDScheduling.get_tiling_and_scores = classmethod(get_tiling_and_scores)
    _tiling_state["installed"] = True


def _computes_forward(node_schedule) -> bool:
    target = torch.ops.flashkat.rational_fwd.default
    return any(getattr(o, "target", None) is target
               for _, buf in _scheduled_buffers(node_schedule) for o in getattr(buf, "origins", None) or ())


def _wants_elements(kernel, node_schedule) -> bool:
    """True for a 1-D pointwise kernel (every range but ``x`` of size 1) of a static size of at least
    _ELEMENTS_MIN_NUMEL elements that computes a rational forward."""
    numels = getattr(kernel, "numels", None)
    if not ELEMENTS_PER_THREAD or not hasattr(kernel, "min_elem_per_thread") or not isinstance(numels, dict):
        return False
    if not isinstance(numels.get("x"), (int, sympy.Integer)) or any(v != 1 for k, v in numels.items() if k != "x"):
        return False  # tiles (y) or a reduction (r0_): Inductor's configs
    return int(numels["x"]) >= _ELEMENTS_MIN_NUMEL and _computes_forward(node_schedule)


def _install_elements_hook(scheduling) -> None:
    """Wrap ``codegen_node_schedule_with_kernel`` (where a kernel's body is generated, before its
    heuristics line): the kernels of _wants_elements ask for ELEMENTS_PER_THREAD."""
    original = scheduling.__dict__.get("codegen_node_schedule_with_kernel")
    if not callable(original):  # an Inductor without this hook point: leave it alone
        return

    def codegen_node_schedule_with_kernel(self, node_schedule, kernel):
        result = original(self, node_schedule, kernel)
        if _wants_elements(kernel, node_schedule):
            kernel.min_elem_per_thread = max(kernel.min_elem_per_thread, ELEMENTS_PER_THREAD)
        return result

    codegen_node_schedule_with_kernel.__doc__ = original.__doc__
    codegen_node_schedule_with_kernel.__wrapped__ = original
    scheduling.codegen_node_schedule_with_kernel = codegen_node_schedule_with_kernel
