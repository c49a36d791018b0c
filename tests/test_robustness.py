"""Bad and unusual input, eager and compiled: a clear error, or the exact eager result.

Two kinds of case:

``ERROR_CASES``  invalid calls (wrong ranks, groups that do not divide the
    channels, mismatched group counts, integer / bool / complex dtypes, mixed
    devices, ...).  Eager (``flashkat_inductor.rational``) and compiled (a
    function calling it under ``torch.compile(backend="flashkat")``) raise the
    same exception type with a message that names the argument, what was seen
    and what was expected.  Called through ``torch.ops.flashkat.*`` directly
    under ``torch.compile``, Dynamo wraps the same message in its
    ``TorchRuntimeError``.

``VALUE_CASES``  valid but unusual input (grads on some inputs only, empty
    tensors, NaN / Inf in x and in the coefficients, |x| where x^5 overflows
    float16 / bfloat16, non-contiguous, channels-last and expanded inputs and
    gradients, a pole Q = 0 of the signed form).  A training step of every
    case runs eagerly and compiled (all cases in ONE compiled graph, to keep
    the test fast); y and the gradients must equal the float64 reference:
    the same NaN / +Inf / -Inf positions exactly, finite values to float32
    accuracy (float16 / bfloat16: the reference rounded to the dtype, 1 ulp).

    Documented deviations from the term-by-term reference, each asserted
    exactly (see the ``expect`` hooks):

    - x = +-Inf: y and dx are NaN as in the reference, but a group's
      ``dnumerator[:, 0]`` (the sum of dy / Q) takes the limit 0 for the
      infinite elements (Horner gives Q = +-Inf), where the reference's
      term-by-term Q is Inf - Inf = NaN (signed and abs_sum forms);
    - |x| so large that a_{m-1} x^(m-1) overflows float32 (|x| >~ 2e8 with
      KAT's gelu coefficients; only reachable in bfloat16 / float32): y is
      +-Inf (P overflows) or NaN (P and Q overflow) where the float64
      reference is finite: compute is float32.  Never a finite wrong value.
      (float16 inputs are exact over their whole range.)

``HAND_WRITTEN``  the same special values through hand-written rationals that
    the recognisers rewrite: the compiled result has the masks of eager
    PyTorch on the same code except where eager autograd of the explicit
    powers differs from the reference (listed per case), and of
    ``backend="inductor"``.

``bench/robustness_matrix.py`` prints the matrix (case, eager, compiled) from
the same case lists.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import pytest
import torch

import flashkat_inductor as fk
import flashkat_inductor.backend  # noqa: F401 - registers the backend where no entry point is installed
from flashkat_inductor.semantics import compute_dtype, init_coefficients, reference_backward, reference_forward

from helpers import no_compile_caches, rel_err
from test_recognisers import horner_safe as _horner_safe

F32_TOL = 2e-5  # finite values vs the float64 reference, relative (norm) error, float32

GELU_NUM, GELU_DEN = init_coefficients("gelu")


def gelu_coeffs(gn=4, gd=4, dtype=torch.float32):
    return torch.tensor([GELU_NUM] * gn, dtype=dtype), torch.tensor([GELU_DEN] * gd, dtype=dtype)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ============================================================================
# Invalid calls: a clear error, eager and compiled
# ============================================================================
@dataclasses.dataclass
class ErrorCase:
    name: str
    make: Callable[[], tuple]  # -> (x, numerator, denominator, kwargs)
    exc: type
    needles: tuple  # substrings the message must hold (argument, seen, expected)
    cuda: bool = False


def _x(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=_gen(0)).to(dtype)


def _ab(gn=8, m=6, gd=8, n=4, dtype=torch.float32):
    g = _gen(1)
    return torch.randn(gn, m, generator=g).to(dtype), torch.randn(gd, n, generator=g).to(dtype)


_A, _B = (lambda: _ab()[0]), (lambda: _ab()[1])
ERROR_CASES = [
    ErrorCase("x is 0-d", lambda: (torch.tensor(1.0), *_ab(1, 6, 1, 4), {}), ValueError,
              ("x must have at least 1 dimension", "0-d")),
    ErrorCase("numerator is 1-D", lambda: (_x(4, 16), torch.randn(6), _B(), {}), ValueError,
              ("numerator must be 2-D", "(6,)")),
    ErrorCase("numerator is 3-D", lambda: (_x(4, 16), torch.randn(8, 6, 1), _B(), {}), ValueError,
              ("numerator must be 2-D", "(8, 6, 1)")),
    ErrorCase("denominator is 1-D", lambda: (_x(4, 16), _A(), torch.randn(4), {}), ValueError,
              ("denominator must be 2-D", "(4,)")),
    ErrorCase("denominator is 3-D", lambda: (_x(4, 16), _A(), torch.randn(1, 8, 4), {}), ValueError,
              ("denominator must be 2-D", "(1, 8, 4)")),
    ErrorCase("channels not divisible by groups", lambda: (_x(4, 12), *_ab(), {}), ValueError,
              ("12 channels", "shape (4, 12)", "not divisible by the 8 groups")),
    ErrorCase("mismatched group counts", lambda: (_x(4, 16), *_ab(2, 6, 8, 4), {}), ValueError,
              ("numerator has 2 group rows and denominator 8", "1 (shared by all groups) or the group count 8")),
    ErrorCase("no coefficients (m = 0)", lambda: (_x(4, 16), torch.randn(8, 0), _B(), {}), ValueError,
              ("numerator needs at least one coefficient", "(8, 0)")),
    ErrorCase("no group rows", lambda: (_x(4, 16), _A(), torch.randn(0, 4), {}), ValueError,
              ("denominator needs at least one group row", "(0, 4)")),
    ErrorCase("x int64", lambda: (torch.arange(64).view(4, 16), *_ab(), {}), TypeError,
              ("x has dtype torch.int64", "expected one of float16, bfloat16, float32, float64")),
    ErrorCase("x bool", lambda: (torch.ones(4, 16, dtype=torch.bool), *_ab(), {}), TypeError,
              ("x has dtype torch.bool", "expected one of")),
    ErrorCase("x complex64", lambda: (_x(4, 16).to(torch.complex64), *_ab(), {}), TypeError,
              ("x has dtype torch.complex64", "expected one of")),
    ErrorCase("numerator int32", lambda: (_x(4, 16), _A().int(), _B(), {}), TypeError,
              ("numerator has dtype torch.int32", "expected one of")),
    ErrorCase("denominator complex128", lambda: (_x(4, 16), _A(), _B().to(torch.complex128), {}), TypeError,
              ("denominator has dtype torch.complex128", "expected one of")),
    ErrorCase("x is not a tensor", lambda: ([[1.0] * 16] * 4, *_ab(), {}), TypeError,
              ("x must be a torch.Tensor", "list")),
    ErrorCase("unknown form", lambda: (_x(4, 16), *_ab(), {"form": "unsafe"}), ValueError,
              ("form must be one of", "'unsafe'")),
    ErrorCase("unknown zero_sign", lambda: (_x(4, 16), *_ab(), {"zero_sign": "numpy"}), ValueError,
              ("zero_sign must be one of", "'numpy'")),
    ErrorCase("x on CUDA, coefficients on CPU", lambda: (_x(4, 16).cuda(), *_ab(), {}), ValueError,
              ("one device", "x on cuda:0", "numerator on cpu"), cuda=True),
]


def _rational_call(x, a, b, **kw):
    return fk.rational(x, a, b, **kw)


def error_outcome(case: ErrorCase, mode: str) -> BaseException | None:
    """Run the case eagerly or compiled; return the exception it raised (None: it ran)."""
    x, a, b, kw = case.make()
    if mode == "eager":
        fn = _rational_call
    else:
        torch._dynamo.reset()
        fn = torch.compile(_rational_call, backend="flashkat")
    try:
        fn(x, a, b, **kw)
    except Exception as e:  # noqa: BLE001 - the outcome under test
        return e
    return None


_CUDA = torch.cuda.is_available()


@pytest.mark.parametrize("mode", ["eager", "compiled"])
@pytest.mark.parametrize("case", ERROR_CASES, ids=[c.name for c in ERROR_CASES])
def test_invalid_call_raises_clear_error(case, mode):
    if case.cuda and not _CUDA:
        pytest.skip("needs CUDA")
    err = error_outcome(case, mode)
    assert err is not None, f"{case.name} ({mode}): no error"
    assert type(err) is case.exc, f"{case.name} ({mode}): {type(err).__name__}: {err}"
    for needle in case.needles:
        assert needle in str(err), f"{case.name} ({mode}): {needle!r} not in {str(err)!r}"


@pytest.mark.parametrize("op", ["fwd", "bwd"])
def test_invalid_op_call_compiled_names_the_argument(op):
    """The ops called directly under torch.compile: Dynamo's TorchRuntimeError carries our message."""
    x, a, b = _x(4, 12), *_ab()

    def fwd(x, a, b):
        return torch.ops.flashkat.rational_fwd(x, a, b, "safe", "torch")

    def bwd(x, a, b):
        return torch.ops.flashkat.rational_bwd(torch.ones(4, 8), x, a, b, "safe", "torch")

    fn, needle = (fwd, "not divisible by the 8 groups") if op == "fwd" else (bwd, "grad has shape (4, 8)")
    if op == "bwd":
        x = _x(4, 16)
    torch._dynamo.reset()
    with pytest.raises(Exception) as ei:
        torch.compile(fn, backend="flashkat")(x, a, b)
    assert needle in str(ei.value), str(ei.value)
    with pytest.raises((ValueError, TypeError)) as ee:
        fn(x, a, b)
    assert needle in str(ee.value)


def test_grad_of_wrong_dtype_is_rejected():
    x, (a, b) = _x(4, 16), _ab()
    with pytest.raises(TypeError, match="grad has dtype torch.int64, expected a floating dtype"):
        torch.ops.flashkat.rational_bwd(torch.ones(4, 16, dtype=torch.int64), x, a, b, "safe", "torch")


# ============================================================================
# Valid, unusual input: the exact eager result
# ============================================================================
@dataclasses.dataclass
class ValueCase:
    name: str
    make: Callable[[], dict]  # -> x, a, b (tensors, possibly views of leaves), dy, grads, form, zero_sign
    note: str = ""  # how the expectation differs from plain "equals the reference" (if it does)
    lowp: bool = False  # compare with the reference rounded to x's dtype (1 ulp)
    expect: Optional[Callable] = None  # (inputs dict, reference tuple) -> adjusted reference tuple


def _inputs(x, a, b, *, grads=(True, True, True), dy=None, form="safe", zero_sign="torch"):
    return {"x": x, "a": a, "b": b, "grads": grads, "form": form, "zero_sign": zero_sign,
            "dy": (torch.rand(x.shape, generator=_gen(7), dtype=torch.float32) + 0.5).to(x.dtype)
            if dy is None else dy}


def _nonfinite_x(form):
    def make():
        x = torch.randn(3, 5, 16, generator=_gen(2))
        x[0, 0, 0] = math.nan
        x[1, 1, 5] = math.inf
        x[2, 2, 9] = -math.inf
        x[2, 3, 14] = math.inf
        a, b = gelu_coeffs()
        return _inputs(x, a, b, form=form)
    return make


def _inf_x_limit(inp, ref):
    """dnumerator[:, 0] = sum dy / Q: an infinite x contributes its limit 0 (see the module docstring)."""
    x, dy = inp["x"], inp["dy"]
    inf = torch.isinf(x)
    x0, dy0 = torch.where(inf, torch.zeros_like(x), x), torch.where(inf, torch.zeros_like(dy), dy)
    _, da0, _ = reference_backward(dy0, x0, inp["a"], inp["b"], inp["form"], inp["zero_sign"])
    y, dx, da, db = ref
    da = da.clone()
    da[:, 0] = da0[:, 0]
    return y, dx, da, db


def _nonfinite_coeffs():
    x = torch.randn(3, 5, 16, generator=_gen(3))
    a, b = gelu_coeffs()
    a[1, 2] = math.nan
    b[2, 1] = math.inf
    b[3, 3] = -math.inf
    a[0, 0] = math.inf
    return _inputs(x, a, b)


def _large_fp16():
    v = torch.tensor([0.5, 3.0, 9.0, 10.0, 20.0, 70.0, 100.0, 1000.0, 3e4, 65504.0])
    x = torch.cat([v, -v, v[:4]]).view(1, 24).repeat(2, 1).to(torch.float16)  # 24 channels, 2 groups
    # y ~ (1/1e-3) x for large |x|: overflows float16 from |x| ~ 66 on (reference: inf too)
    a = torch.tensor([[0.1, 1.0, 0.0, 0.0, 0.0, 1.0], GELU_NUM], dtype=torch.float16)
    b = torch.tensor([[0.0, 0.0, 0.0, 1e-3], GELU_DEN], dtype=torch.float16)
    return _inputs(x, a, b, grads=(True, False, False), dy=torch.ones_like(x))


def _large_bf16(form):
    def make():
        v = torch.tensor([0.5, 10.0, 1e3, 1e5, 1e6, 1e7, 5e7, 1e8])  # x^5 overflows bf16 from ~5.3e7 on
        x = torch.cat([v, -v]).view(1, 16).to(torch.bfloat16)
        a, b = gelu_coeffs(1, 2, torch.bfloat16)
        return _inputs(x, a, b, grads=(True, False, False), dy=torch.ones_like(x), form=form)
    return make


def _beyond_float32():
    x = torch.tensor([[3e8, -3e8, 1e20, 3e38]], dtype=torch.bfloat16)
    a, b = gelu_coeffs(1, 1, torch.bfloat16)
    return _inputs(x, a, b, grads=(False, False, False))


def _float32_overflow(inp, ref):
    """Where float32 Horner overflows: P = a5 x^5 alone (|x| = 3e8: Q ~ |b3| x^4 is finite) gives
    +-Inf with the sign of the true value; P and Q both (|x| >= 1e20) give Inf / Inf = NaN."""
    y, *rest = ref
    x = inp["x"].double()
    return (torch.where(x.abs() < 1e10, torch.sign(y) * math.inf, torch.full_like(y, math.nan)), *rest)


def _pole(zero_sign):
    def make():
        # signed form, n = 1: Q = 1 + |b0| x = 0 at x = -1/|b0| (exactly representable)
        x = torch.tensor([[-2.0, -1.0, 0.0, 3.0, -4.0, -4.0, 1.0, 2.0]])  # group 0: pole at -2 (P = 2);
        a = torch.tensor([[1.0, 1.0, 0.5], [0.0, 0.0, 0.0]])               # group 1: pole at -4 and P = 0
        b = torch.tensor([[0.5], [0.25]])
        return _inputs(x, a, b, form="signed", zero_sign=zero_sign, dy=torch.ones_like(x))
    return make


def _grads(flags):
    def make():
        x = torch.randn(3, 5, 16, generator=_gen(4))
        a, b = gelu_coeffs(1, 4)
        return _inputs(x, a, b, grads=flags)
    return make


def _permuted():
    x = torch.randn(16, 3, 5, generator=_gen(5)).permute(1, 2, 0)  # (3, 5, 16), channels stride 15
    return _inputs(x, *gelu_coeffs(), form="abs_sum")


def _channels_last():
    x = torch.randn(2, 3, 5, 16, generator=_gen(6)).contiguous(memory_format=torch.channels_last)
    return _inputs(x, *gelu_coeffs(8, 8), form="signed", zero_sign="kat")


def _expanded_x():
    base = torch.randn(1, 5, 16, generator=_gen(8))
    return _inputs(base.expand(4, 5, 16), *gelu_coeffs(1, 4))  # stride 0 over the batch


def _odd_grad():
    x = torch.randn(6, 16, generator=_gen(9))
    dy = torch.randn(16, generator=_gen(10)).expand(6, 16)  # an expanded gradient (as from y.sum(0))
    return _inputs(x, *gelu_coeffs(), dy=dy)


def _strided_grad():
    x = torch.randn(6, 16, generator=_gen(11))
    dy = torch.randn(16, 6, generator=_gen(12)).t()  # a transposed gradient
    return _inputs(x, *gelu_coeffs(), dy=dy, form="signed")


def _odd_coeffs():
    x = torch.randn(6, 16, generator=_gen(13))
    a = torch.randn(6, 4, generator=_gen(14)).t()  # (4, 6), non-contiguous
    b = torch.randn(1, 4, generator=_gen(15)).expand(4, 4)  # expanded rows
    return _inputs(x, a * 0.5, b * 0.5)


def _empty(shape, gn=4, gd=4):
    def make():
        return _inputs(torch.randn(*shape), *gelu_coeffs(gn, gd))
    return make


def _mixed_dtypes():
    x = torch.randn(5, 16, generator=_gen(16))
    a, b = gelu_coeffs(4, 1, torch.float64)
    return _inputs(x, a, b)


def _float64():
    x = torch.randn(5, 16, generator=_gen(17), dtype=torch.float64)
    return _inputs(x, *gelu_coeffs(4, 4, torch.float64), form="abs_sum", zero_sign="kat")


VALUE_CASES = [
    ValueCase("x requires grad, coefficients do not", _grads((True, False, False))),
    ValueCase("coefficients require grad, x does not", _grads((False, True, True))),
    ValueCase("only the denominator requires grad", _grads((False, False, True))),
    ValueCase("nothing requires grad", _grads((False, False, False))),
    ValueCase("empty: 0 rows", _empty((0, 16))),
    ValueCase("empty: 0 rows, 3-D", _empty((2, 0, 16), 1, 4)),
    ValueCase("empty: 0 channels", _empty((3, 0))),
    ValueCase("NaN/Inf in x, safe", _nonfinite_x("safe")),  # (|x| = Inf: the reference's Q is Inf too)
    ValueCase("NaN/Inf in x, signed", _nonfinite_x("signed"), "dnum[:, 0]: limit 0 at x = +-Inf (reference NaN)",
              expect=_inf_x_limit),
    ValueCase("NaN/Inf in x, abs_sum", _nonfinite_x("abs_sum"), "dnum[:, 0]: limit 0 at x = +-Inf (reference NaN)",
              expect=_inf_x_limit),
    ValueCase("NaN/Inf in the coefficients", _nonfinite_coeffs),
    ValueCase("float16 |x| up to 65504 (x^5 overflows float16)", _large_fp16, lowp=True),
    ValueCase("bfloat16 |x| up to 1e8 (x^5 overflows bfloat16), safe", _large_bf16("safe"), lowp=True),
    ValueCase("bfloat16 |x| up to 1e8 (x^5 overflows bfloat16), signed", _large_bf16("signed"), lowp=True),
    ValueCase("bfloat16 |x| >= 3e8 (a5 x^5 overflows float32)", _beyond_float32,
              "y = +-Inf / NaN (float32 compute overflows; reference finite): known limit", lowp=True,
              expect=_float32_overflow),
    ValueCase("non-contiguous (permuted) x", _permuted),
    ValueCase("channels-last 4-D x", _channels_last),
    ValueCase("expanded x (stride 0)", _expanded_x),
    ValueCase("expanded gradient", _odd_grad),
    ValueCase("transposed gradient", _strided_grad),
    ValueCase("non-contiguous and expanded coefficients", _odd_coeffs),
    ValueCase("x float32, coefficients float64", _mixed_dtypes),
    ValueCase("float64", _float64),
    ValueCase("Q = 0 in the signed form (pole)", _pole("torch")),
    ValueCase("Q = 0 in the signed form, zero_sign=kat", _pole("kat")),
]


def _leaves(inp):
    """Fresh copies of the case's tensors (views stay views of fresh leaves), grads as the case says."""
    out = {}
    for key, rg in zip("xab", inp["grads"]):
        t = inp[key]
        if t.dim() and 0 in t.stride() and t.numel() > 1:  # expanded: keep the stride-0 view of a leaf
            base = t[tuple(slice(0, 1) if s == 0 else slice(None) for s in t.stride())].clone()
            leaf = base.requires_grad_(rg) if t.is_floating_point() else base
            out[key] = leaf.expand(t.shape)
        else:
            out[key] = t.clone().requires_grad_(rg)  # clone keeps dense strides (permuted, channels-last)
    return out


def run_cases(cases, compiled: bool):
    """One training step of every case, all in one function (compiled once when ``compiled``).

    Returns, per case, (y, dx, da, db) with None for inputs that do not require grad."""
    made = [c.make() for c in cases]
    specs = [(m["form"], m["zero_sign"]) for m in made]

    def many(*flat):
        return [fk.rational(flat[3 * i], flat[3 * i + 1], flat[3 * i + 2], form=f, zero_sign=z)
                for i, (f, z) in enumerate(specs)]

    leaves = [_leaves(m) for m in made]
    flat = [lv[k] for lv in leaves for k in "xab"]
    if compiled:
        torch._dynamo.reset()
        fn = torch.compile(many, backend="flashkat")
    else:
        fn = many
    outs = fn(*flat)
    wrt, ys, dys = [], [], []
    for i, (m, lv) in enumerate(zip(made, leaves)):
        for k, rg in zip("xab", m["grads"]):
            if rg:
                wrt.append(lv[k])
        if any(m["grads"]):
            ys.append(outs[i])
            dys.append(m["dy"])
    grads = iter(torch.autograd.grad(ys, wrt, dys) if wrt else [])
    results = []
    for i, m in enumerate(made):
        g = [next(grads) if rg else None for rg in m["grads"]]
        results.append((outs[i].detach(), *g))
    return made, results


def reference_of(case: ValueCase, inp: dict):
    x, a, b, dy = inp["x"], inp["a"], inp["b"], inp["dy"]
    ref = (reference_forward(x, a, b, inp["form"]),
           *reference_backward(dy, x, a, b, inp["form"], inp["zero_sign"]))
    return case.expect(inp, ref) if case.expect else ref


def compare(got: torch.Tensor, ref: torch.Tensor, lowp: bool, what: str, compute=torch.float32) -> str:
    """'' when got equals ref as the matrix requires, else what differs."""
    if got.shape != ref.shape:
        return f"{what}: shape {tuple(got.shape)} vs {tuple(ref.shape)}"
    if lowp and got.dtype in (torch.float16, torch.bfloat16):
        r = ref.to(got.dtype)
        try:
            torch.testing.assert_close(got, r, rtol=2 * torch.finfo(got.dtype).eps, atol=0, equal_nan=True)
        except AssertionError as e:
            return f"{what}: {str(e).splitlines()[0]} ({str(e).splitlines()[2] if len(str(e).splitlines()) > 2 else ''})"
        return ""
    g, r = got.double(), ref.double()
    for name, fn in (("NaN", torch.isnan), ("+Inf", torch.isposinf), ("-Inf", torch.isneginf)):
        if not torch.equal(fn(g), fn(r)):
            return f"{what}: {name} at {int((fn(g) != fn(r)).sum())} positions differ"
    fin = torch.isfinite(r)
    if fin.any():
        err = rel_err(g[fin], r[fin])
        tol = 1e-12 if compute == torch.float64 else F32_TOL
        if err > tol:
            return f"{what}: finite values off by {err:.2e} (> {tol:.0e})"
    return ""


def value_outcome(case, inp, res) -> list:
    """The differences of one case's results from its expectation (empty: as required)."""
    ref = reference_of(case, inp)
    problems = []
    for what, got, r, rg in zip(("y", "dx", "dnum", "dden"), res, ref, (True, *inp["grads"])):
        if not rg:
            if got is not None:
                problems.append(f"{what}: a gradient for an input that does not require grad")
            continue
        if got is None:
            problems.append(f"{what}: missing")
            continue
        want_dtype = inp["x"].dtype if what in ("y", "dx") else inp["a" if what == "dnum" else "b"].dtype
        if got.dtype != want_dtype:
            problems.append(f"{what}: dtype {got.dtype}, expected {want_dtype}")
        msg = compare(got, r, case.lowp, what, compute_dtype(inp["x"].dtype))
        if msg:
            problems.append(msg)
    return problems


@pytest.fixture(scope="module")
def value_results():
    eager = run_cases(VALUE_CASES, compiled=False)
    with no_compile_caches():
        compiled = run_cases(VALUE_CASES, compiled=True)
    return eager, compiled


@pytest.mark.parametrize("mode", ["eager", "compiled"])
@pytest.mark.parametrize("i", range(len(VALUE_CASES)), ids=[c.name for c in VALUE_CASES])
def test_unusual_input_gives_the_exact_result(value_results, i, mode):
    made, results = value_results[0 if mode == "eager" else 1]
    case = VALUE_CASES[i]
    problems = value_outcome(case, made[i], results[i])
    assert not problems, f"{case.name} ({mode}): {problems}"


@pytest.mark.parametrize("i", range(len(VALUE_CASES)), ids=[c.name for c in VALUE_CASES])
def test_compiled_has_eager_nonfinite_positions(value_results, i):
    (_, eager), (_, compiled) = value_results
    for e, c in zip(eager[i], compiled[i]):
        if e is None:
            assert c is None
            continue
        for fn in (torch.isnan, torch.isposinf, torch.isneginf):
            assert torch.equal(fn(e), fn(c)), VALUE_CASES[i].name


def test_value_cases_are_what_they_claim():
    """The special values really occur (a pole gives Inf and NaN in y; float16 overflows to Inf)."""
    inp = _pole("torch")()
    y = reference_forward(inp["x"], inp["a"], inp["b"], "signed")
    assert torch.isinf(y).any() and torch.isnan(y).any()
    inp = _large_fp16()
    y = reference_forward(inp["x"], inp["a"], inp["b"], "safe").to(torch.float16)
    assert torch.isinf(y).any() and torch.isfinite(y).any()
    assert torch.isinf(inp["x"].float() ** 5).any() or torch.isinf((inp["x"] ** 5)).any()
    inp = _large_bf16("safe")()
    assert torch.isinf(inp["x"] ** 5).any()  # x^5 overflows bfloat16 (and the ops still match)
    inp = _beyond_float32()
    assert torch.isfinite(reference_forward(inp["x"], inp["a"], inp["b"], "safe")).all()


# ============================================================================
# The same special values through hand-written rationals the recognisers rewrite
# ============================================================================
def _powers_signed(x, a, b):
    G = max(a.shape[0], b.shape[0])
    xg = x.view(*x.shape[:-1], G, x.shape[-1] // G)
    A = [a[:, i:i + 1] for i in range(a.shape[1])]
    C = [b[:, j:j + 1].abs() for j in range(b.shape[1])]
    p = A[0] + A[1] * xg + A[2] * xg ** 2 + A[3] * xg ** 3 + A[4] * xg ** 4 + A[5] * xg ** 5
    q = 1 + C[0] * xg + C[1] * xg ** 2 + C[2] * xg ** 3 + C[3] * xg ** 4
    return (p / q).view(x.shape)


@dataclasses.dataclass
class HandCase:
    name: str
    fn: Callable
    make: Callable[[], tuple]  # -> x, a, b
    rewritten: bool  # the recogniser must fire
    differs_from_eager: tuple = ()  # outputs whose NaN/Inf positions differ from eager autograd (why: note)
    note: str = ""
    form: str = "safe"  # of the op the site becomes


def _hand_nonfinite():
    x = torch.randn(3, 5, 16, generator=_gen(20))
    x[0, 0, 0], x[1, 1, 5], x[2, 2, 9] = math.nan, math.inf, -math.inf
    return (x, *gelu_coeffs(4, 4))


def _hand_pole():
    x = torch.tensor([[-2.0, -1.0, 0.0, 3.0, -4.0, -4.0, 1.0, 2.0] * 2])
    a = torch.tensor([[1.0, 1.0, 0.5, 0.0, 0.0, 0.0], [0.0] * 6])
    b = torch.tensor([[0.5, 0.0, 0.0, 0.0], [0.25, 0.0, 0.0, 0.0]])
    return x, a, b


def _hand_fp16_large():
    v = torch.tensor([0.5, 3.0, 9.0, 10.0, 20.0, 100.0, 1000.0, 6e4])
    x = torch.cat([v, -v]).view(1, 16).repeat(2, 1).to(torch.float16)
    a, b = gelu_coeffs(4, 4, torch.float16)
    return x, a, b


def _hand_int_x():
    return (torch.arange(-24, 24).view(3, 16) % 5, *gelu_coeffs(4, 4))


HAND_WRITTEN = [
    HandCase("Horner safe, NaN/Inf in x", _horner_safe, _hand_nonfinite, True),
    HandCase("explicit powers signed, NaN/Inf in x", _powers_signed,
             lambda: (_hand_nonfinite()[0], gelu_coeffs()[0], gelu_coeffs()[1] * 0.02), True,
             ("dnum",), "eager's term-by-term Q is Inf - Inf = NaN at x = -Inf; the op's Horner gives the limit",
             "signed"),
    HandCase("explicit powers signed, Q = 0 (pole)", _powers_signed, _hand_pole, True, ("dx",),
             "at the pole eager autograd of the powers gives Inf - Inf = NaN or -Inf in dx; the op -Inf / NaN "
             "as the float64 reference (y identical)", "signed"),
    HandCase("Horner safe, float16 |x| up to 6e4", _horner_safe, _hand_fp16_large, True, ("y", "dx", "dnum", "dden"),
             "eager PyTorch evaluates in float16 and overflows (x^5 > 65504: Inf / Inf = NaN); the rewritten site "
             "computes in float32 as the op does (the reference rounded to float16), as backend='inductor' does"),
    HandCase("Horner safe, int64 x (promoted by the code)", _horner_safe, _hand_int_x, False),
]


def run_hand(cases, backend: Optional[str]):
    from torch._dynamo.utils import counters

    made = [c.make() for c in cases]

    def many(*flat):
        return [c.fn(*flat[3 * i:3 * i + 3]) for i, c in enumerate(cases)]

    leaves = [[t.clone().requires_grad_(t.is_floating_point()) for t in m] for m in made]
    flat = [t for lv in leaves for t in lv]
    counters.clear()
    if backend:
        torch._dynamo.reset()
        fn = torch.compile(many, backend=backend)
    else:
        fn = many
    outs = fn(*flat)
    wrt = [t for t in flat if t.requires_grad]
    grads = iter(torch.autograd.grad(outs, wrt, [torch.ones_like(o) for o in outs]))
    res = []
    for i, lv in enumerate(leaves):
        res.append((outs[i].detach(), *[next(grads) if t.requires_grad else None for t in lv]))
    return res, dict(counters["flashkat"])


@pytest.fixture(scope="module")
def hand_results():
    with no_compile_caches():
        flash, count = run_hand(HAND_WRITTEN, "flashkat")
        ind, _ = run_hand(HAND_WRITTEN, "inductor")
    return run_hand(HAND_WRITTEN, None)[0], flash, ind, count


def test_hand_written_sites_are_rewritten(hand_results):
    *_, count = hand_results
    assert count.get("rewrites", 0) == sum(c.rewritten for c in HAND_WRITTEN), count


def _masks_differ(u, v):
    return [name for name, fn in (("NaN", torch.isnan), ("+Inf", torch.isposinf), ("-Inf", torch.isneginf))
            if not torch.equal(fn(u), fn(v))]


def _op_eager(case: "HandCase"):
    """The op the site became, run eagerly: what the rewritten site must compute."""
    x, a, b = case.make()
    xr, ar, br = (t.clone().requires_grad_() for t in (x, a, b))
    y = fk.rational(xr, ar, br, form=case.form, zero_sign="torch")
    return (y.detach(), *torch.autograd.grad(y, [xr, ar, br], torch.ones_like(y)))


@pytest.mark.parametrize("i", range(len(HAND_WRITTEN)), ids=[c.name for c in HAND_WRITTEN])
def test_hand_written_special_values(hand_results, i):
    """Compiled = eager and = backend="inductor" (masks exactly, finite values to float32), except the
    outputs the case lists, where eager autograd of explicit powers hits Inf - Inf: there the
    rewritten site computes exactly what the op computes eagerly (the float64 reference's masks)."""
    eager, flash, ind, _ = hand_results
    case = HAND_WRITTEN[i]
    op = _op_eager(case) if case.differs_from_eager else None
    for k, (what, e, f, d) in enumerate(zip(("y", "dx", "dnum", "dden"), eager[i], flash[i], ind[i])):
        if e is None:
            assert f is None
            continue
        want = [("eager", e), ("inductor", d)]
        if what in case.differs_from_eager:
            assert _masks_differ(e, op[k]), f"{case.name}: {what} no longer differs from eager: update the case"
            want = [("the op, eager", op[k])]
        tol = F32_TOL if f.dtype in (torch.float32, torch.float64) else 2 * torch.finfo(f.dtype).eps
        for name, w in want:
            assert not _masks_differ(f, w), (case.name, what, name, _masks_differ(f, w))
            fin = torch.isfinite(w)
            if fin.any():
                assert rel_err(f[fin], w[fin]) <= tol, (case.name, what, name, rel_err(f[fin], w[fin]))
