"""The float32 round trip around the rational under mixed precision is dropped
(flashkat_inductor/recognisers/round_trips.py): the graph KAT's Function gives
under bf16 / fp16 autocast once it is rewritten (x cast to float32, the output
cast back by the next layer, the gradients likewise), written out by hand."""
import os
from unittest import mock

import pytest
import torch
from torch._dynamo.utils import counters

import flashkat_inductor as fk
from flashkat_inductor.recognisers.round_trips import NARROWED_BWD, NARROWED_BWD_X, NARROWED_FWD

from helpers import coefficients, no_compile_caches, rel_err


def _site(x16, a, b, w, keep_f32: bool):
    y32 = fk.rational(x16.float(), a, b, form="safe", zero_sign="kat")
    out = y32.to(x16.dtype) @ w
    return (out, y32.sum()) if keep_f32 else out


def _recording_saved(saved: list):
    """Autograd's saved-tensor hooks that append (dtype, shape) of every tensor saved for the
    backward to ``saved`` (the tensors themselves are kept as they are)."""
    def pack(t):
        saved.append((t.dtype, tuple(t.shape)))
        return t

    return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)


@pytest.fixture(autouse=True)
def _no_caches():
    """A cache hit skips the passes, and with them the counters asserted here."""
    with no_compile_caches():
        yield


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_round_trip_dropped_exactly(dtype):
    torch._dynamo.reset()
    a, b = coefficients(6, 4, 1, 8)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 33, 64, generator=g).to(dtype)
    w = (0.1 * torch.randn(64, 16, generator=g)).to(dtype)
    dy = torch.randn(7, 33, 16, generator=g).to(dtype)

    def run(fn):
        xr, ar, br = (t.clone().requires_grad_() for t in (x, a, b))
        saved = []

        with _recording_saved(saved):
            out = fn(xr, ar, br, w, False)
        out.backward(dy)
        return out, xr.grad, ar.grad, br.grad, saved

    counters.clear()
    got = run(torch.compile(_site, backend="flashkat", fullgraph=True))
    assert counters["flashkat"][NARROWED_FWD] == 1 and counters["flashkat"][NARROWED_BWD] == 1, dict(counters["flashkat"])
    # nothing of x's size is kept in float32 for the backward
    assert not [s for s in got[4] if s == (torch.float32, tuple(x.shape))], got[4]
    # the same graph with the round trip kept: the same numbers (the narrowing is exact)
    torch._dynamo.reset()
    counters.clear()
    with mock.patch.dict(os.environ, {"FLASHKAT_KEEP_FLOAT32_ROUND_TRIPS": "1"}):
        kept = run(torch.compile(_site, backend="flashkat", fullgraph=True))
    assert not counters["flashkat"][NARROWED_FWD] and not counters["flashkat"][NARROWED_BWD]
    assert (torch.float32, tuple(x.shape)) in kept[4], kept[4]
    for g_, k_ in zip(got[:2], kept[:2]):
        assert g_.dtype == dtype and torch.equal(g_, k_)
    for g_, k_ in zip(got[2:4], kept[2:4]):
        assert g_.dtype == torch.float32 and rel_err(g_, k_) <= 1e-6, rel_err(g_, k_)
    # and against eager (other float32 code: contractions and orders differ)
    ref = run(_site)
    for g_, r_ in zip(got[:4], ref[:4]):
        assert rel_err(g_, r_) <= (2e-2 if dtype == torch.bfloat16 else 2e-3), rel_err(g_, r_)

    # near miss: the float32 output is also used in float32: the forward and the incoming
    # gradient (float32, the sum's ones added) stay float32; the backward's x alone is narrowed,
    # with the same dx bit for bit as with every round trip kept
    def near_miss():
        xr, ar, br = (t.clone().requires_grad_() for t in (x, a, b))
        out, s = torch.compile(_site, backend="flashkat", fullgraph=True)(xr, ar, br, w, True)
        (out.float().sum() + s).backward()
        return xr.grad

    counters.clear()
    torch._dynamo.reset()
    dx = near_miss()
    assert counters["flashkat"][NARROWED_FWD] == 0 and counters["flashkat"][NARROWED_BWD] == 0, dict(counters["flashkat"])
    assert counters["flashkat"][NARROWED_BWD_X] == 1, dict(counters["flashkat"])
    torch._dynamo.reset()
    with mock.patch.dict(os.environ, {"FLASHKAT_KEEP_FLOAT32_ROUND_TRIPS": "1"}):
        dx_kept = near_miss()
    assert dx.dtype == dtype and torch.equal(dx, dx_kept)
    assert torch.isfinite(dx.float()).all()


def test_dropout_zero_between_is_narrowed_both_ways():
    """KAT's MLP has Dropout(p=0) between the activation and fc2: in training it is a
    clone, and convert(clone(y32), bf16) is the narrowed op's output, so the forward and
    the backward are narrowed and the activation is saved in bf16."""
    torch._dynamo.reset()
    counters.clear()
    a, b = coefficients(6, 4, 1, 8)
    x = torch.randn(5, 9, 64).to(torch.bfloat16).requires_grad_()
    w = (0.1 * torch.randn(64, 16)).to(torch.bfloat16)

    def f(x16, a, b, w):
        y32 = fk.rational(x16.float(), a, b, form="safe", zero_sign="kat")
        return torch.nn.functional.dropout(y32, 0.0, True).to(x16.dtype) @ w

    saved = []
    with _recording_saved(saved):
        out = torch.compile(f, backend="flashkat", fullgraph=True)(x, a, b, w)
    out.float().sum().backward()
    assert counters["flashkat"][NARROWED_FWD] == 1, dict(counters["flashkat"])
    assert counters["flashkat"][NARROWED_BWD] == 1, dict(counters["flashkat"])
    assert (torch.float32, tuple(x.shape)) not in saved, saved
    xr = x.detach().clone().requires_grad_()
    f(xr, a, b, w).float().sum().backward()
    assert rel_err(x.grad, xr.grad) <= 2e-2


def test_dropout_between_narrows_the_backwards_x():
    """Dropout(p > 0) between the activation and fc2 runs in float32 on the float32 output, so
    the forward keeps it (dropping the round trip would round twice) and the incoming gradient
    is float32 (times the mask and the scale): the backward reads bf16 x instead of its float32
    copy, which is then no longer saved, with the same results bit for bit (same seed, same
    masks) as with the round trips kept."""
    a, b = coefficients(6, 4, 1, 8)
    x = torch.randn(7, 33, 64).to(torch.bfloat16)
    w = (0.1 * torch.randn(64, 16)).to(torch.bfloat16)

    def f(x16, a, b, w):
        y32 = fk.rational(x16.float(), a, b, form="safe", zero_sign="kat")
        return torch.nn.functional.dropout(y32, 0.25, True).to(x16.dtype) @ w

    def run(keep: bool):
        torch._dynamo.reset()
        counters.clear()
        xr, ar, br = (t.clone().requires_grad_() for t in (x, a, b))
        saved = []
        with mock.patch.dict(os.environ, {"FLASHKAT_KEEP_FLOAT32_ROUND_TRIPS": "1" if keep else "0"}):
            torch.manual_seed(5)
            with _recording_saved(saved):
                out = torch.compile(f, backend="flashkat", fullgraph=True)(xr, ar, br, w)
            out.float().square().sum().backward()
        return (out, xr.grad, ar.grad, br.grad), saved, dict(counters["flashkat"])

    got, saved, c = run(False)
    assert c.get(NARROWED_BWD_X) == 1 and not c.get(NARROWED_FWD) and not c.get(NARROWED_BWD), c
    assert (torch.float32, tuple(x.shape)) not in saved and (torch.bfloat16, tuple(x.shape)) in saved, saved
    kept, saved_kept, _ = run(True)
    assert (torch.float32, tuple(x.shape)) in saved_kept, saved_kept
    for g_, k_ in zip(got, kept):
        assert torch.isfinite(g_.float()).all() and torch.equal(g_, k_)


def test_clone_with_a_float32_reader_is_not_narrowed():
    """Near miss: the clone after the activation is also read in float32 (a sum), so the forward
    keeps its float32 output."""
    torch._dynamo.reset()
    counters.clear()
    a, b = coefficients(6, 4, 1, 8)
    x = torch.randn(5, 9, 64).to(torch.bfloat16)
    w = (0.1 * torch.randn(64, 16)).to(torch.bfloat16)

    def f(x16, a, b, w):
        z = torch.nn.functional.dropout(fk.rational(x16.float(), a, b, form="safe", zero_sign="kat"), 0.0, True)
        return z.to(x16.dtype) @ w, z.sum()

    xr = x.clone().requires_grad_()
    out, total = torch.compile(f, backend="flashkat", fullgraph=True)(xr, a, b, w)
    (out.float().sum() + total).backward()
    assert counters["flashkat"][NARROWED_FWD] == 0, dict(counters["flashkat"])
    xe = x.clone().requires_grad_()
    ref, ref_total = f(xe, a, b, w)
    assert rel_err(total, ref_total) <= 1e-5 and rel_err(out, ref) <= 2e-2
