"""The eager Triton kernels (flashkat_inductor/triton_kernels.py) against the float64 reference.

Without CUDA the kernels run in Triton's interpreter on CPU tensors (conftest.py
sets TRITON_INTERPRET=1 before any import); with CUDA every test also runs on
the GPU.  Shapes are small because the interpreter is slow.

Error measure: ||out - ref|| / ||ref|| in float64, +inf if anything is not
finite (a NaN never passes).  Bounds: 1e-6 for float32 inputs; for float16 /
bfloat16 inputs at most twice the error of the same function computed naively
in that dtype with PyTorch (flash-attention's rule).
"""
from __future__ import annotations

import math
import os

import pytest
import torch

from flashkat_inductor import triton_kernels as tk
from flashkat_inductor.semantics import (
    FORMS,
    ZERO_SIGNS,
    check_args,
    init_coefficients,
    sign,
    reference_backward,
    reference_forward,
)

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICES = [
    pytest.param("cpu", marks=pytest.mark.skipif(not _INTERPRET, reason="CPU tensors need TRITON_INTERPRET=1")),
    pytest.param(
        "cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
    ),
]
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

F32_TOL = 1e-6


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------
def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; +inf on any non-finite output or a shape mismatch."""
    if tuple(out.shape) != tuple(ref.shape):
        return float("inf")
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(out).all():
        return float("inf")
    den = ref.norm().item()
    diff = (out - ref).norm().item()
    return diff / den if den > 0 else diff


def make_coeffs(m, n, gn, gd, *, form, kind="random", dtype=torch.float32, device="cpu", zeros=False):
    """(numerator (gn, m), denominator (gd, n)); random, or KAT's fitted set for mode ``kind``.

    Random denominators are scaled small for the signed form (Q = 1 + sum |b_j| x^(j+1)
    reaches 0 for x < 0 otherwise, and the error measure becomes meaningless)."""
    if kind == "random":
        # Magnitudes decay with the power, as in fitted rationals: high-order random
        # polynomials with O(1) coefficients cancel catastrophically in float32 for |x| ~ 2
        # (any float32 evaluation, Horner or not, then loses more than 1e-6).
        a = torch.randn(gn, m) * 0.5 * 0.6 ** torch.arange(m)
        b = torch.randn(gd, n) * (0.02 if form == "signed" else 0.5) * 0.6 ** torch.arange(n)
    else:
        num, den = init_coefficients(kind)
        a = torch.tensor([num] * gn) * (1 + 0.05 * torch.randn(gn, 1))
        b = torch.tensor([den] * gd) * (1 + 0.05 * torch.randn(gd, 1))
        if form == "signed":
            b = b * 0.1
    if zeros:  # exact zeros in b: zero_sign decides their gradient
        b[0, 0] = 0.0
        if n > 2:
            b[-1, n - 1] = 0.0
    return a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype)


def make_x(shape, *, device="cpu", dtype=torch.float32, zeros=True):
    x = torch.randn(shape)
    if zeros and x.numel() > 8:  # exact zeros in x: zero_sign decides sign(x) in the safe form
        x.view(-1)[:: max(1, x.numel() // 7)] = 0.0
    return x.to(device=device, dtype=dtype)


def naive(x, a, b, g, form, zero_sign):
    """(y, dx, dnum, dden) of the closed-form formulas computed naively in x's dtype with
    PyTorch: explicit powers, coefficients cast to x's dtype, PyTorch's own sums.

    The float16 / bfloat16 baseline (flash-attention's rule).  (Autograd would not do: it
    gives sign(0) = 0, and the "kat" convention differs there.)"""
    dt = x.dtype
    G = max(a.shape[0], b.shape[0])
    C = x.shape[-1]
    m, n = a.shape[1], b.shape[1]
    xv = x.reshape(-1, G, C // G)
    gv = g.to(dt).expand(x.shape).reshape(-1, G, C // G)
    A = a.to(dt).expand(G, m)[:, :, None]  # (G, m, 1)
    B = b.to(dt).expand(G, n)[:, :, None]
    t = xv.abs() if form == "safe" else xv
    c = B if form == "abs_sum" else B.abs()
    P = sum(A[:, i] * xv**i for i in range(m))
    dP = sum(i * A[:, i] * xv ** (i - 1) for i in range(1, m)) if m > 1 else torch.zeros_like(xv)
    s = sum(c[:, j] * t ** (j + 1) for j in range(n))
    ds = sum((j + 1) * c[:, j] * t**j for j in range(n))
    if form == "abs_sum":
        ks = sign(s, zero_sign)
        Q, dQ = 1 + s.abs(), ks * ds
    else:
        Q = 1 + s
        dQ = sign(xv, zero_sign) * ds if form == "safe" else ds
    y = P / Q
    dx = gv * (dP / Q - P * dQ / Q**2)
    gq = gv / Q
    w = -gv * P / Q**2
    if form == "abs_sum":
        w = w * ks
    da = torch.stack([(gq * xv**i).sum(dim=(0, 2)) for i in range(m)], dim=1)
    db = torch.stack([(w * t ** (j + 1)).sum(dim=(0, 2)) for j in range(n)], dim=1)
    if form != "abs_sum":
        db = db * sign(B[:, :, 0], zero_sign)
    if a.shape[0] == 1:
        da = da.sum(0, keepdim=True)
    if b.shape[0] == 1:
        db = db.sum(0, keepdim=True)
    return y.reshape(x.shape), dx.reshape(x.shape), da, db


def _rounding(dtype) -> float:
    return torch.finfo(dtype).eps  # bound for one rounding of a result into dtype (2x margin)


def random_walk_scale(x, a, b, g, form):
    """Per coefficient-gradient entry, sqrt(sum over its terms of term^2), in float64, with
    the gradients' shapes; also min |Q| over x.

    A sum of N terms each computed with a few roundings has an error of about
    u * sqrt(sum term^2) (random-walk size), whatever the sum itself is: when dy has random
    signs the sums cancel, the relative error of a float32 result can then exceed any fixed
    tolerance, and this scale is the meaningful yardstick."""
    G = max(a.shape[0], b.shape[0])
    C = x.shape[-1]
    xv = x.double().reshape(-1, G, C // G)
    gv = g.double().expand(x.shape).reshape(-1, G, C // G)
    A = a.double().expand(G, a.shape[1])[:, :, None]
    B = b.double().expand(G, b.shape[1])[:, :, None]
    t = xv.abs() if form == "safe" else xv
    c = B if form == "abs_sum" else B.abs()
    P = sum(A[:, i] * xv**i for i in range(a.shape[1]))
    s = sum(c[:, j] * t ** (j + 1) for j in range(b.shape[1]))
    Q = 1 + (s.abs() if form == "abs_sum" else s)
    gq, w = gv / Q, gv * P / Q**2
    sa = torch.stack([((gq * xv**i) ** 2).sum(dim=(0, 2)) for i in range(a.shape[1])], dim=1)
    sb = torch.stack([((w * t ** (j + 1)) ** 2).sum(dim=(0, 2)) for j in range(b.shape[1])], dim=1)
    if a.shape[0] == 1:
        sa = sa.sum(0, keepdim=True)
    if b.shape[0] == 1:
        sb = sb.sum(0, keepdim=True)
    qmin = Q.abs().min().item() if Q.numel() else 1.0
    return sa.sqrt(), sb.sqrt(), qmin


RW_FACTOR = 32  # measured: error / (u * scale) has median 1.7, max 8.9 over 120 random draws


def check(x, a, b, form, zero_sign, *, grad=None, config=None):
    """Run forward and backward, compare all four outputs with the float64 reference.

    Bounds (relative error ||out - ref|| / ||ref||), by x's dtype:
      float32: 1e-6 for y and dx.  Coefficient gradients: 1e-6, or where the sums cancel
        (random-signed dy), RW_FACTOR * u * ||scale|| / ||ref|| with u = 2^-24 and the
        random-walk scale above, whichever is larger.
      float64: the same with 1e-12 and u = 2^-53.
      float16 / bfloat16: twice the error of the naive computation in that dtype.
    A coefficient gradient may add one rounding into its own dtype (float16 dden, or
    float32 coefficients of a float64 x)."""
    grad = torch.randn_like(x) if grad is None else grad
    y = tk.forward(x, a, b, form, config=config)
    dx, da, db = tk.backward(grad, x, a, b, form, zero_sign, config=config)
    assert y.shape == x.shape and y.dtype == x.dtype and y.is_contiguous()
    assert dx.shape == x.shape and dx.dtype == x.dtype and dx.is_contiguous()
    assert da.shape == a.shape and da.dtype == a.dtype
    assert db.shape == b.shape and db.dtype == b.dtype
    refs = (reference_forward(x, a, b, form),) + tuple(reference_backward(grad, x, a, b, form, zero_sign))
    names = ("y", "dx", "dnum", "dden")
    errs = {k: rel_err(o, r) for k, o, r in zip(names, (y, dx, da, db), refs)}
    sa, sb, qmin = random_walk_scale(x, a, b, grad, form)
    assert qmin > 0.1, f"test data too close to a pole of the {form} form: min |Q| = {qmin}"
    if x.dtype in (torch.float32, torch.float64):
        tol, u = (F32_TOL, 2.0**-24) if x.dtype == torch.float32 else (1e-12, 2.0**-53)
        bounds = {"y": tol, "dx": tol}
        for k, scale, ref in (("dnum", sa, refs[2]), ("dden", sb, refs[3])):
            rn = ref.norm().item()
            bounds[k] = max(tol, RW_FACTOR * u * scale.norm().item() / rn) if rn > 0 else tol
    else:
        base = {k: rel_err(o, r) for k, o, r in zip(names, naive(x, a, b, grad, form, zero_sign), refs)}
        # an overflowing baseline would make every bound infinite (and let NaN pass)
        assert all(math.isfinite(v) for v in base.values()), f"naive {x.dtype} baseline not finite: {base}"
        bounds = {k: 2 * v for k, v in base.items()}
    for k, coef in (("dnum", a), ("dden", b)):
        bounds[k] = max(bounds[k], _rounding(coef.dtype))
    assert all(math.isfinite(v) for v in bounds.values()), bounds
    bad = {k: (errs[k], bounds[k]) for k in names if not errs[k] <= bounds[k]}
    assert not bad, f"{x.dtype} errors over bound (error, bound): {bad}"
    return errs, bounds


# ----------------------------------------------------------------------------
# supports / configs
# ----------------------------------------------------------------------------
def test_supports():
    x = torch.zeros(2, 8)
    for m, n, ok in [(1, 1, True), (6, 4, True), (8, 8, True), (9, 4, False), (6, 9, False)]:
        spec = check_args(x, torch.zeros(1, m), torch.zeros(2, n), "abs_sum", "kat")
        assert tk.supports(spec) is ok
    assert tk.MAX_COEFFS == 8


def test_row_programs_depend_on_shape_only():
    cpu = torch.device("cpu")
    assert tk._row_programs(231, 200, cpu) == tk._row_programs(231, 200, cpu)
    assert tk._row_programs(1, 200, cpu) == 1  # never more programs than row blocks
    assert tk._row_programs(10**6, 16, cpu) >= 1
    with pytest.raises(ValueError, match="power of two"):
        tk._as_config((3, 64, 4))


# ----------------------------------------------------------------------------
# Every form x zero_sign x shared / per-group rows (random coefficients, zeros in x and b)
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rows", ["shared_num", "shared_den", "both_per_group", "both_shared"])
@pytest.mark.parametrize("zero_sign", ZERO_SIGNS)
@pytest.mark.parametrize("form", FORMS)
def test_forms_signs_rows(form, zero_sign, rows, device):
    G = 4
    gn, gd = {"shared_num": (1, G), "shared_den": (G, 1), "both_per_group": (G, G), "both_shared": (1, 1)}[rows]
    x = make_x((3, 11, 48), device=device)
    a, b = make_coeffs(6, 4, gn, gd, form=form, device=device, zeros=True)
    check(x, a, b, form, zero_sign)


# ----------------------------------------------------------------------------
# Orders (m, n) and group counts
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mn", [(1, 1), (6, 4), (8, 8), (3, 7), (2, 1)])
@pytest.mark.parametrize("form", FORMS)
def test_orders(form, mn, device):
    m, n = mn
    x = make_x((5, 48), device=device)
    a, b = make_coeffs(m, n, 4, 4, form=form, device=device, zeros=n > 1)
    check(x, a, b, form, "kat")
    check(x, a, b, form, "torch")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("G", [1, 2, 4, 8, 200])
def test_group_counts(G, device):
    # 7 x 33 x 200: 231 rows, 200 channels (two channel tiles of 128, the second ragged);
    # G = 200 is one channel per group.
    x = make_x((7, 33, 200), device=device)
    a, b = make_coeffs(6, 4, 1, G, form="safe", device=device, zeros=True)
    check(x, a, b, "safe", "kat")


@pytest.mark.parametrize("device", DEVICES)
def test_group_count_equals_channels_small(device):
    x = make_x((5, 48), device=device)
    for form in FORMS:
        a, b = make_coeffs(6, 4, 48, 48, form=form, device=device, zeros=True)
        check(x, a, b, form, "torch")


# ----------------------------------------------------------------------------
# KAT's fitted coefficients
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["identity", "gelu", "swish", "geglu"])
def test_kat_modes(mode, device):
    x = make_x((7, 33, 200) if mode == "gelu" else (3, 11, 200), device=device)
    for form, zero_sign in [("safe", "kat"), ("safe", "torch"), ("abs_sum", "kat")]:
        a, b = make_coeffs(6, 4, 1, 8, form=form, kind=mode, device=device)
        check(x, a, b, form, zero_sign)


@pytest.mark.parametrize("device", DEVICES)
def test_identity_init_zero_sign(device):
    """KAT's identity init has b = 0: "torch" gives db = 0 exactly, "kat" gives nonzero db."""
    x = make_x((4, 5, 32), device=device)
    a, b = make_coeffs(6, 4, 1, 4, form="safe", kind="identity", device=device)
    b.zero_()
    g = torch.randn_like(x)
    _, _, db_torch = tk.backward(g, x, a, b, "safe", "torch")
    _, _, db_kat = tk.backward(g, x, a, b, "safe", "kat")
    assert torch.equal(db_torch, torch.zeros_like(b))
    assert (db_kat != 0).all()
    check(x, a, b, "safe", "kat", grad=g)
    check(x, a, b, "safe", "torch", grad=g)


# ----------------------------------------------------------------------------
# Tiling: ragged tiles, several groups per tile, several tiles per group, P > 1
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "config",
    [
        (4, 16, 4),  # C = 200: 13 channel tiles, the last ragged; D = 25 spans 2-3 tiles
        (8, 64, 4),  # 4 groups of 25 per 2 tiles: groups straddle tile edges
        (1, 256, 4),  # one row per block, one tile wider than C
        (16, 32, 2),  # R = 21 is not a multiple of 16
        (4, 16, 4, 1),  # unpipelined row loops
        (2, 64, 4, 3, 1),  # persistent forward (1 program per SM and channel tile): row loop of 11
    ],
)
def test_ragged_tiles(config, device):
    x = make_x((3, 7, 200), device=device)  # R = 21
    for form, gn, gd in [("safe", 1, 8), ("abs_sum", 8, 8), ("signed", 8, 1)]:
        a, b = make_coeffs(6, 4, gn, gd, form=form, device=device, zeros=True)
        check(x, a, b, form, "kat", config=config)


@pytest.mark.parametrize("device", DEVICES)
def test_many_groups_per_tile(device):
    # G = 50: D = 4, so one 64-wide tile holds 16 groups
    x = make_x((9, 200), device=device)
    a, b = make_coeffs(3, 7, 50, 50, form="abs_sum", device=device, zeros=True)
    check(x * 0.7, a, b, "abs_sum", "torch", config=(4, 64, 4))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stages", [1, 2])
@pytest.mark.parametrize("P", [1, 3, 20])
def test_row_programs(P, stages, device, monkeypatch):
    """Both reduction stages: P row programs, a grid-stride loop of several row blocks each,
    and P larger than the number of row blocks (programs with no rows write zeros)."""
    monkeypatch.setattr(tk, "_row_programs", lambda R, C, dev: P)
    x = make_x((53, 40), device=device)  # 14 row blocks of 4
    a, b = make_coeffs(6, 4, 1, 4, form="safe", device=device, zeros=True)
    check(x, a, b, "safe", "torch", config=(4, 32, 4, stages))
    check(x, a, b, "abs_sum", "kat", config=(4, 32, 4, stages))


def test_default_row_programs_exceed_one():
    # the default P at the test shape is > 1, so the shape tests above exercise stage 2 too
    dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    assert tk._row_programs(7 * 33, 200, dev) > 1


# ----------------------------------------------------------------------------
# Layouts: ranks, strides, expanded gradients
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_4d_and_1d(device):
    x = make_x((2, 3, 4, 40), device=device)
    a, b = make_coeffs(6, 4, 1, 4, form="safe", device=device)
    check(x, a, b, "safe", "kat")
    x1 = make_x((40,), device=device)
    check(x1, a, b, "abs_sum", "torch")


@pytest.mark.parametrize("device", DEVICES)
def test_expanded_grad(device):
    """y.sum().backward() hands a stride-0 gradient: read in place, no copy."""
    x = make_x((3, 7, 48), device=device)
    a, b = make_coeffs(6, 4, 1, 4, form="safe", device=device, zeros=True)
    g = torch.ones((), device=device).expand(x.shape)
    assert g.reshape(-1, 48).stride() == (0, 0)  # the kernel sees strides (0, 0)
    check(x, a, b, "safe", "kat", grad=g)
    gb = torch.randn(48, device=device).expand(x.shape)  # a broadcast bias-like gradient
    check(x, a, b, "abs_sum", "torch", grad=gb)


@pytest.mark.parametrize("device", DEVICES)
def test_noncontiguous(device):
    base = torch.randn(2, 48, 9, device=device)
    x = base.transpose(1, 2)  # (2, 9, 48), channel stride 9
    assert not x.is_contiguous()
    gbase = torch.randn(2, 9, 96, device=device)
    g = gbase[..., ::2]  # channel stride 2
    a, b = make_coeffs(6, 4, 4, 1, form="signed", device=device)
    check(x, a, b, "signed", "torch", grad=g)
    xs = torch.randn(20, 48, device=device)[::3]  # row stride 144
    check(xs, a, b, "signed", "kat", grad=torch.randn(48, 7, device=device).t())
    # non-contiguous coefficients: (4, 6) and (4, 4) with transposed strides
    an, bn = (c.t().contiguous().t() for c in make_coeffs(6, 4, 4, 4, form="signed", device=device, zeros=True))
    assert not an.is_contiguous() and not bn.is_contiguous()
    check(x, an, bn, "signed", "kat", grad=g)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0, 48), (3, 0, 48), (4, 0)])
def test_empty(shape, device):
    x = torch.randn(shape, device=device)
    a, b = make_coeffs(6, 4, 1, 4, form="safe", device=device)
    y = tk.forward(x, a, b, "safe")
    dx, da, db = tk.backward(torch.randn(shape, device=device), x, a, b, "safe", "kat")
    assert y.shape == x.shape and dx.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(da, torch.zeros_like(a)) and torch.equal(db, torch.zeros_like(b))


def test_backward_is_two_launches_and_no_torch_kernels(monkeypatch):
    """The eager backward launches its kernel and the stage-2 kernel, nothing else: no
    PyTorch reductions or casts (each a launch, which costs more host time than the
    small workspace sum itself)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    launched = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def __getitem__(self, grid):
            return lambda *args, **kwargs: launched.append((self.name, tuple(grid)))

    monkeypatch.setattr(tk, "_rational_bwd_kernel", Recorder("bwd"))
    monkeypatch.setattr(tk, "_rational_finish_kernel", Recorder("finish"))
    ops = []

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ops.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    x = make_x((3, 11, 48))
    for gn, gd in ((1, 4), (4, 4), (1, 1)):
        a, b = make_coeffs(6, 4, gn, gd, form="safe")
        launched.clear()
        g = torch.randn_like(x)
        with Ops():
            dx, da, db = tk.backward(g, x, a, b, "safe", "kat")
        assert [n for n, _ in launched] == ["bwd", "finish"] and launched[1][1] == (10, max(gn, gd)), launched
        assert da.shape == a.shape and db.shape == b.shape and da.is_contiguous() and db.is_contiguous()
    compute = sorted(set(ops) - {"empty", "empty_strided", "view", "reshape", "_reshape_alias", "expand", "detach",
                                 "alias"})
    assert compute == [], compute


# ----------------------------------------------------------------------------
# Determinism, poisoned buffers, infinities
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_deterministic(device):
    x = make_x((7, 33, 200), device=device)
    a, b = make_coeffs(6, 4, 1, 8, form="abs_sum", device=device, zeros=True)
    g = torch.randn_like(x)
    assert tk._row_programs(231, 200, x.device) > 1
    r1 = tk.backward(g, x, a, b, "abs_sum", "kat")
    r2 = tk.backward(g, x, a, b, "abs_sum", "kat")
    for u, v in zip(r1, r2):
        assert torch.equal(u, v)


@pytest.mark.parametrize("device", DEVICES)
def test_poisoned_buffers(device, monkeypatch):
    """Every output element and every workspace entry is written: buffers start as NaN."""
    real_empty = torch.empty

    def nan_empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        if t.is_floating_point():
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", nan_empty)
    x = make_x((5, 9, 200), device=device)
    a, b = make_coeffs(6, 4, 1, 8, form="safe", device=device, zeros=True)
    a2, b2 = make_coeffs(6, 4, 8, 1, form="signed", device=device, zeros=True)
    for P in (1, 3, 9):  # 9 > 6 row blocks: programs with no rows must write zeros
        monkeypatch.setattr(tk, "_row_programs", lambda R, C, dev, P=P: P)
        check(x, a, b, "safe", "kat", config=(8, 64, 4, 2))
        check(x, a2, b2, "signed", "torch", config=(4, 64, 4, 1))


@pytest.mark.parametrize("device", DEVICES)
def test_infinite_input_no_zero_times_inf(device):
    """Horner starts at the highest present coefficient: m = 1 gives y = a0 / Q = 0 at x = +-inf
    (a Horner started from 0 would compute 0 * inf = NaN)."""
    x = torch.tensor([[float("inf"), -float("inf"), 1.0, 0.0]], device=device)
    a = torch.tensor([[0.5]], device=device)
    b = torch.tensor([[0.3, -0.2]], device=device)
    y = tk.forward(x, a, b, "safe")
    ref = reference_forward(x, a, b, "safe")
    assert torch.equal(y.double().cpu(), ref.cpu().to(y.dtype).double())
    assert y[0, 0].item() == 0.0 and y[0, 1].item() == 0.0


# ----------------------------------------------------------------------------
# Dtypes: float64, float16 / bfloat16 against the naive low-precision computation, mixed dtypes
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("coef_dtype", ["same", torch.float32])
@pytest.mark.parametrize("form", FORMS)
def test_low_precision(form, coef_dtype, dtype, device):
    """16-bit x (read and written in its dtype), coefficients in x's dtype or float32."""
    cdt = dtype if coef_dtype == "same" else coef_dtype
    x = make_x((6, 5, 64), device=device, dtype=dtype)
    for kind, zero_sign in (("gelu", "torch"), ("random", "kat")):
        a, b = make_coeffs(6, 4, 1, 4, form=form, kind=kind, device=device, dtype=cdt, zeros=kind == "random")
        # gradients of realistic size: the float16 sums (and dden itself, returned in
        # float16) stay below 65504
        g = (0.1 * torch.randn(x.shape, device=device)).to(dtype)
        check(x, a, b, form, zero_sign, grad=g)


@pytest.mark.parametrize("device", DEVICES)
def test_float64(device):
    x = make_x((3, 7, 48), device=device, dtype=torch.float64)
    for form in FORMS:
        a, b = make_coeffs(6, 4, 1, 4, form=form, device=device, dtype=torch.float64, zeros=True)
        check(x, a, b, form, "kat")


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_coefficient_dtypes(device):
    x = make_x((3, 7, 48), device=device)
    a, b = make_coeffs(6, 4, 1, 4, form="safe", device=device)
    check(x, a.double(), b.half(), "safe", "kat")  # dden returned in float16
    check(x.double(), a, b, "abs_sum", "torch")  # float64 x with float32 coefficients


# ----------------------------------------------------------------------------
# CUDA only: realistic size, no recompilation for a new batch size
# ----------------------------------------------------------------------------
@cuda_only
@pytest.mark.cuda
def test_cuda_kat_size():
    x = torch.randn(16, 197, 768, device="cuda")
    a, b = make_coeffs(6, 4, 1, 8, form="safe", kind="gelu", device="cuda")
    assert tk._row_programs(16 * 197, 768, x.device) > 1
    check(x, a, b, "safe", "kat")
    check(x.bfloat16(), a, b, "safe", "kat")


@cuda_only
@pytest.mark.cuda
def test_cuda_no_recompile_for_batch_size():
    a, b = make_coeffs(6, 4, 1, 8, form="safe", device="cuda")
    x = torch.randn(3, 17, 768, device="cuda")
    tk.forward(x, a, b, "safe")
    tk.backward(x, x, a, b, "safe", "kat")

    def n_compiled(kernel):
        return sum(len(c[0]) for c in kernel.device_caches.values())

    nf, nb = n_compiled(tk._rational_fwd_kernel), n_compiled(tk._rational_bwd_kernel)
    for batch in (5, 11, 64):
        x = torch.randn(batch, 17, 768, device="cuda")
        tk.forward(x, a, b, "safe")
        tk.backward(x, x, a, b, "safe", "kat")
    assert n_compiled(tk._rational_fwd_kernel) == nf
    assert n_compiled(tk._rational_bwd_kernel) == nb
