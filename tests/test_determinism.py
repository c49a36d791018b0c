"""Determinism: coefficient gradients are bitwise identical across runs, also under
``torch.use_deterministic_algorithms(True)``.

Every path of the project is deterministic by construction, so none has to
raise PyTorch's "does not have a deterministic implementation" error:

- eager CPU (``torch_impl.py``): chunked loops in a fixed order, per-chunk
  ``sum``s (deterministic on CPU);
- compiled CPU (the C++ IR lowering): Inductor reductions, whose split over
  OpenMP threads is fixed for a given thread count;
- eager CUDA (``triton_kernels.py``): per-program partial sums written to a
  workspace, finished by a fixed-order float64 sum in a second kernel; no atomics (checked on
  the source here; the program count depends on the GPU's SM count only);
- the backward template (``lowerings/backward.py.jinja``): the same, finished
  by an Inductor reduction; no atomics (source and generated code checked, the
  generated code in a subprocess through the Triton interpreter).

Results are reproducible for a fixed device and thread count; they are not
promised equal across thread counts or GPU models (the reduction trees differ).
"""
from __future__ import annotations

import os
import re

import pytest
import torch

import flashkat_inductor as fk
import flashkat_inductor.backend  # noqa: F401

from helpers import coefficients, no_compile_caches, run_result_script

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PKG = os.path.join(ROOT, "flashkat_inductor")

CASES = [("safe", "torch", 1, 8), ("signed", "kat", 8, 8), ("abs_sum", "torch", 8, 1)]


@pytest.fixture
def deterministic():
    old, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old, warn_only=warn_only)


def _inputs(shape, seed=0):
    torch.manual_seed(seed)
    out = []
    for form, zs, gn, gd in CASES:
        a, b = coefficients(6, 4, gn, gd, form=form)
        x = torch.randn(shape)
        dy = torch.randn(shape)  # random signs: the sums cancel, so any reordering would show
        out.append((x, a, b, dy))
    return out


def _grads(fn, inputs):
    """[(dx, da, db)] for every case, fresh leaves each call."""
    res = []
    leaves, outs, dys = [], [], []
    flat = []
    for x, a, b, dy in inputs:
        lv = [t.clone().requires_grad_() for t in (x, a, b)]
        leaves.append(lv)
        flat += lv
        dys.append(dy)
    outs = fn(*flat)
    grads = torch.autograd.grad(outs, flat, dys)
    for i in range(len(inputs)):
        res.append(grads[3 * i:3 * i + 3])
    return res


def _many(*flat):
    return [fk.rational(flat[3 * i], flat[3 * i + 1], flat[3 * i + 2], form=f, zero_sign=z)
            for i, (f, z, *_r) in enumerate(CASES)]


def _bitwise_equal(r1, r2):
    return all(torch.equal(u, v) for g1, g2 in zip(r1, r2) for u, v in zip(g1, g2))


def test_eager_cpu_is_bitwise_reproducible(deterministic):
    """Large enough for several chunks of torch_impl (2^18 elements each) and both threads."""
    inputs = _inputs((7, 197, 192))  # 264,768 elements: two chunks
    r1 = _grads(_many, inputs)
    r2 = _grads(_many, inputs)
    assert _bitwise_equal(r1, r2)
    torch.use_deterministic_algorithms(False)
    assert _bitwise_equal(r1, _grads(_many, inputs))  # the same code path either way


def test_compiled_cpu_is_bitwise_reproducible():
    inputs = _inputs((8, 50, 192), seed=1)
    with no_compile_caches():
        torch._dynamo.reset()
        compiled = torch.compile(_many, backend="flashkat")
        r1 = _grads(compiled, inputs)
        assert _bitwise_equal(r1, _grads(compiled, inputs)), "two runs of one compiled graph differ"
        torch._dynamo.reset()
        assert _bitwise_equal(r1, _grads(torch.compile(_many, backend="flashkat"), inputs)), \
            "two compiles differ"
        torch.use_deterministic_algorithms(True)
        try:
            torch._dynamo.reset()
            compiled = torch.compile(_many, backend="flashkat")
            r3 = _grads(compiled, inputs)  # no error: nothing non-deterministic to refuse
            assert _bitwise_equal(r3, _grads(compiled, inputs))
        finally:
            torch.use_deterministic_algorithms(False)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
                    reason="needs CUDA or the Triton interpreter")
def test_eager_triton_backward_is_bitwise_reproducible(deterministic):
    from flashkat_inductor import triton_kernels as tk

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    shape = (64, 197, 384) if dev == "cuda" else (3, 17, 64)
    for (x, a, b, dy), (form, zs, *_r) in zip(_inputs(shape, seed=2), CASES):
        x, a, b, dy = (t.to(dev) for t in (x, a, b, dy))
        r1 = tk.backward(dy, x, a, b, form, zs)
        r2 = tk.backward(dy, x, a, b, form, zs)
        assert all(torch.equal(u, v) for u, v in zip(r1, r2)), form


def _kernel_sources() -> dict:
    with open(os.path.join(PKG, "triton_kernels.py")) as f:
        kernels = f.read()
    with open(os.path.join(PKG, "lowerings", "backward.py.jinja")) as f:
        template = f.read()
    return {"triton_kernels.py": kernels, "backward.py.jinja": template}


def test_no_atomics_in_kernels_or_template():
    for name, src in _kernel_sources().items():
        code = "\n".join(ln.split("#", 1)[0] for ln in src.splitlines())  # comments may mention atomics
        assert not re.search(r"\batomic_\w+\s*\(", code), f"{name} uses an atomic"


_TEMPLATE_SCRIPT = r"""
import json, re, sys
sys.path.insert(0, {tests!r})
import fake_triton_cpu  # noqa: F401
import torch
import torch._inductor.config as inductor_config
import torch._functorch.config as functorch_config
inductor_config.fx_graph_cache = False
functorch_config.enable_autograd_cache = False
from torch._inductor.utils import run_and_get_code
import flashkat_inductor as fk
import flashkat_inductor.backend  # noqa: F401
from flashkat_inductor.lowerings import backward as bw
bw._state["configs"] = [(8, 64, 4, 1)]
torch.use_deterministic_algorithms(True)
torch.manual_seed(0)
x, dy = torch.randn(5, 13, 64), torch.randn(5, 13, 64)
a, b = torch.randn(1, 6) * 0.5, torch.randn(8, 4) * 0.5
f = lambda x, a, b: fk.rational(x, a, b, form="safe", zero_sign="kat")
compiled = torch.compile(f, backend="flashkat")
def grads():
    leaves = [t.clone().requires_grad_() for t in (x, a, b)]
    return torch.autograd.grad(compiled(*leaves), leaves, dy)
g1, codes = run_and_get_code(grads)
g2 = grads()
code = "\n".join(codes)
print("RESULT" + json.dumps({{"same": all(torch.equal(u, v) for u, v in zip(g1, g2)),
                              "template": bool(re.search(r"def triton_tem_\w*rational_bwd", code)),
                              "atomics": bool(re.search(r"atomic_\w+\(", code))}}))
"""


def test_backward_template_is_deterministic_interpreter():
    res = run_result_script(_TEMPLATE_SCRIPT.format(tests=HERE), TRITON_INTERPRET="1")
    assert res == {"same": True, "template": True, "atomics": False}, res
