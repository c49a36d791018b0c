"""Dynamic (symbolic) shapes under the flashkat backend.

- Every site kind of tests/test_recognisers.py (KAT's reference, Horner and
  explicit powers in the three forms, 2-D / 3-D / NCHW layouts) in ONE
  training graph with a symbolic batch (and sequence, for 3-D x) marked by
  ``torch._dynamo.mark_dynamic``: rewritten, one compile for every size, the
  results equal eager, and the inputs bit-unchanged after each step (the
  regression test of the donated-buffer bug: a saved view of x whose fake
  value did not alias x let Inductor write dx into x; see
  ``recognisers.base.refresh_fake_values``).
- Automatic dynamic (no marks): at most two compiles over five batch sizes,
  both rewritten.
- The ops' CPU lowering (C++) with symbolic batch and sequence, sizes that are
  no multiple of any vector width or tile, every form and coefficient layout,
  and under ``torch.compile(dynamic=True)``.
- The backward Triton template with symbolic sizes (in a subprocess: Inductor's
  Triton codegen through the interpreter, tests/fake_triton_cpu.py), rows and
  channels no multiple of the blocks.
- FLASHKAT_DYNAMIC_REWRITES=0 turns dynamic rewrites off (tests/test_recognisers.py).

Compile caches are off: a cache hit would skip the passes and their counters.
"""
from __future__ import annotations

import os
import re

import pytest
import torch
from torch._dynamo.utils import counters

import flashkat_inductor as fk
import flashkat_inductor.backend  # noqa: F401
from flashkat_inductor.semantics import reference_backward, reference_forward

from helpers import coefficients, no_compile_caches, rel_err, run_result_script, train_step
from test_recognisers import SITES, eager_run, expected_counts, make_inputs, model_of, weighted_loss

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _no_compile_caches():
    with no_compile_caches():
        yield


def _resize(t: torch.Tensor, sizes: dict, g: torch.Generator) -> torch.Tensor:
    """A fresh random tensor like t with dims resized ({dim: size})."""
    shape = [sizes.get(d, s) for d, s in enumerate(t.shape)]
    return torch.randn(shape, generator=g).to(t.dtype)


def _dyn_dims(site) -> list:
    """The dims made dynamic: batch, and sequence for 3-D x (KAT's reference: batch only, see
    test_kat_reference_two_symbolic_dims_is_left_alone)."""
    if site.pattern.startswith("kat_reference"):
        return [0]
    return [0, 1] if len(site.shape) == 3 else [0]


def site_inputs(sites, step: int, mark: bool, seq_dynamic: bool = True):
    """Inputs for every site at step `step` (0..4): batch and sequence sizes vary, odd ones included."""
    flat = [t.detach() for t in make_inputs(sites, seed=10 + step)]
    g = torch.Generator().manual_seed(100 + step)
    batch, seq = (3, 2, 5, 7, 4)[step], (5, 3, 7, 2, 6)[step]
    for i, s in enumerate(sites):
        dyn = _dyn_dims(s) if seq_dynamic else [0]
        sizes = {0: batch * (s.shape[0] if len(s.shape) == 2 else 1)}
        if 1 in dyn:
            sizes[1] = seq
        x = _resize(flat[3 * i], sizes, g).requires_grad_(s.x_grad)
        flat[3 * i] = x
        flat[3 * i + 1].requires_grad_(s.coef_grad)
        flat[3 * i + 2].requires_grad_(s.coef_grad)
        if mark:
            for d in dyn:
                torch._dynamo.mark_dynamic(x, d)
    return flat


def _check_step(model, compiled, flat, what):
    before = [t.detach().clone() for t in flat]
    outs = compiled(*flat)
    weighted_loss(outs).backward()
    changed = [k for k, (b, t) in enumerate(zip(before, flat)) if not torch.equal(b, t.detach())]
    assert not changed, f"{what}: inputs {changed} were written by the compiled step"
    eager = eager_run(model, [b.requires_grad_(t.requires_grad) for b, t in zip(before, flat)])
    for i, (o, e) in enumerate(zip(outs, eager["outs"])):
        assert o.shape == e.shape and rel_err(o.detach(), e) <= TOL, (what, i, "output")
    for k, (t, ge) in enumerate(zip(flat, eager["grads"])):
        assert (t.grad is None) == (ge is None), (what, k)
        if ge is not None:
            assert rel_err(t.grad, ge) <= TOL, (what, k, rel_err(t.grad, ge))


def test_mark_dynamic_training_every_site_kind():
    """Symbolic batch (and sequence): rewritten, one compile for five sizes, exact, inputs unchanged."""
    model = model_of(SITES)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend="flashkat")
    for step in range(5):
        _check_step(model, compiled, site_inputs(SITES, step, mark=True), f"step {step}")
    assert dict(counters["flashkat"]) == expected_counts(SITES), dict(counters["flashkat"])
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])


AUTO_SITES = [SITES[0], SITES[2], SITES[5]]  # KAT's reference (3-D), Horner safe (3-D), powers (2-D)


def test_automatic_dynamic_at_most_two_compiles():
    model = model_of(AUTO_SITES)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend="flashkat")
    frames = []
    for step in range(5):
        flat = site_inputs(AUTO_SITES, step, mark=False, seq_dynamic=False)  # batch varies
        _check_step(model, compiled, flat, f"step {step}")
        frames.append(counters["stats"]["unique_graphs"])
    assert frames[-1] <= 2, frames
    # both graphs (static, then automatic dynamic) were rewritten
    assert counters["flashkat"]["rewrites"] == frames[-1] * len(AUTO_SITES), dict(counters["flashkat"])


def test_kat_reference_two_symbolic_dims_is_left_alone():
    """KAT's reference with symbolic batch AND sequence: Inductor's pattern matcher re-traces a
    pattern with one symbolic input only (the second becomes sym_size(x, 1), which the graph's
    SymInt input does not match), so the site is left alone with a reason, and compiles as Inductor."""
    from flashkat_inductor.recognisers import collect_reports

    site = SITES[0]
    model = model_of([site])
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend="flashkat")
    flat = [t.detach() for t in make_inputs([site], seed=3)]
    flat[0] = torch.randn(3, 7, site.shape[2]).requires_grad_()
    for k in range(3):
        flat[k].requires_grad_()
    torch._dynamo.mark_dynamic(flat[0], 0)
    torch._dynamo.mark_dynamic(flat[0], 1)
    with collect_reports() as reports:
        _check_step(model, compiled, flat, "kat_reference, B and L symbolic")
    assert counters["flashkat"].get("rewrites", 0) == 0
    # (torch 2.11 does not tell post-grad passes which graphs are inference graphs: the training
    # forward graph is reported too there, with another reason)
    reasons = [m.reason for r in reports if r.graph == "training" for m in r.near_misses]
    assert reasons and all("more than one symbolic dimension" in why for why in reasons), reasons


# ----------------------------------------------------------------------------
# The ops' C++ lowering with symbolic sizes
# ----------------------------------------------------------------------------
OP_CASES = [  # form, zero_sign, numerator rows, denominator rows, m, n, channels
    ("safe", "torch", 1, 8, 6, 4, 72),  # 9 channels per group: no multiple of any vector width
    ("signed", "kat", 8, 8, 6, 4, 40),
    ("abs_sum", "torch", 4, 1, 5, 3, 20),
    ("safe", "kat", 1, 1, 3, 2, 7),
]


def _op_model(cases):
    def f(*flat):
        return [fk.rational(flat[3 * i] * 1.5, flat[3 * i + 1], flat[3 * i + 2], form=c[0], zero_sign=c[1]) + 0.5
                for i, c in enumerate(cases)]
    return f


def _op_inputs(cases, batch, seq, mark, seed):
    torch.manual_seed(seed)
    flat, dys = [], []
    for form, zs, gn, gd, m, n, C in cases:
        x = torch.randn(batch, seq, C)
        x[0, 0, :3] = 0.0
        a, b = coefficients(m, n, gn, gd, form=form, zeros=True)
        xr, ar, br = (t.clone().requires_grad_() for t in (x, a, b))
        if mark:
            torch._dynamo.mark_dynamic(xr, 0)
            torch._dynamo.mark_dynamic(xr, 1)
        flat += [xr, ar, br]
        dys.append(torch.rand(batch, seq, C) + 0.5)
    return flat, dys


def _check_ops(cases, compiled, sizes, mark):
    codes = []
    for k, (batch, seq) in enumerate(sizes):
        flat, dys = _op_inputs(cases, batch, seq, mark, seed=k)
        outs, code = train_step(compiled, flat, dys, capture=k == 0)
        codes += code
        for i, (form, zs, *_rest) in enumerate(cases):
            x, a, b = (t.detach() for t in flat[3 * i:3 * i + 3])
            ref_y = reference_forward(1.5 * x, a, b, form) + 0.5
            dx, da, db = reference_backward(dys[i], 1.5 * x, a, b, form, zs)
            errs = [rel_err(outs[i].detach(), ref_y), rel_err(flat[3 * i].grad, 1.5 * dx),
                    rel_err(flat[3 * i + 1].grad, da), rel_err(flat[3 * i + 2].grad, db)]
            assert max(errs) <= TOL, ((batch, seq), cases[i], errs)
    return codes


def test_cpp_lowering_symbolic_batch_and_sequence():
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(_op_model(OP_CASES), backend="flashkat")
    codes = _check_ops(OP_CASES, compiled, [(3, 7), (5, 11), (2, 13)], mark=True)
    assert counters["stats"]["unique_graphs"] == 1
    code = "\n".join(codes)
    assert not re.search(r"torch\.ops\.flashkat\.rational_\w+\.default\(", code), "an op ran eagerly"
    assert re.search(r"\bks\d\b|\bs\d+\b", code), "no symbolic size in the generated code"


def test_cpp_lowering_dynamic_true():
    """torch.compile(dynamic=True): sizes symbolic from the first compile (channels included)."""
    cases = OP_CASES[:2]
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(_op_model(cases), backend="flashkat", dynamic=True)
    _check_ops(cases, compiled, [(3, 5), (4, 9), (6, 2)], mark=False)
    assert counters["stats"]["unique_graphs"] == 1


# ----------------------------------------------------------------------------
# The Triton template with symbolic sizes (subprocess: interpreter, stand-in driver)
# ----------------------------------------------------------------------------
_TEMPLATE_SCRIPT = r"""
import json, re, sys
sys.path.insert(0, {tests!r})
import fake_triton_cpu  # noqa: F401  (process-wide: cpu_backend="triton", a stand-in driver)
import torch
import torch._inductor.config as inductor_config
import torch._functorch.config as functorch_config
inductor_config.fx_graph_cache = False
functorch_config.enable_autograd_cache = False
from torch._dynamo.utils import counters
import flashkat_inductor as fk
import flashkat_inductor.backend  # noqa: F401
from flashkat_inductor.lowerings import backward as bw
from flashkat_inductor.semantics import reference_backward, reference_forward
from helpers import coefficients, rel_err, train_step

bw._state["configs"] = [(8, 64, 4, 1)]  # rows and channels below are no multiples of 8 and 64
cases = [("safe", "torch", 1, 8, 72), ("abs_sum", "kat", 4, 4, 20)]
def f(*flat):
    return [fk.rational(flat[3 * i], flat[3 * i + 1], flat[3 * i + 2], form=c[0], zero_sign=c[1]) * 2.0
            for i, c in enumerate(cases)]
compiled = torch.compile(f, backend="flashkat")
result = {{"errs": [], "codes": []}}
for k, (batch, seq) in enumerate([(3, 7), (5, 11)]):  # rows 21 and 55
    torch.manual_seed(k)
    flat, dys = [], []
    for form, zs, gn, gd, C in cases:
        x = torch.randn(batch, seq, C)
        a, b = coefficients(6, 4, gn, gd, form=form)
        xr, ar, br = (t.clone().requires_grad_() for t in (x, a, b))
        torch._dynamo.mark_dynamic(xr, 0)
        torch._dynamo.mark_dynamic(xr, 1)
        flat += [xr, ar, br]
        dys.append(torch.rand(batch, seq, C) + 0.5)
    outs, codes = train_step(compiled, flat, dys, capture=k == 0)
    result["codes"] += codes
    for i, (form, zs, *_ ) in enumerate(cases):
        x, a, b = (t.detach() for t in flat[3 * i:3 * i + 3])
        dx, da, db = reference_backward(dys[i], x, a, b, form, zs)
        result["errs"].append([rel_err(outs[i].detach(), 2 * reference_forward(x, a, b, form)),
                               rel_err(flat[3 * i].grad, 2 * dx), rel_err(flat[3 * i + 1].grad, 2 * da),
                               rel_err(flat[3 * i + 2].grad, 2 * db)])
code = "\n".join(result.pop("codes"))
result["graphs"] = counters["stats"]["unique_graphs"]
result["template"] = sorted(set(re.findall(r"def (triton_tem_\w+)\(", code)))
result["symbolic_rows"] = bool(re.search(r"\bR = [^\n]*\b(ks|s)\d", code))
result["eager_op"] = bool(re.search(r"torch\.ops\.flashkat\.rational_\w+\.default\(", code))
print("RESULT" + json.dumps(result))
"""


def test_triton_template_symbolic_sizes_interpreter():
    res = run_result_script(_TEMPLATE_SCRIPT.format(tests=HERE), TRITON_INTERPRET="1")
    assert res["graphs"] == 1, res
    assert res["template"], "the backward template was not used"
    assert res["symbolic_rows"], "the template's row count is not symbolic"
    assert not res["eager_op"]
    for e in res["errs"]:
        assert max(e) <= TOL, res["errs"]
