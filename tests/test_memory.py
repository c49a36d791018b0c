"""What the forward keeps for the backward: only x (by reference) and the coefficients.

The tensors autograd saves are recorded with ``torch.autograd.graph.saved_tensors_hooks``
(compiled graphs save theirs through the same mechanism).  The project's ops, and
code the backend rewrites into them, must save no activation-sized tensor other than
x itself (no powers, no P, no Q, no copy of x); KAT's pure-PyTorch function under
plain Inductor, by contrast, keeps stacked powers.
"""
from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch._dynamo.utils import counters

import flashkat_inductor as fk
import flashkat_inductor.backend  # noqa: F401
from kat_modules import kat_rational_torch

from helpers import RationalAct, coefficients

SHAPE = (4, 17, 64)


def _storage(t):
    return t.untyped_storage().nbytes(), t.untyped_storage().data_ptr()


def saved_tensors(fn, *args, record=_storage):
    """``record(t)`` (default: storage bytes, storage pointer) of every tensor the forward saves
    for the backward."""
    rec = []

    def pack(t):
        rec.append(record(t))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return rec


def hand_written_safe(x, a, b):
    G = b.shape[0]
    xv = x.view(*x.shape[:-1], G, x.shape[-1] // G)
    p = a[:, 5:6]
    for i in (4, 3, 2, 1, 0):
        p = p * xv + a[:, i : i + 1]
    t = xv.abs()
    s = b[:, 3:4].abs()
    for j in (2, 1, 0):
        s = s * t + b[:, j : j + 1].abs()
    return (p / (1 + s * t)).view(x.shape)


def kat_reference(x, a, b):
    return kat_rational_torch(x, a, b, b.shape[0])


def inputs(form="safe"):
    torch.manual_seed(0)
    x = torch.randn(SHAPE, requires_grad=True)
    a, b = coefficients(6, 4, 8, 8, form=form)
    return x, a.requires_grad_(), b.requires_grad_()


def activation_sized(rec, x):
    """The saved storages at least as large as x, as (bytes, is x's own storage)."""
    big = x.untyped_storage().nbytes()
    return [(n, p == x.untyped_storage().data_ptr()) for n, p in rec if n >= big]


def test_eager_op_saves_x_and_coefficients_only():
    x, a, b = inputs()
    rec = saved_tensors(lambda *t: fk.rational(*t, form="safe"), x, a, b)
    assert activation_sized(rec, x) == [(x.untyped_storage().nbytes(), True)]
    assert sum(n for n, _ in rec) == sum(t.untyped_storage().nbytes() for t in (x, a, b))


@pytest.mark.parametrize("code,form,pattern", [(hand_written_safe, "safe", "horner_safe"),
                                               (kat_reference, "signed", "kat_reference_signed")])
def test_rewritten_code_saves_x_by_reference_only(code, form, pattern):
    x, a, b = inputs(form)
    torch._dynamo.reset()
    counters.clear()
    rec = saved_tensors(torch.compile(code, backend="flashkat"), x, a, b)
    assert counters["flashkat"][pattern] == 1
    assert activation_sized(rec, x) == [(x.untyped_storage().nbytes(), True)], rec
    # the rest are coefficient-sized (a few (G, k) rows)
    assert sum(n for n, _ in rec) <= x.untyped_storage().nbytes() + 8 * 64 * 4


def test_kat_reference_under_inductor_keeps_more():
    """The baseline the rewrite removes: plain Inductor saves activation-sized tensors beyond x."""
    x, a, b = inputs("signed")
    torch._dynamo.reset()
    rec = saved_tensors(torch.compile(kat_reference, backend="inductor"), x, a, b)
    extra = [n for n, own in activation_sized(rec, x) if not own]
    assert sum(extra) >= x.untyped_storage().nbytes(), rec


def test_kan_block_saves_one_float32_activation_more_than_a_vit_block():
    """What bench/bench_train.py's memory target counts as the activations KAT adds: a KAN MLP
    (norm -> rational -> fc1 -> rational -> fc2) compiled with flashkat under bf16 autocast saves,
    beyond a ViT MLP (norm -> fc1 -> GELU -> fc2) under Inductor, exactly one float32 tensor of
    the block's input size (the norm's output, which the first rational computes on), plus the
    coefficients; the second rational's input stays bf16 (no float32 round trip)."""
    torch.manual_seed(0)
    D = 64
    kan = torch.nn.Sequential(torch.nn.LayerNorm(D), RationalAct(True), torch.nn.Linear(D, 4 * D), RationalAct(True),
                              torch.nn.Linear(4 * D, D))
    vit = torch.nn.Sequential(torch.nn.LayerNorm(D), torch.nn.Linear(D, 4 * D), torch.nn.GELU(),
                              torch.nn.Linear(4 * D, D))
    x = torch.randn(4, 5, D, requires_grad=True)

    def saved(model, backend):
        torch._dynamo.reset()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return saved_tensors(torch.compile(model, backend=backend), x, record=lambda t: (t.dtype, t.numel()))

    kan_saved, vit_saved = saved(kan, "flashkat"), saved(vit, "inductor")
    extra = list((Counter(kan_saved) - Counter(vit_saved)).elements())
    missing = list((Counter(vit_saved) - Counter(kan_saved)).elements())
    activations = sorted(e for e in extra if e[1] >= x.numel())
    assert activations == [(torch.float32, x.numel())], (kan_saved, vit_saved)
    assert not [e for e in missing if e[1] >= x.numel()], (kan_saved, vit_saved)
    assert all(e[1] <= 8 * 6 for e in extra if e[1] < x.numel()), extra  # coefficient rows
