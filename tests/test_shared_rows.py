"""A numerator row shared by every group goes to the ops as the row itself
(flashkat_inductor/recognisers/shared_rows.py): KAT's ``weight_numerator.repeat(G, 1)``
and the sum over the groups that is its backward leave the compiled graph."""
import copy
import re

import pytest
import torch
from torch._dynamo.utils import counters
from torch._inductor.utils import run_and_get_code

import flashkat_inductor as fk
from flashkat_inductor.recognisers.shared_rows import UNREPEATED

import kat_modules as km
from helpers import coefficients, no_compile_caches, rel_err


@pytest.fixture(autouse=True)
def _no_caches():
    """A cache hit skips the passes, and with them the counters asserted here."""
    with no_compile_caches():
        yield


def _module():
    torch.manual_seed(0)
    m = km.make_rational("kat_torch", 64, "gelu", 8, "cpu")
    with torch.no_grad():  # distinct values in every coefficient
        m.weight_numerator.add_(0.05 * torch.randn_like(m.weight_numerator))
        m.weight_denominator.add_(0.05 * torch.randn_like(m.weight_denominator))
    return m


def _grads(m, x, y):
    (y.double() ** 2).sum().backward()
    out = [x.grad.clone(), m.weight_numerator.grad.clone(), m.weight_denominator.grad.clone()]
    x.grad = None
    m.zero_grad()
    return out


def test_kat_shared_numerator_training_and_inference():
    """KAT_Group_Torch: the repeat is gone from the forward's code, and the output and every
    gradient are as close to a float64 run as KAT's own float32 code is (within 2x)."""
    m = _module()
    m64 = copy.deepcopy(m).double()
    x = torch.randn(7, 33, 64, requires_grad=True)
    x64 = x.detach().double().requires_grad_()
    ref = m64(x64)
    ref_grads = _grads(m64, x64, ref)
    eager = m(x)
    eager_grads = _grads(m, x, eager)

    def close(got, want, base):
        assert got.shape == want.shape and got.dtype == base.dtype
        assert rel_err(got, want) <= 2 * rel_err(base, want) + 1e-6, (rel_err(got, want), rel_err(base, want))

    torch._dynamo.reset()
    counters.clear()
    y, codes = run_and_get_code(lambda: torch.compile(m, backend="flashkat")(x))
    assert counters["flashkat"][UNREPEATED] == 1 and counters["flashkat"]["rewrites"] == 1, dict(counters["flashkat"])
    # no kernel of the forward copies the row (a C++ kernel is named after its ops: cpp_fused_repeat_...)
    assert not re.search(r"fused\w*_repeat", codes[0]), re.findall(r"\w*fused\w*", codes[0])
    close(y, ref, eager)
    for got, want, base in zip(_grads(m, x, y), ref_grads, eager_grads):
        close(got, want, base)

    torch._dynamo.reset()
    counters.clear()
    with torch.no_grad():
        yi = torch.compile(m, backend="flashkat")(x)
    assert counters["flashkat"][UNREPEATED] == 1, dict(counters["flashkat"])
    close(yi, ref, eager)


def test_repeated_row_read_elsewhere_is_left_alone():
    """Near miss: the repeated (G, m) numerator is also read by other code, so its gradient
    is not the sum over the groups alone: the repeat stays, the results are eager's."""
    a, b = coefficients(6, 4, 1, 8)
    a, b = a.requires_grad_(), b.requires_grad_()
    x = torch.randn(7, 33, 64, requires_grad=True)

    def f(x, a, b):
        num = a.repeat(8, 1)
        return fk.rational(x, num, b, form="safe", zero_sign="kat"), (num * torch.arange(8.0)[:, None]).sum()

    def grads(fn):
        y, s = fn(x, a, b)
        ((y.double() ** 2).sum() + s).backward()
        out = [t.grad.clone() for t in (x, a, b)]
        for t in (x, a, b):
            t.grad = None
        return y, out

    ref, ref_grads = grads(f)
    torch._dynamo.reset()
    counters.clear()
    y, got = grads(torch.compile(f, backend="flashkat", fullgraph=True))
    assert counters["flashkat"][UNREPEATED] == 0, dict(counters["flashkat"])
    assert rel_err(y, ref) <= 1e-6
    for g_, w_ in zip(got, ref_grads):
        assert rel_err(g_, w_) <= 1e-5, rel_err(g_, w_)


def test_keep_repeated_rows_switch(monkeypatch):
    """``FLASHKAT_KEEP_REPEATED_ROWS=1`` (for side-by-side timing) leaves the repeat in the graph,
    and the result is the same as with the row passed as it is."""
    m = _module()
    x = torch.randn(7, 33, 64)
    with torch.no_grad():
        want = torch.compile(m, backend="flashkat")(x)
        torch._dynamo.reset()
        counters.clear()
        monkeypatch.setenv("FLASHKAT_KEEP_REPEATED_ROWS", "1")
        got = torch.compile(m, backend="flashkat")(x)
    assert counters["flashkat"][UNREPEATED] == 0 and counters["flashkat"]["rewrites"] == 1, dict(counters["flashkat"])
    assert torch.equal(got, want)


def test_float32_sum_of_cuda_autocast_is_taken():
    """Under CUDA autocast the backward is traced with autocast on, and autocast runs repeat's
    backward ``sum`` in float32 as ``sum(g, [0], dtype=torch.float32)`` (CPU autocast does not,
    hence this graph-level twin): a dtype that is the gradient's own is no cast, so the row is
    still taken; a sum to another dtype is not."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from flashkat_inductor.recognisers.shared_rows import unrepeat_shared_rows

    a, b = coefficients(6, 4, 1, 8)
    x, dy = torch.randn(7, 33, 64), torch.randn(7, 33, 64)

    def f(x, dy, a, b, dtype):
        num = a.repeat(8, 1)
        y = torch.ops.flashkat.rational_fwd(x, num, b, "safe", "kat")
        dx, dnum, dden = torch.ops.flashkat.rational_bwd(dy, x, num, b, "safe", "kat")
        return y, dx, dnum.view(8, 1, 6).sum([0], dtype=dtype), dden

    for dtype, taken in ((torch.float32, 1), (torch.float64, 0)):
        gm = make_fx(lambda *t: f(*t, dtype), tracing_mode="fake")(x, dy, a, b)
        counters.clear()
        assert unrepeat_shared_rows(gm.graph) == taken
        assert counters["flashkat"][UNREPEATED] == taken
        gm.recompile()
        assert bool(gm.graph.find_nodes(op="call_function", target=torch.ops.aten.repeat.default)) == (not taken)
        got, want = gm(x, dy, a, b), f(x, dy, a, b, dtype)
        for g_, w_ in zip(got, want):
            assert g_.shape == w_.shape and g_.dtype == w_.dtype
            assert rel_err(g_, w_) <= 1e-6, rel_err(g_, w_)
