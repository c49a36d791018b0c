"""The custom ops and the public API against the float64 reference (CPU; CUDA when present)."""
import itertools

import pytest
import torch

import flashkat_inductor as fk
from flashkat_inductor.semantics import FORMS, ZERO_SIGNS, reference_backward, reference_forward

from conftest import DEVICES
from helpers import KAT_MODES, coefficients, naive_lowp, rel_err

F32_BOUND = 1e-6


def run(x, a, b, form, zero_sign, grad=None):
    """y and (dx, da, db) through the public API and autograd."""
    xr, ar, br = (t.detach().clone().requires_grad_() for t in (x, a, b))
    y = fk.rational(xr, ar, br, form=form, zero_sign=zero_sign)
    # dy ~ U(0.5, 1.5): keeps the coefficient sums free of the cancellation random-sign
    # gradients cause, so the errors measure the code rather than the condition number
    g = torch.rand_like(y) + 0.5 if grad is None else grad
    y.backward(g)
    return y, g, (xr.grad, ar.grad, br.grad)


def check(x, a, b, form, zero_sign, bound=F32_BOUND, grad=None):
    y, g, grads = run(x, a, b, form, zero_sign, grad)
    assert y.dtype == x.dtype and y.shape == x.shape
    ref_y = reference_forward(x, a, b, form)
    ref_g = reference_backward(g, x, a, b, form, zero_sign)
    errs = [rel_err(y, ref_y)] + [rel_err(u, v) for u, v in zip(grads, ref_g)]
    assert max(errs) <= bound, dict(zip(("y", "dx", "dnum", "dden"), errs))
    return errs


# ----------------------------------------------------------------------------
# The whole family, float32
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("form,zero_sign", list(itertools.product(FORMS, ZERO_SIGNS)))
@pytest.mark.parametrize("gn,gd", [(1, 8), (8, 8), (8, 1), (1, 1)])
def test_forms_signs_layouts(device, form, zero_sign, gn, gd):
    x = torch.randn(7, 33, 200, device=device)
    x[0, 0, :7] = 0.0  # exact zeros: sign(0) convention matters for dx
    a, b = coefficients(6, 4, gn, gd, form=form, device=device, zeros=True)
    check(x, a, b, form, zero_sign)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m,n", [(1, 1), (2, 1), (1, 3), (3, 7), (6, 4), (5, 5), (8, 8), (8, 2), (4, 8)])
@pytest.mark.parametrize("form", FORMS)
def test_orders(device, m, n, form):
    x = torch.randn(5, 48, device=device)
    a, b = coefficients(m, n, 4, 4, form=form, device=device)
    check(x, a, b, form, "torch")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("groups", [1, 2, 4, 8, 48])
def test_group_counts(device, groups):
    x = torch.randn(3, 4, 48, device=device)
    a, b = coefficients(6, 4, groups, groups, device=device)
    check(x, a, b, "safe", "kat")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", KAT_MODES)
def test_kat_coefficients(device, mode):
    x = 3 * torch.randn(4, 17, 64, device=device)
    a, b = coefficients(6, 4, 1, 8, kind=mode, device=device)
    for form in ("safe", "abs_sum"):
        check(x, a, b, form, "kat")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(48,), (5, 48), (7, 33, 200), (2, 3, 5, 40)])
def test_shapes(device, shape):
    x = torch.randn(*shape, device=device)
    a, b = coefficients(6, 4, 1, 8, device=device)
    check(x, a, b, "safe", "torch")


@pytest.mark.parametrize("device", DEVICES)
def test_identity_init_trains_only_under_kat_convention(device):
    """KAT's identity init has b = 0: autograd's sign(0) = 0 freezes b, KAT's +1 does not."""
    m = fk.GroupRational(num_groups=8, mode="identity").to(device)
    x = torch.randn(4, 9, 64, device=device)
    torch.testing.assert_close(m(x), x, rtol=0, atol=0)
    m(x).square().sum().backward()
    assert m.weight_denominator.grad.abs().sum() > 0
    m_t = fk.GroupRational(num_groups=8, mode="identity", zero_sign="torch").to(device)
    m_t(x).square().sum().backward()
    assert m_t.weight_denominator.grad.abs().sum() == 0


# ----------------------------------------------------------------------------
# Low precision: at most twice the error of the same computation done in that dtype
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("coef_dtype", ["same", torch.float32])
@pytest.mark.parametrize("form", FORMS)
def test_low_precision(device, dtype, coef_dtype, form):
    cd = dtype if coef_dtype == "same" else coef_dtype
    x = torch.randn(7, 33, 200, device=device).to(dtype)
    a, b = coefficients(6, 4, 1, 8, form=form, device=device, dtype=cd)
    y, g, grads = run(x, a, b, form, "torch")
    assert y.dtype == dtype and grads[0].dtype == dtype
    assert grads[1].dtype == cd and grads[2].dtype == cd
    ref_y = reference_forward(x, a, b, form)
    ref_g = reference_backward(g, x, a, b, form, "torch")
    # the baseline: the naive formula and its autograd, all in `dtype`
    xl, al, bl = (t.detach().to(dtype).requires_grad_() for t in (x, a, b))
    yl = naive_lowp(xl, al, bl, form)
    yl.backward(g)
    base = [rel_err(yl, ref_y)] + [rel_err(u, v) for u, v in zip((xl.grad, al.grad, bl.grad), ref_g)]
    ours = [rel_err(y, ref_y)] + [rel_err(u, v) for u, v in zip(grads, ref_g)]
    for name, o, bb in zip(("y", "dx", "dnum", "dden"), ours, base):
        assert o <= 2 * bb, (name, o, bb)


def test_float64_is_computed_in_float64():
    x = torch.randn(6, 40, dtype=torch.float64)
    a, b = coefficients(6, 4, 1, 4, dtype=torch.float64)
    check(x, a, b, "safe", "torch", bound=1e-13)


# ----------------------------------------------------------------------------
# Layouts of x and of the incoming gradient; determinism; empty input
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_expanded_and_noncontiguous(device):
    a, b = coefficients(6, 4, 1, 8, device=device)
    x = torch.randn(40, 7, 64, device=device).transpose(0, 1)  # non-contiguous x
    check(x, a, b, "safe", "kat", grad=torch.ones((), device=device).expand(x.shape))  # y.sum().backward()
    base = torch.randn(7, 40, 128, device=device)
    check(base[..., ::2], a, b, "safe", "torch", grad=torch.randn(7, 40, 128, device=device)[..., 1::2])
    x = torch.randn(2, 16, 5, 5, device=device).permute(0, 2, 3, 1)  # channels-last view of NCHW
    check(x, a, b, "signed", "torch")


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic(device):
    x = torch.randn(33, 17, 96, device=device)
    a, b = coefficients(6, 4, 1, 8, device=device)
    g = torch.randn_like(x)
    outs = [torch.ops.flashkat.rational_bwd(g, x, a, b, "safe", "kat") for _ in range(3)]
    for o in outs[1:]:
        for u, v in zip(outs[0], o):
            assert torch.equal(u, v)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0, 16), (4, 0, 16), (3, 0)])
def test_empty(device, shape):
    x = torch.randn(*shape, device=device, requires_grad=True)
    a = torch.randn(1, 6, device=device, requires_grad=True)
    b = torch.randn(4 if shape[-1] else 1, 4, device=device, requires_grad=True)
    y = fk.rational(x, a, b)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(a.grad, torch.zeros_like(a)) and torch.equal(b.grad, torch.zeros_like(b))


def test_outputs_are_fully_written():
    """Poison the allocator's memory: every output element must be overwritten."""
    x = torch.randn(7, 33, 200)
    a, b = coefficients(6, 4, 1, 8)
    for _ in range(3):  # reuse freed NaN-filled blocks
        torch.full((7, 33, 200), float("nan")).sum()
        check(x, a, b, "safe", "torch")


# ----------------------------------------------------------------------------
# Bad input: a clear error naming what was wrong
# ----------------------------------------------------------------------------
BAD = [
    ("channels", lambda: (torch.randn(4, 30), torch.randn(1, 6), torch.randn(8, 4)), ValueError, "not divisible"),
    ("groups", lambda: (torch.randn(4, 32), torch.randn(4, 6), torch.randn(8, 4)), ValueError, "group rows"),
    ("num 1-D", lambda: (torch.randn(4, 32), torch.randn(6), torch.randn(8, 4)), ValueError, "numerator must be 2-D"),
    ("den 3-D", lambda: (torch.randn(4, 32), torch.randn(1, 6), torch.randn(1, 8, 4)), ValueError, "denominator must be 2-D"),
    ("int x", lambda: (torch.arange(32).view(1, 32), torch.randn(1, 6), torch.randn(8, 4)), TypeError, "x has dtype torch.int64"),
    ("int num", lambda: (torch.randn(4, 32), torch.ones(1, 6, dtype=torch.int32), torch.randn(8, 4)), TypeError, "numerator has dtype"),
    ("complex", lambda: (torch.randn(4, 32, dtype=torch.complex64), torch.randn(1, 6), torch.randn(8, 4)), TypeError, "complex64"),
    ("0-d x", lambda: (torch.tensor(1.0), torch.randn(1, 6), torch.randn(1, 4)), ValueError, "at least 1 dimension"),
    ("no coeffs", lambda: (torch.randn(4, 32), torch.randn(1, 0), torch.randn(8, 4)), ValueError, "at least one coefficient"),
    ("list x", lambda: ([1.0, 2.0], torch.randn(1, 6), torch.randn(1, 4)), TypeError, "x must be a torch.Tensor"),
]


@pytest.mark.parametrize("name,make,exc,msg", BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, make, exc, msg):
    x, a, b = make()
    with pytest.raises(exc, match=msg):
        fk.rational(x, a, b)


def test_bad_options():
    x, a, b = torch.randn(4, 32), torch.randn(1, 6), torch.randn(8, 4)
    with pytest.raises(ValueError, match="form must be one of"):
        fk.rational(x, a, b, form="pade")
    with pytest.raises(ValueError, match="zero_sign must be one of"):
        fk.rational(x, a, b, zero_sign="numpy")
    with pytest.raises(ValueError, match="grad has shape"):
        torch.ops.flashkat.rational_bwd(torch.randn(4, 16), x, a, b, "safe", "torch")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mixed_devices():
    with pytest.raises(ValueError, match="one device"):
        fk.rational(torch.randn(4, 32, device="cuda"), torch.randn(1, 6), torch.randn(8, 4, device="cuda"))


# ----------------------------------------------------------------------------
# torch.library.opcheck: schema, fake tensors, autograd registration
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("form,zero_sign", [("safe", "torch"), ("signed", "kat"), ("abs_sum", "torch")])
def test_opcheck(device, form, zero_sign):
    x = torch.randn(3, 5, 16, device=device, requires_grad=True)
    a = torch.randn(1, 6, device=device, requires_grad=True)
    b = (0.1 * torch.randn(4, 4, device=device)).requires_grad_()
    torch.library.opcheck(torch.ops.flashkat.rational_fwd.default, (x, a, b, form, zero_sign))
    g = torch.randn(3, 5, 16, device=device)
    torch.library.opcheck(torch.ops.flashkat.rational_bwd.default, (g, x.detach(), a.detach(), b.detach(), form, zero_sign))


def test_group_rational_is_a_kat_group_drop_in():
    m = fk.GroupRational(num_groups=8, mode="gelu")
    assert m.weight_numerator.shape == (1, 6) and m.weight_denominator.shape == (8, 4)
    assert m.weight_numerator.dtype == torch.float32
    sd = {"weight_numerator": torch.randn(1, 6), "weight_denominator": torch.randn(8, 4)}
    m.load_state_dict(sd)
    x = torch.randn(2, 5, 64)
    ref = reference_forward(x, sd["weight_numerator"], sd["weight_denominator"], "safe")
    assert rel_err(m(x), ref) <= F32_BOUND
    assert m(torch.randn(3, 64)).shape == (3, 64)
    with pytest.raises(ValueError, match="unknown initialisation mode"):
        fk.GroupRational(mode="nope")


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_keeps_activation_dtype(device):
    """Under autocast a bf16 activation stays bf16 (the ops are autocast-transparent: no
    float32 round trip as KAT's custom_fwd(cast_inputs=float32) does), coefficients and
    their gradients stay float32."""
    lin = torch.nn.Linear(64, 64).to(device)
    act = fk.GroupRational(8).to(device)
    x = torch.randn(4, 7, 64, device=device)
    with torch.autocast(device, dtype=torch.bfloat16):
        h = lin(x)
        y = act(h)
    assert h.dtype == torch.bfloat16 and y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert act.weight_numerator.grad.dtype == torch.float32
    ref = reference_forward(h.detach(), act.weight_numerator.detach(), act.weight_denominator.detach(), "safe")
    assert rel_err(y, ref) <= 2 ** -8  # one bf16 rounding of the output
