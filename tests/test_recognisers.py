"""Graph rewrites of the flashkat backend (CPU): every naive form of the rational
is recognised, rewritten to the project's ops, and computes what eager does.

Inductor compiles cost seconds each on a 2-core machine, so the sites share
compiles: one function holds one site of every form (different layouts,
orders and grad requirements), compiled once for training and once for
inference; the assertions are per site on the shared results.  Compile caches
are off (a cache hit skips the passes, and the counters with them).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import pytest
import torch
from torch._dynamo.utils import counters
from torch._inductor.utils import run_and_get_code

import flashkat_inductor.backend  # noqa: F401 - registers the backend where no entry point is installed
from flashkat_inductor import recognisers
from flashkat_inductor.recognisers import collect_reports, registration_stats
from flashkat_inductor.recognisers.kat_reference import kat_reference

from flashkat_inductor.recognisers.pointwise import _addcmul_decomposed

from helpers import coefficients, no_compile_caches, rel_err

TOL = 1e-5  # compiled vs eager, relative (norm) error, float32


# ----------------------------------------------------------------------------
# The code shapes (kat-semantics.md sections 3 and 4), written as users write them
# ----------------------------------------------------------------------------
def grouped(x, G):
    return x.view(*x.shape[:-1], G, x.shape[-1] // G)


def columns(t):
    return [t[:, i:i + 1] for i in range(t.shape[1])]


def kat_ref(x, a, b):
    """KAT's pure-PyTorch function; a shared numerator is .repeat-ed first, as KAT_Group does."""
    G = max(a.shape[0], b.shape[0])
    return kat_reference(x, a.repeat(G // a.shape[0], 1), b)


def horner_safe(x, a, b):
    """Safe PAU, Horner, (G, 1) slices, |b_j| per column."""
    G = max(a.shape[0], b.shape[0])
    xg = grouped(x, G)
    m, n = a.shape[1], b.shape[1]
    p = a[:, m - 1:m]
    for i in range(m - 2, -1, -1):
        p = p * xg + a[:, i:i + 1]
    ax = xg.abs()
    q = b[:, n - 1:n].abs()
    for j in range(n - 2, -1, -1):
        q = q * ax + b[:, j:j + 1].abs()
    q = 1 + q * ax
    return (p / q).view(x.shape)


def horner_signed_nested(x, a, b):
    """Signed form by hand: nested Horner, operands in the other order, |b| taken once."""
    G = max(a.shape[0], b.shape[0])
    xg = grouped(x, G)
    c = b.abs()
    a0, a1, a2, a3, a4, a5 = (a[:, i, None] for i in range(6))
    c0, c1, c2, c3 = (c[:, j, None] for j in range(4))
    p = a0 + xg * (a1 + xg * (a2 + xg * (a3 + xg * (a4 + xg * a5))))
    q = 1 + xg * (c0 + xg * (c1 + xg * (c2 + xg * c3)))
    return (p / q).reshape(x.shape)


def horner_abs_sum(x, a, b):
    """PAU variant B: Q = 1 + |sum b_j x^(j+1)|."""
    G = max(a.shape[0], b.shape[0])
    xg = grouped(x, G)
    A, B = columns(a), columns(b)
    p = A[-1]
    for c in reversed(A[:-1]):
        p = p * xg + c
    s = B[-1]
    for c in reversed(B[:-1]):
        s = s * xg + c
    return (p / (1 + (s * xg).abs())).view(x.shape)


def powers_sum_safe(x, a, b):
    """Explicit powers with torch.pow in a sum(); |x| computed before the numerator."""
    G = max(a.shape[0], b.shape[0])
    xg = grouped(x, G)
    t = xg.abs()
    p = sum(a[:, i:i + 1] * torch.pow(xg, i) for i in range(a.shape[1]))
    q = 1 + sum(b[:, j:j + 1].abs() * t ** (j + 1) for j in range(b.shape[1]))
    return (p / q).view(x.shape)


def powers_explicit_signed(x, a, b):
    """Explicit powers written out term by term (x ** i), signed form."""
    G = max(a.shape[0], b.shape[0])
    xg = grouped(x, G)
    A = columns(a)
    C = [c.abs() for c in columns(b)]
    p = A[0] + A[1] * xg + A[2] * xg ** 2 + A[3] * xg ** 3 + A[4] * xg ** 4 + A[5] * xg ** 5
    q = 1 + C[0] * xg + C[1] * xg ** 2 + C[2] * xg ** 3 + C[3] * xg ** 4
    return (p / q).view(x.shape)


def powers_sum_abs_sum(x, a, b):
    G = max(a.shape[0], b.shape[0])
    xg = grouped(x, G)
    p = sum(a[:, i:i + 1] * xg ** i for i in range(a.shape[1]))
    s = sum(b[:, j:j + 1] * xg ** (j + 1) for j in range(b.shape[1]))
    return (p / (1 + s.abs())).view(x.shape)


def horner_safe_reciprocal(x, a, b):
    """Safe PAU whose quotient is written as a product with the reciprocal, reciprocal first."""
    G = max(a.shape[0], b.shape[0])
    xg = grouped(x, G)
    A, C = columns(a), [c.abs() for c in columns(b)]
    p = A[-1]
    for c in reversed(A[:-1]):
        p = p * xg + c
    t = xg.abs()
    s = C[-1]
    for c in reversed(C[:-1]):
        s = s * t + c
    return (torch.reciprocal(1 + s * t) * p).view(x.shape)


def horner_addcmul_signed(x, a, b):
    """Signed form, Horner steps with torch.addcmul (factors in either order)."""
    G = max(a.shape[0], b.shape[0])
    xg = grouped(x, G)
    A, C = columns(a), [c.abs() for c in columns(b)]
    p = A[-1]
    for c in reversed(A[:-1]):
        p = torch.addcmul(c, xg, p)
    s = C[-1]
    for c in reversed(C[:-1]):
        s = torch.addcmul(c, s, xg)
    return (p / (1 + s * xg)).view(x.shape)


def powers_signed_one_over(x, a, b):
    """Signed form, explicit powers, quotient written p * (1 / q)."""
    G = max(a.shape[0], b.shape[0])
    xg = grouped(x, G)
    p = sum(a[:, i:i + 1] * xg ** i for i in range(a.shape[1]))
    q = 1 + sum(b[:, j:j + 1].abs() * xg ** (j + 1) for j in range(b.shape[1]))
    return (p * (1 / q)).view(x.shape)


def nchw_horner_safe(x, a, b):
    """(B, C, H, W), groups over dimension 1: (G, 1, 1, 1) coefficients against (B, G, D, H, W)."""
    B, C, H, W = x.shape
    G = max(a.shape[0], b.shape[0])
    xg = x.view(B, G, C // G, H, W)
    av = a.view(a.shape[0], a.shape[1], 1, 1, 1)
    bv = b.abs().view(b.shape[0], b.shape[1], 1, 1, 1)
    m, n = a.shape[1], b.shape[1]
    p = av[:, m - 1]
    for i in range(m - 2, -1, -1):
        p = p * xg + av[:, i]
    ax = xg.abs()
    q = bv[:, n - 1]
    for j in range(n - 2, -1, -1):
        q = q * ax + bv[:, j]
    return (p / (1 + q * ax)).view(B, C, H, W)


@dataclasses.dataclass
class Site:
    name: str
    fn: Callable
    shape: tuple
    m: int
    n: int
    gn: int
    gd: int
    form: str
    pattern: str  # expected counter
    x_grad: bool = True
    coef_grad: bool = True
    kind: str = "random"


SITES = [
    Site("kat_reference", kat_ref, (2, 5, 32), 6, 4, 1, 8, "signed", "kat_reference_signed"),
    Site("kat_reference_53", kat_ref, (3, 4, 16), 5, 3, 4, 4, "signed", "kat_reference_signed", x_grad=False),
    Site("horner_safe_3d", horner_safe, (2, 5, 32), 6, 4, 1, 8, "safe", "horner_safe", kind="gelu"),
    Site("horner_signed_2d", horner_signed_nested, (6, 24), 6, 4, 4, 4, "signed", "horner_signed",
         x_grad=False),
    Site("horner_abs_sum", horner_abs_sum, (2, 5, 16), 5, 3, 4, 4, "abs_sum", "horner_abs_sum",
         coef_grad=False),
    Site("powers_sum_safe_2d", powers_sum_safe, (7, 16), 4, 2, 4, 1, "safe", "powers_safe"),
    Site("powers_explicit_signed", powers_explicit_signed, (2, 3, 32), 6, 4, 8, 8, "signed", "powers_signed",
         coef_grad=False),
    Site("powers_sum_abs_sum", powers_sum_abs_sum, (2, 3, 32), 6, 4, 8, 8, "abs_sum", "powers_abs_sum",
         x_grad=False),
    Site("nchw_horner_safe", nchw_horner_safe, (2, 8, 3, 5), 6, 4, 4, 4, "safe", "horner_safe"),
    Site("horner_safe_reciprocal", horner_safe_reciprocal, (2, 3, 16), 6, 4, 4, 4, "safe", "horner_safe"),
    Site("powers_signed_one_over", powers_signed_one_over, (3, 16), 6, 4, 1, 4, "signed", "powers_signed"),
    Site("horner_addcmul_signed", horner_addcmul_signed, (2, 3, 16), 6, 4, 4, 4, "signed", "horner_signed"),
    Site("kat_reference_one_channel_per_group", kat_ref, (2, 3, 8), 6, 4, 1, 8, "signed", "kat_reference_signed"),
]


def make_inputs(sites, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    flat = []
    for s in sites:
        a, b = coefficients(s.m, s.n, s.gn, s.gd, kind=s.kind, form=s.form)
        x = torch.randn(s.shape, generator=g)
        flat += [x.requires_grad_(s.x_grad), a.requires_grad_(s.coef_grad), b.requires_grad_(s.coef_grad)]
    return flat


def model_of(sites):
    def model(*flat):
        return [s.fn(*flat[3 * i: 3 * i + 3]) for i, s in enumerate(sites)]

    return model


def weighted_loss(outs):
    # different weights per site, so no gradient is accidentally symmetric
    return sum((o * (1 + 0.25 * i)).sum() for i, o in enumerate(outs))


# ----------------------------------------------------------------------------
# Shared compiles
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _no_compile_caches():
    """A cache hit skips the graph passes (and their counters): compile for real here."""
    with no_compile_caches():
        yield


def compile_and_run(fn, flat, backend="flashkat", train=True):
    """Compile fn, run it (and its backward when train); return what the tests look at."""
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(fn, backend=backend)
    t0 = time.perf_counter()
    with collect_reports() as reports:
        if train:
            def run():
                outs = compiled(*flat)
                weighted_loss(outs).backward()
                return outs
            outs, codes = run_and_get_code(run)
        else:
            with torch.no_grad():
                outs, codes = run_and_get_code(compiled, *flat)
    return {
        "outs": [o.detach() for o in outs],
        "grads": [t.grad for t in flat],
        "codes": codes,
        "counters": dict(counters["flashkat"]),
        "reports": reports,
        "seconds": time.perf_counter() - t0,
    }


def eager_run(fn, flat, train=True):
    flat = [t.detach().clone().requires_grad_(t.requires_grad) for t in flat]
    if not train:
        with torch.no_grad():
            return {"outs": fn(*flat), "grads": [None] * len(flat)}
    outs = fn(*flat)
    weighted_loss(outs).backward()
    return {"outs": [o.detach() for o in outs], "grads": [t.grad for t in flat]}


@pytest.fixture(scope="module")
def training():
    flat = make_inputs(SITES)
    eager = eager_run(model_of(SITES), flat)
    return compile_and_run(model_of(SITES), flat), eager


@pytest.fixture(scope="module")
def inference():
    flat = [t.detach() for t in make_inputs(SITES, seed=1)]
    eager = eager_run(model_of(SITES), flat, train=False)
    return compile_and_run(model_of(SITES), flat, train=False), eager


def expected_counts(sites):
    want: dict = {}
    for s in sites:
        want[s.pattern] = want.get(s.pattern, 0) + 1
    want["rewrites"] = len(sites)
    # KAT's function repeats a (1, m) numerator to the groups: the ops take the row itself
    # (recognisers/shared_rows.py)
    shared = sum(1 for s in sites if s.fn is kat_ref and s.gn == 1)
    if shared:
        want["shared_rows_unrepeated"] = shared
    return want


# ----------------------------------------------------------------------------
# Training graphs: joint forward + backward patterns
# ----------------------------------------------------------------------------
def test_training_counters_fire_exactly(training):
    res, _ = training
    assert res["counters"] == expected_counts(SITES), res["counters"]
    labels = [w.graph for r in res["reports"] for w in r.rewrites]
    assert labels == ["training"] * len(SITES), labels
    assert not [m for r in res["reports"] for m in r.near_misses], "unexpected near misses"


def test_training_generated_code(training):
    res, _ = training
    fwd_code, bwd_code = res["codes"][0], "\n".join(res["codes"][1:])
    assert "rational_fwd" in fwd_code, "forward code holds no flashkat kernel or op call"
    assert "rational_bwd" in bwd_code, "backward code holds no flashkat kernel or op call"
    for code in res["codes"]:
        assert "bmm" not in code  # KAT's bmm over stacked powers is gone
        assert "pow" not in code.lower()  # and so are the explicit powers


@pytest.mark.parametrize("i", range(len(SITES)), ids=[s.name for s in SITES])
def test_training_matches_eager(training, i):
    res, eager = training
    site = SITES[i]
    assert rel_err(res["outs"][i], eager["outs"][i]) <= TOL
    for k, what in enumerate(("x", "numerator", "denominator")):
        g, ge = res["grads"][3 * i + k], eager["grads"][3 * i + k]
        needs = site.x_grad if k == 0 else site.coef_grad
        assert (g is None) == (not needs) == (ge is None), what
        if needs:
            assert rel_err(g, ge) <= TOL, (what, rel_err(g, ge))


# ----------------------------------------------------------------------------
# Inference graphs: forward-only patterns
# ----------------------------------------------------------------------------
def test_inference_counters_and_code(inference):
    res, _ = inference
    assert res["counters"] == expected_counts(SITES), res["counters"]
    labels = {w.graph for r in res["reports"] for w in r.rewrites}
    assert labels == {"inference"}, labels
    (code,) = res["codes"]
    assert "rational_fwd" in code and "rational_bwd" not in code
    assert "bmm" not in code


@pytest.mark.parametrize("i", range(len(SITES)), ids=[s.name for s in SITES])
def test_inference_matches_eager(inference, i):
    res, eager = inference
    assert rel_err(res["outs"][i], eager["outs"][i]) <= TOL


# ----------------------------------------------------------------------------
# Near misses: not rewritten, and still compiled correctly
# ----------------------------------------------------------------------------
def plain_denominator(x, a, b):
    """Q = 1 + sum b_j x^(j+1) with no |.| anywhere: none of the three forms."""
    G = max(a.shape[0], b.shape[0])
    xg = grouped(x, G)
    A, B = columns(a), columns(b)
    p = A[-1]
    for c in reversed(A[:-1]):
        p = p * xg + c
    s = B[-1]
    for c in reversed(B[:-1]):
        s = s * xg + c
    return (p / (1 + s * xg)).view(x.shape)


def power_reused(x, a, b):
    """Explicit powers where x^2 also feeds something else."""
    G = max(a.shape[0], b.shape[0])
    xg = grouped(x, G)
    x2 = xg ** 2
    A = columns(a)
    C = [c.abs() for c in columns(b)]
    p = A[0] + A[1] * xg + A[2] * x2 + A[3] * xg ** 3 + A[4] * xg ** 4 + A[5] * xg ** 5
    q = 1 + C[0] * xg + C[1] * x2 + C[2] * xg ** 3 + C[3] * xg ** 4
    return (p / q).view(x.shape) + 0.1 * x2.view(x.shape)


def abs_coefficient_reused(x, a, b):
    """Safe Horner where |b_0| is used again outside the rational."""
    G = max(a.shape[0], b.shape[0])
    xg = grouped(x, G)
    A = columns(a)
    C = [c.abs() for c in columns(b)]
    p = A[-1]
    for c in reversed(A[:-1]):
        p = p * xg + c
    ax = xg.abs()
    q = C[-1]
    for c in reversed(C[:-1]):
        q = q * ax + c
    y = p / (1 + q * ax)
    return (y + C[0]).view(x.shape)


def numerator_reused(x, a, b):
    """Safe Horner whose numerator P is also part of the output."""
    G = max(a.shape[0], b.shape[0])
    xg = grouped(x, G)
    A = columns(a)
    p = A[-1]
    for c in reversed(A[:-1]):
        p = p * xg + c
    ax = xg.abs()
    C = [c.abs() for c in columns(b)]
    q = C[-1]
    for c in reversed(C[:-1]):
        q = q * ax + c
    return (p / (1 + q * ax) + 0.01 * p).view(x.shape)


def groups_do_not_divide(x, a, b):
    """10 channels and 4 coefficient groups: the code broadcasts every channel against every group
    (a (B, L, 4, 10) result), which is not a group-rational activation of x."""
    xg = x.unsqueeze(-2)
    A = columns(a)
    p = A[-1]
    for c in reversed(A[:-1]):
        p = p * xg + c
    ax = xg.abs()
    C = [c.abs() for c in columns(b)]
    q = C[-1]
    for c in reversed(C[:-1]):
        q = q * ax + c
    return (p / (1 + q * ax)).sum(-2)


NEAR_MISSES = [
    Site("plain_denominator", plain_denominator, (2, 3, 16), 6, 4, 4, 4, "signed", "-"),
    Site("power_reused", power_reused, (2, 3, 16), 6, 4, 4, 4, "signed", "-"),
    Site("abs_coefficient_reused", abs_coefficient_reused, (2, 3, 16), 6, 4, 4, 4, "safe", "-"),
    Site("numerator_reused", numerator_reused, (2, 3, 16), 6, 4, 4, 4, "safe", "-"),
    Site("groups_do_not_divide", groups_do_not_divide, (2, 3, 10), 6, 4, 4, 4, "safe", "-"),
]


@pytest.fixture(scope="module")
def near_misses():
    flat = make_inputs(NEAR_MISSES, seed=2)
    eager = eager_run(model_of(NEAR_MISSES), flat)
    return compile_and_run(model_of(NEAR_MISSES), flat), eager


def test_near_misses_are_left_alone(near_misses):
    res, _ = near_misses
    assert res["counters"].get("rewrites", 0) == 0, res["counters"]
    assert not any("rational" in c for c in res["codes"])
    misses = [m for r in res["reports"] if r.graph == "training" for m in r.near_misses]
    assert len(misses) == len(NEAR_MISSES), misses
    assert all(m.reason for m in misses)


@pytest.mark.parametrize("i", range(len(NEAR_MISSES)), ids=[s.name for s in NEAR_MISSES])
def test_near_misses_match_eager(near_misses, i):
    res, eager = near_misses
    assert rel_err(res["outs"][i], eager["outs"][i]) <= TOL
    for k in range(3):
        assert rel_err(res["grads"][3 * i + k], eager["grads"][3 * i + k]) <= TOL


# ----------------------------------------------------------------------------
# Isolation: backend="inductor" never sees the rewrites
# ----------------------------------------------------------------------------
def test_inductor_backend_is_unaffected(inference):
    # `inference` first: the flashkat backend has been used in this process
    flat = [t.detach() for t in make_inputs(SITES, seed=1)]
    res = compile_and_run(model_of(SITES), flat, backend="inductor", train=False)
    assert res["counters"] == {}
    assert not any("rational" in c for c in res["codes"])
    from torch._inductor import config as iconfig

    assert iconfig.joint_custom_pre_pass is None and iconfig.post_grad_custom_pre_pass is None
    eager = eager_run(model_of(SITES), flat, train=False)
    for o, e in zip(res["outs"], eager["outs"]):
        assert rel_err(o, e) <= TOL


# ----------------------------------------------------------------------------
# A KAT-like model: what gets traced, and how long it takes
# ----------------------------------------------------------------------------
class KatTorchAct(torch.nn.Module):
    """KAT_Group_Torch: (1, 6) numerator repeated to the groups, (G, 4) denominator, KAT's function."""

    def __init__(self, groups=8, mode="gelu"):
        super().__init__()
        from flashkat_inductor.semantics import init_coefficients

        num, den = init_coefficients(mode)
        self.groups = groups
        self.weight_numerator = torch.nn.Parameter(torch.tensor([num]))
        self.weight_denominator = torch.nn.Parameter(torch.tensor([den] * groups))

    def forward(self, x):
        return kat_reference(x, self.weight_numerator.repeat(self.groups, 1), self.weight_denominator)


class KanMlp(torch.nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.act1, self.fc1 = KatTorchAct(mode="identity"), torch.nn.Linear(dim, hidden)
        self.act2, self.fc2 = KatTorchAct(mode="gelu"), torch.nn.Linear(hidden, dim)

    def forward(self, x):
        return x + self.fc2(self.act2(self.fc1(self.act1(x))))


def test_kat_like_model_traces_only_what_it_needs(monkeypatch):
    """Four KAT activations in two blocks: the first sees an input that needs no grad, the
    others activations that do, so exactly two joint patterns are traced (and nothing else)."""
    monkeypatch.setattr(recognisers, "_PASSES", {})  # a fresh process, as far as patterns go
    model = torch.nn.Sequential(KanMlp(32, 64), KanMlp(32, 64))
    x = torch.randn(2, 9, 32)
    before = registration_stats()
    res = compile_and_run(lambda t: [model(t)], [x])
    after = registration_stats()
    traced = after["patterns"] - before["patterns"]
    seconds = after["seconds"] - before["seconds"]
    print(f"\nKAT-like model: {traced} patterns traced in {seconds:.2f} s; compile + run {res['seconds']:.1f} s")
    assert res["counters"] == {"kat_reference_signed": 4, "rewrites": 4, "shared_rows_unrepeated": 4}
    keys = [k for r in res["reports"] for k in r.keys]
    assert sorted(k.grads for k in keys) == [(False, True, True), (True, True, True)]
    assert traced == 2 and seconds < 10.0
    ref = model(x)
    model.zero_grad()
    ref.sum().backward()  # weighted_loss of [ref] is ref.sum()
    assert rel_err(res["outs"][0], ref.detach()) <= TOL


# ----------------------------------------------------------------------------
# Dynamic (symbolic) batch dimensions
# ----------------------------------------------------------------------------
def test_dynamic_batch(monkeypatch):
    """Sites whose batch dimension is dynamic are rewritten by default, the same compiled
    code serving two batch sizes, and left alone with FLASHKAT_DYNAMIC_REWRITES=0 (see
    base.dynamic_rewrites_enabled).  Training with a dynamic batch: tests/test_dynamic.py."""
    sites = [SITES[0], SITES[3]]  # KAT's reference (3-D) and a hand-written signed form (2-D)
    model = model_of(sites)

    def inputs(batch_scale, seed):
        flat = [t.detach() for t in make_inputs(sites, seed=seed)]
        flat = [torch.cat([t] * batch_scale) if k % 3 == 0 else t for k, t in enumerate(flat)]
        for k in range(0, len(flat), 3):
            torch._dynamo.mark_dynamic(flat[k], 0)
        return flat

    monkeypatch.setenv("FLASHKAT_DYNAMIC_REWRITES", "0")
    res = compile_and_run(model, inputs(1, 3), train=False)
    assert res["counters"].get("rewrites", 0) == 0
    reasons = [m.reason for r in res["reports"] for m in r.near_misses]
    assert reasons and all("dynamic" in why and "FLASHKAT_DYNAMIC_REWRITES=0" in why for why in reasons), reasons

    monkeypatch.delenv("FLASHKAT_DYNAMIC_REWRITES", raising=False)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend="flashkat")
    for scale in (1, 3):
        flat = inputs(scale, 4 + scale)
        with torch.no_grad():
            outs = compiled(*flat)
        eager = eager_run(model, flat, train=False)
        for o, e in zip(outs, eager["outs"]):
            assert rel_err(o, e) <= TOL
    assert counters["flashkat"]["rewrites"] == len(sites)  # one compile, both batch sizes


# ----------------------------------------------------------------------------
# Low-precision training: joint patterns are traced in x's dtype
# ----------------------------------------------------------------------------
LOWP_SITES = [SITES[0], SITES[2], SITES[7]]  # KAT's reference, Horner safe, powers abs_sum


def test_low_precision_training_is_rewritten():
    """bfloat16 and float16 training sites are rewritten (in these dtypes the joint graph's
    backward of abs upcasts its sign, so float32 patterns would not match) and are at least as
    accurate as eager PyTorch in the same dtype: error against float32 <= 2x eager's + 1e-3."""
    sites = [s for dt in (torch.bfloat16, torch.float16) for s in LOWP_SITES]
    dtypes = [dt for dt in (torch.bfloat16, torch.float16) for _ in LOWP_SITES]
    flat32 = make_inputs(sites, seed=5)
    flat = [t.detach().to(dtypes[k // 3]).requires_grad_(t.requires_grad) for k, t in enumerate(flat32)]
    res = compile_and_run(model_of(sites), flat)
    assert res["counters"].get("rewrites", 0) == len(sites), res["counters"]
    ref = eager_run(model_of(sites), flat32)
    low = eager_run(model_of(sites), flat)
    for i in range(len(sites)):
        assert res["outs"][i].dtype == dtypes[i]
        pairs = [(res["outs"][i], low["outs"][i], ref["outs"][i])]
        pairs += [(res["grads"][3 * i + k], low["grads"][3 * i + k], ref["grads"][3 * i + k]) for k in range(3)]
        for ours, eager_low, r in pairs:
            if r is None:
                continue
            assert rel_err(ours, r) <= 2 * rel_err(eager_low, r) + 1e-3, (sites[i].name, dtypes[i])


# ----------------------------------------------------------------------------
# Mixed dtypes: a bfloat16 activation with float32 coefficients (as under autocast)
# ----------------------------------------------------------------------------
def test_mixed_dtype_training_is_rewritten():
    """x in bfloat16 / float16 with float32 coefficient parameters: the code computes (and returns)
    float32 by type promotion, so does the rewrite.  Horner code promotes at its first product, so
    outputs and coefficient gradients equal eager's to float32 accuracy and dx (rounded to x's dtype
    by both) to one rounding of that dtype.  Explicit powers of x are rounded to x's dtype by the
    code before the coefficients multiply them; the rewrite computes them in float32, so there the
    bound is the low-precision one: error against float32 <= 2x eager's + 1e-3."""
    sites = [SITES[2], SITES[4], SITES[11], SITES[7]]  # Horner safe / abs_sum, addcmul Horner, powers abs_sum
    if _addcmul_decomposed():  # torch 2.11: the decomposed, type-promoting addcmul casts x first (left alone)
        sites.remove(SITES[11])
    k_sites = len(sites)
    sites = sites + sites
    xdt = [torch.bfloat16] * k_sites + [torch.float16] * k_sites
    flat32 = make_inputs(sites, seed=7)
    flat = [t.detach().to(xdt[k // 3]).requires_grad_(t.requires_grad) if k % 3 == 0 else t
            for k, t in enumerate(flat32)]
    res = compile_and_run(model_of(sites), flat)
    assert res["counters"].get("rewrites", 0) == len(sites), res["counters"]
    eager = eager_run(model_of(sites), flat)
    ref = eager_run(model_of(sites), [t.detach().float().requires_grad_(t.requires_grad) for t in flat])
    for i, site in enumerate(sites):
        assert res["outs"][i].dtype == eager["outs"][i].dtype == torch.float32
        exact = site.fn is not powers_sum_abs_sum
        pairs = [(res["outs"][i], eager["outs"][i], ref["outs"][i], TOL)]
        if eager["grads"][3 * i] is not None:
            assert res["grads"][3 * i].dtype == xdt[i]
            pairs.append((res["grads"][3 * i], eager["grads"][3 * i], ref["grads"][3 * i],
                          8e-3 if xdt[i] == torch.bfloat16 else 1e-3))
        pairs += [(res["grads"][3 * i + k], eager["grads"][3 * i + k], ref["grads"][3 * i + k], TOL)
                  for k in (1, 2) if eager["grads"][3 * i + k] is not None]
        for ours, theirs, r, tol in pairs:
            if exact:
                assert rel_err(ours, theirs) <= tol, (site.name, xdt[i])
            else:
                assert rel_err(ours, r) <= 2 * rel_err(theirs, r) + 1e-3, (site.name, xdt[i])


def test_kat_reference_under_autocast_is_rewritten():
    """KAT's pure-PyTorch function under CPU bfloat16 autocast (its bmm cast to bfloat16, from a
    float32 and from a bfloat16 x): rewritten; the output keeps the code's dtype (bfloat16), and
    outputs and gradients are at least as accurate as eager autocast: error against float32
    <= 2x eager's + 1e-3 (the rewrite computes in float32 where the code's bmm runs in bfloat16)."""
    sites = [SITES[0], SITES[1]]
    flat32 = make_inputs(sites, seed=11)
    flat = list(flat32)
    flat[3] = flat32[3].detach().to(torch.bfloat16).requires_grad_(flat32[3].requires_grad)  # second x: bf16
    plain = model_of(sites)

    def model(*args):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return plain(*args)

    res = compile_and_run(model, flat)
    assert res["counters"].get("kat_reference_signed", 0) == len(sites), res["counters"]
    low = eager_run(model, flat)
    ref = eager_run(plain, flat32)
    for i in range(len(sites)):
        assert res["outs"][i].dtype == low["outs"][i].dtype == torch.bfloat16
        pairs = [(res["outs"][i], low["outs"][i], ref["outs"][i])]
        pairs += [(res["grads"][3 * i + k], low["grads"][3 * i + k], ref["grads"][3 * i + k]) for k in range(3)]
        for ours, eager_low, r in pairs:
            if r is None:
                continue
            assert ours.dtype == eager_low.dtype
            assert rel_err(ours, r) <= 2 * rel_err(eager_low, r) + 1e-3, (sites[i].name, rel_err(ours, r),
                                                                          rel_err(eager_low, r))
