"""The Inductor lowerings of the ops (``flashkat_inductor.lowerings``).

CPU, in CI (backend="inductor": the lowerings are global once registered):
  - forward fusion visible in the generated C++ (one kernel holds the rational
    and its neighbours; no eager call of the op in the wrapper);
  - the backward lowered (no eager call), one vectorised C++ kernel;
  - y, dx, dnum, dden against the float64 reference for every form x
    zero_sign x coefficient layout, orders (1,1) .. (8,8), odd shapes, bf16
    and float64, strided / expanded inputs, a dynamic batch.
  Compiles cost seconds each on a small CPU box, so each compiled function
  checks many cases at once (several independent rationals in one graph).
Triton template on CPU (in a subprocess: Inductor's Triton codegen run through
  the Triton interpreter with a stand-in driver, tests/fake_triton_cpu.py):
  numerics and the dx epilogue fused into ``triton_tem_fused_...``.
CUDA (skipped without a GPU): the real template, autotuned over its configs,
  epilogue fusion, numerics, bf16, a dynamic batch, forward fusion in Triton.
"""
from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import flashkat_inductor as fk
from flashkat_inductor import torch_impl
from flashkat_inductor.lowerings import register_lowerings
from flashkat_inductor.semantics import FORMS, ZERO_SIGNS, reference_backward, reference_forward

from helpers import coefficients, module_grads, naive_lowp, rel_err, run_result_script

F32_BOUND = 1e-6
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LAYOUTS = [(1, 8), (8, 8), (8, 1), (1, 1)]  # (numerator rows, denominator rows)


@pytest.fixture(scope="module", autouse=True)
def _lowerings():
    register_lowerings()
    register_lowerings()  # idempotent


@pytest.fixture(autouse=True)
def _fresh_compiles():
    """No FX-graph / AOT-autograd cache hits: the lowerings live outside Inductor's cache key
    (the flashkat backend adds them through its CustomGraphPass uuid; backend="inductor" cannot)."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    with inductor_config.patch(fx_graph_cache=False, fx_graph_remote_cache=False), \
            functorch_config.patch(enable_autograd_cache=False):
        yield
    torch._dynamo.reset()


def compile_and_run(fn, *args):
    """Compile with backend="inductor", run once; return (outputs, [generated source per graph])."""
    from torch._inductor.utils import run_and_get_code

    compiled = torch.compile(fn, backend="inductor", fullgraph=True)
    return run_and_get_code(compiled, *args)


def kernel_names(code: str, prefix: str = "cpp_fused_") -> list:
    return re.findall(rf"^({prefix}\w*) = async_compile", code, re.M)


def assert_no_eager_op(code: str):
    assert "torch.ops.flashkat.rational_fwd.default(" not in code, "forward op ran eagerly"
    assert "torch.ops.flashkat.rational_bwd.default(" not in code, "backward op ran eagerly"


def leaves(*ts):
    return [t.detach().clone().requires_grad_() for t in ts]


def compiled_training(cases, *, sum_loss=None):
    """Compile ONE function running every case's rational, run forward + backward.

    cases: list of (x, a, b, form, zero_sign, dy); returns (ys, grads, codes) with
    grads[i] = (dx, da, db).  With sum_loss (a set of case indices) the compiled
    function also computes the loss, sum_i (y_i * dy_i).sum() but y_i.sum() for
    the listed cases, so that their gradient inside the compiled backward is an
    expanded (stride-0) tensor; otherwise the tangents dy_i are passed in."""
    specs = [(c[3], c[4]) for c in cases]
    n = len(cases)

    def fn(*flat):
        outs = []
        for i, (form, zs) in enumerate(specs):
            x, a, b = flat[3 * i : 3 * i + 3]
            outs.append(fk.rational(x, a, b, form=form, zero_sign=zs))
        if sum_loss is None:
            return tuple(outs)
        dys = flat[3 * n :]
        loss = sum(y.sum() if i in sum_loss else (y * dy).sum() for i, (y, dy) in enumerate(zip(outs, dys)))
        return (*outs, loss)

    flat = [t for c in cases for t in leaves(c[0], c[1], c[2])]
    extra = [c[5] for c in cases] if sum_loss is not None else []
    from torch._inductor.utils import run_and_get_code

    compiled = torch.compile(fn, backend="inductor", fullgraph=True)

    def step():
        outs = compiled(*flat, *extra)
        if sum_loss is None:
            torch.autograd.backward(outs, [c[5] for c in cases])
        else:
            outs[-1].backward()
        return outs[:n]

    ys, codes = run_and_get_code(step)
    grads = [tuple(flat[3 * i + j].grad for j in range(3)) for i in range(n)]
    return ys, grads, codes


def check_case(y, grads, x, a, b, form, zs, dy, bound=F32_BOUND, what=""):
    ref_y = reference_forward(x, a, b, form)
    ref_g = reference_backward(dy, x, a, b, form, zs)
    errs = [rel_err(y, ref_y)] + [rel_err(u, v) for u, v in zip(grads, ref_g)]
    assert y.dtype == x.dtype and grads[0].dtype == x.dtype
    assert grads[1].dtype == a.dtype and grads[2].dtype == b.dtype
    assert grads[1].shape == a.shape and grads[2].shape == b.shape
    assert max(errs) <= bound, (what, dict(zip(("y", "dx", "dnum", "dden"), errs)))
    return errs


def uniform_grad(shape, dtype=torch.float32, device="cpu"):
    # dy ~ U(0.5, 1.5): no cancellation in the coefficient sums (as in test_ops.py)
    return (torch.rand(shape, device=device) + 0.5).to(dtype)


# ============================================================================
# Forward fusion (C++)
# ============================================================================
def test_forward_fuses_with_neighbours_cpp():
    a, b = coefficients(6, 4, 1, 8, kind="gelu")
    x = torch.randn(7, 33, 200)

    # x * 2 -> rational -> + 1: one kernel, the op is not called eagerly
    def scaled(x, a, b):
        return fk.rational(x * 2.0, a, b, form="safe", zero_sign="kat") + 1.0

    y, (code,) = compile_and_run(scaled, x, a, b)
    names = kernel_names(code)
    assert len(names) == 1 and "rational_fwd" in names[0] and "add" in names[0] and "mul" in names[0], names
    assert_no_eager_op(code)
    assert "Vectorized<float>" in code  # the group loop split made it vectorisable
    assert rel_err(y, reference_forward(2 * x, a, b, "safe") + 1) <= F32_BOUND

    # linear (no bias) -> bias add -> rational -> dropout: the matmul is an extern
    # kernel; bias add, rational and dropout are ONE kernel.  (F.linear with a bias
    # folds the bias into addmm on CPU, so the add is written out here.)
    w = torch.randn(96, 64) / 8
    bias = torch.randn(96)
    xin = torch.randn(4, 9, 64)

    def mlp(x, w, bias, a, b):
        return F.dropout(fk.rational(F.linear(x, w) + bias, a, b), p=0.25, training=True)

    out, (code,) = compile_and_run(mlp, xin, w, bias, a, b)
    names = kernel_names(code)
    fused = [n for n in names if "rational_fwd" in n]
    assert len(fused) == 1 and "add" in fused[0] and "dropout" in fused[0], names
    assert len(names) == 1, names
    assert_no_eager_op(code)
    ref = reference_forward(F.linear(xin, w) + bias, a, b, "safe")
    kept = out != 0
    assert 0.6 < kept.double().mean().item() < 0.9  # p = 0.25
    torch.testing.assert_close(out[kept].double(), ref[kept] / 0.75, rtol=1e-5, atol=1e-5)


# ============================================================================
# Backward: one vectorised C++ kernel, numerics of every form / sign / layout
# ============================================================================
@pytest.mark.parametrize("form", FORMS)
def test_forms_signs_layouts(form):
    """One compiled graph per form: 2 zero_sign conventions x 4 coefficient layouts at 7 x 33 x 200."""
    cases = []
    for zs, (gn, gd) in itertools.product(ZERO_SIGNS, LAYOUTS):
        x = torch.randn(7, 33, 200)
        x[0, 0, :7] = 0.0  # exact zeros: the sign convention matters for dx
        a, b = coefficients(6, 4, gn, gd, form=form, zeros=True)  # exact zeros in b too
        cases.append((x, a, b, form, zs, uniform_grad(x.shape)))
    ys, grads, codes = compiled_training(cases)
    fwd, bwd = codes
    assert_no_eager_op(fwd)
    assert_no_eager_op(bwd)
    # every backward in one C++ function; x and dy loaded as vectors
    assert len([n for n in kernel_names(bwd) if "rational_bwd" in n]) == 1, kernel_names(bwd)
    assert "at::vec::Vectorized<float>::loadu" in bwd
    for y, g, (x, a, b, form_, zs, dy) in zip(ys, grads, cases):
        check_case(y, g, x, a, b, form_, zs, dy, what=(form_, zs, a.shape[0], b.shape[0]))


def test_backward_is_one_pass_cpp():
    """The backward's main loop nest stores dx and accumulates all m + n sums: x and dy are read once."""
    x = torch.randn(16, 12, 96)
    a, b = coefficients(6, 4, 1, 8, kind="gelu")
    dy = uniform_grad(x.shape)

    def bwd(dy, x, a, b):
        return torch.ops.flashkat.rational_bwd(dy, x, a, b, "safe", "kat")

    (dx, da, db), (code,) = compile_and_run(bwd, dy, x, a, b)
    assert_no_eager_op(code)
    names = kernel_names(code)
    assert len(names) == 1, names
    body = code[code.index("extern \"C\""):]
    # x (in_ptr1) and dy (in_ptr0) are each loaded in one loop nest only (vector body + tail)
    for ptr in ("in_ptr0", "in_ptr1"):
        loads = re.findall(rf"Vectorized<float>::loadu\({ptr} \+", body)
        assert 1 <= len(loads) <= 2, (ptr, len(loads))
    accs = set(re.findall(r"tmp_acc(\d+)_vec = (?:tmp_acc\d+_vec \+|sum_masked_reduce\()", body))
    assert len(accs) >= 10, accs  # m + n vector accumulators in the main loop nest
    assert "std::pow" not in body and "pow(" not in body  # powers never materialised
    ref = reference_backward(dy, x, a, b, "safe", "kat")
    assert max(rel_err(u, v) for u, v in zip((dx, da, db), ref)) <= F32_BOUND


def test_orders_and_group_counts():
    """(m, n) from (1, 1) to (8, 8) for every form, and narrow groups (D = 1, 2) in one graph."""
    cases = []
    for form in FORMS:
        for m, n in [(1, 1), (6, 4), (8, 8), (3, 7)]:
            x = torch.randn(5, 48)
            a, b = coefficients(m, n, 4, 4, form=form)
            cases.append((x, a, b, form, "torch", uniform_grad(x.shape)))
    for groups in (24, 48):  # 2 and 1 channels per group
        x = torch.randn(3, 4, 48)
        a, b = coefficients(6, 4, groups, groups)
        cases.append((x, a, b, "safe", "kat", uniform_grad(x.shape)))
    ys, grads, codes = compiled_training(cases)
    assert_no_eager_op(codes[0])
    assert_no_eager_op(codes[1])
    for y, g, (x, a, b, form, zs, dy) in zip(ys, grads, cases):
        check_case(y, g, x, a, b, form, zs, dy, what=(form, a.shape, b.shape))


def test_shapes_strides_expanded_grad():
    """1-D, 4-D, permuted (channels-last view) and sliced x; y.sum() (a stride-0 gradient)."""
    a, b = coefficients(6, 4, 1, 8)
    base = torch.randn(7, 40, 128)
    cases = [
        (torch.randn(48), a[:, :6], b[:4], "safe", "torch", None),
        (torch.randn(2, 3, 5, 40), a, b, "signed", "kat", None),
        (torch.randn(2, 16, 5, 5).permute(0, 2, 3, 1), a, b, "safe", "kat", None),
        (base[..., ::2], a, b, "abs_sum", "torch", None),
        (torch.randn(40, 7, 64).transpose(0, 1), a, b, "safe", "kat", None),  # y.sum()
    ]
    cases = [(x, a_, b_, f, z, uniform_grad(x.shape) if i < 4 else torch.ones(x.shape))
             for i, (x, a_, b_, f, z, _) in enumerate(cases)]
    ys, grads, codes = compiled_training(cases, sum_loss={4})
    assert_no_eager_op(codes[0])
    assert_no_eager_op(codes[1])
    for y, g, (x, a_, b_, form, zs, dy) in zip(ys, grads, cases):
        check_case(y, g, x, a_, b_, form, zs, dy, what=(form, tuple(x.shape), x.stride()))


def test_low_precision_and_float64():
    """bf16 (and fp16) x with bf16 or float32 coefficients: at most 2x the error of the naive
    computation in that dtype; float64 computed in float64."""
    cases, lowp = [], []
    for form in FORMS:
        for dtype, cd in [(torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32),
                          (torch.float16, torch.float16)]:
            x = torch.randn(7, 33, 200).to(dtype)
            a, b = coefficients(6, 4, 1, 8, form=form, dtype=cd)
            cases.append((x, a, b, form, "torch", uniform_grad(x.shape, dtype)))
            lowp.append(True)
    x = torch.randn(6, 40, dtype=torch.float64)
    a, b = coefficients(6, 4, 1, 4, dtype=torch.float64)
    cases.append((x, a, b, "safe", "torch", uniform_grad(x.shape, torch.float64)))
    lowp.append(False)
    ys, grads, codes = compiled_training(cases)
    assert_no_eager_op(codes[1])
    assert "bfloat16" in codes[0] or "BFloat16" in codes[0]  # read / written in bf16, not via f32 buffers
    for y, g, (x, a, b, form, zs, dy), is_lowp in zip(ys, grads, cases, lowp):
        if not is_lowp:
            check_case(y, g, x, a, b, form, zs, dy, bound=1e-13, what="float64")
            continue
        assert y.dtype == x.dtype and g[0].dtype == x.dtype and g[1].dtype == a.dtype and g[2].dtype == b.dtype
        ref_y = reference_forward(x, a, b, form)
        ref_g = reference_backward(dy, x, a, b, form, zs)
        xl, al, bl = (t.detach().to(x.dtype).requires_grad_() for t in (x, a, b))
        yl = naive_lowp(xl, al, bl, form)
        yl.backward(dy)
        base = [rel_err(yl, ref_y)] + [rel_err(u, v) for u, v in zip((xl.grad, al.grad, bl.grad), ref_g)]
        ours = [rel_err(y, ref_y)] + [rel_err(u, v) for u, v in zip(g, ref_g)]
        for name, o, bb in zip(("y", "dx", "dnum", "dden"), ours, base):
            assert o <= 2 * bb, (form, x.dtype, a.dtype, name, o, bb)


def test_dynamic_batch_cpp():
    """A symbolic batch: one compiled graph serves two batch sizes."""
    from torch._dynamo.utils import counters

    a, b = coefficients(6, 4, 1, 8, kind="gelu")
    counters.clear()
    compiled = torch.compile(lambda x, a, b: fk.rational(x, a, b, form="safe", zero_sign="kat"),
                             backend="inductor", fullgraph=True)
    for batch in (5, 9):
        x = torch.randn(batch, 17, 64)
        xr, ar, br = leaves(x, a, b)
        torch._dynamo.mark_dynamic(xr, 0)
        dy = uniform_grad(x.shape)
        y = compiled(xr, ar, br)
        y.backward(dy)
        check_case(y, (xr.grad, ar.grad, br.grad), x, a, b, "safe", "kat", dy, what=("batch", batch))
    assert counters["stats"]["unique_graphs"] == 1


def test_template_slabs():
    """The template's slab of channels per workspace entry: the largest power of two dividing what
    one entry may span (a group, or all C for a shared row), at most every config's BLOCK_C; 1 for
    odd or symbolic spans and from backward._SLAB_MAX_CHANNELS up (measured slower at 3072)."""
    import sympy

    from flashkat_inductor.lowerings import backward as bw

    configs = bw._template_configs(768, torch.float32, 10)
    assert min(c[1] for c in configs) == 64
    assert bw._slab(sympy.Integer(96), configs, 768) == 32  # KAT-T's 768 channels, 8 groups
    assert bw._slab(sympy.Integer(24), configs, 192) == 8
    assert bw._slab(sympy.Integer(768), configs, 768) == 64  # a shared row: capped at BLOCK_C
    assert bw._slab(sympy.Integer(25), configs, 200) == 1
    assert bw._slab(sympy.Symbol("s0", positive=True, integer=True), configs, 768) == 1
    assert bw._slab(sympy.Integer(384), configs, bw._SLAB_MAX_CHANNELS) == 1
    assert bw._slab(sympy.Integer(192), configs, bw._SLAB_MAX_CHANNELS - 512) == 64


def test_slab_limit_from_the_environment(monkeypatch):
    """FLASHKAT_SLAB_MAX_CHANNELS: the width from which the template stops summing slabs (4096
    without it: KAT's 3072 channels have them); 2048 stops them at 3072; a clear error for anything
    else."""
    import sympy

    from flashkat_inductor.lowerings import backward as bw

    monkeypatch.delenv("FLASHKAT_SLAB_MAX_CHANNELS", raising=False)
    assert bw._slab_max_from_env() == 4096
    configs = bw._template_configs(3072, torch.bfloat16, 10)
    assert bw._slab(sympy.Integer(384), configs, 3072) == 64
    assert bw._slab(sympy.Integer(3072), configs, 3072) == 64  # the shared numerator row
    monkeypatch.setenv("FLASHKAT_SLAB_MAX_CHANNELS", " 2048 ")
    monkeypatch.setattr(bw, "_SLAB_MAX_CHANNELS", bw._slab_max_from_env())
    assert bw._SLAB_MAX_CHANNELS == 2048 and bw._slab(sympy.Integer(384), configs, 3072) == 1
    assert bw.lowering_switches()[4] == 2048  # in the passes' cache key
    monkeypatch.delenv("FLASHKAT_ONE_FINISH", raising=False)
    assert bw._one_finish_from_env() is True  # FLASHKAT_ONE_FINISH: on by default
    monkeypatch.setenv("FLASHKAT_ONE_FINISH", " 0 ")
    monkeypatch.setattr(bw, "_ONE_FINISH", bw._one_finish_from_env())
    assert bw._ONE_FINISH is False and bw.lowering_switches()[5] is False  # in the passes' cache key
    for bad in ("2", "-1", "yes"):
        monkeypatch.setenv("FLASHKAT_ONE_FINISH", bad)
        with pytest.raises(ValueError, match="FLASHKAT_ONE_FINISH"):
            bw._one_finish_from_env()
    for bad in ("0", "-1", "2k", "inf"):
        monkeypatch.setenv("FLASHKAT_SLAB_MAX_CHANNELS", bad)
        with pytest.raises(ValueError, match="FLASHKAT_SLAB_MAX_CHANNELS"):
            bw._slab_max_from_env()


def test_forward_elements_per_thread_from_the_environment(monkeypatch):
    """FLASHKAT_FORWARD_ELEMENTS_PER_THREAD: 0 (Inductor's configs) without it, 16 asks for 16, a
    clear error for anything Inductor's 1-D blocks cannot take (the kernels: the interpreter script)."""
    from flashkat_inductor.lowerings import forward as fw

    monkeypatch.delenv("FLASHKAT_FORWARD_ELEMENTS_PER_THREAD", raising=False)
    assert fw._elements_per_thread_from_env() == 0
    monkeypatch.setenv("FLASHKAT_FORWARD_ELEMENTS_PER_THREAD", " 16 ")
    monkeypatch.setattr(fw, "ELEMENTS_PER_THREAD", fw._elements_per_thread_from_env())
    assert fw.ELEMENTS_PER_THREAD == 16 and fw.lowering_switches()[6] == 16  # in the passes' cache key
    for bad in ("32", "3", "-1", "many"):
        monkeypatch.setenv("FLASHKAT_FORWARD_ELEMENTS_PER_THREAD", bad)
        with pytest.raises(ValueError, match="FLASHKAT_FORWARD_ELEMENTS_PER_THREAD"):
            fw._elements_per_thread_from_env()


def test_row_program_levels_from_the_environment(monkeypatch):
    """FLASHKAT_ROW_PROGRAM_LEVELS: (nominal BLOCK_C, programs per SM) levels, each config offered
    at each; one level, (128, 4), without it; a clear error for anything else."""
    from flashkat_inductor.lowerings import backward as bw

    monkeypatch.delenv("FLASHKAT_ROW_PROGRAM_LEVELS", raising=False)
    assert bw._levels_from_env() == ((128, 4),)
    monkeypatch.setenv("FLASHKAT_ROW_PROGRAM_LEVELS", "128x4, 256X3")
    assert bw._levels_from_env() == ((128, 4), (256, 3))
    monkeypatch.setattr(bw, "_ROW_PROGRAM_LEVELS", bw._levels_from_env())
    configs = [c for c in bw._template_configs(768, torch.float32, 10) if not c[6]]  # ROW_SUM's: below
    assert len(configs) == 22 and [c[:5] for c in configs[:11]] == [c[:5] for c in configs[11:]]
    assert {c[5] for c in configs} == {0, 1}
    cpu = torch.device("cpu")  # 2 stand-in SMs: 200 channels are 2 tiles of 128, 1 of 256
    assert [bw._row_programs(cpu, 7 * 33, 200, level) for level in bw._ROW_PROGRAM_LEVELS] == [4, 6]
    for bad in ("128", "128x0", "ax4", "128x4,"):
        monkeypatch.setenv("FLASHKAT_ROW_PROGRAM_LEVELS", bad)
        with pytest.raises(ValueError, match="FLASHKAT_ROW_PROGRAM_LEVELS"):
            bw._levels_from_env()


def test_row_sum_levels_from_the_environment(monkeypatch):
    """FLASHKAT_ROW_SUM_LEVELS: the ROW_SUM configs (backward._ROW_SUM_BASE) offered beside the
    others at these row-program levels, appended to _ROW_PROGRAM_LEVELS; 128 x 8 and 128 x 4
    without it, none with `off`."""
    from flashkat_inductor.lowerings import backward as bw

    monkeypatch.delenv("FLASHKAT_ROW_SUM_LEVELS", raising=False)
    assert bw._row_sum_levels_from_env() == ((128, 8), (128, 4))
    monkeypatch.setenv("FLASHKAT_ROW_SUM_LEVELS", " OFF ")
    monkeypatch.setattr(bw, "_ROW_SUM_LEVELS", bw._row_sum_levels_from_env())
    assert bw._ROW_SUM_LEVELS == () and bw._all_levels() == ((128, 4),)
    assert all(c[6] == 0 for c in bw._template_configs(3072, torch.bfloat16, 10))
    monkeypatch.setenv("FLASHKAT_ROW_SUM_LEVELS", "128x8,128x5")
    monkeypatch.setattr(bw, "_ROW_SUM_LEVELS", bw._row_sum_levels_from_env())
    assert bw._ROW_SUM_LEVELS == ((128, 8), (128, 5)) and bw._all_levels() == ((128, 4), (128, 8), (128, 5))
    configs = bw._template_configs(3072, torch.bfloat16, 10)
    plain = [c for c in configs if not c[6]]
    row_sum = [c for c in configs if c[6] == 1]
    lanes = [c for c in configs if c[6] == 2]  # the LANES loops, at the same levels
    assert len(plain) == 11 and {c[5] for c in plain} == {0}
    assert len(row_sum) == 2 * len(bw._ROW_SUM_BASE) and {c[5] for c in row_sum} == {1, 2}
    assert len(lanes) == 2 * len(bw._LANES_BASE) and {c[5] for c in lanes} == {1, 2}
    assert len(configs) == len(plain) + len(row_sum) + len(lanes)
    # pipelined loops only: 4 warps over 128 channels, 2 over 64
    assert all(c[4] > 0 and c[2] == c[1] // 32 for c in row_sum) and {c[1] for c in row_sum} == {64, 128}
    cpu = torch.device("cpu")  # 2 stand-in SMs: 3072 channels are 24 tiles of 128
    assert [bw._row_programs(cpu, 128 * 197, 3072, lv) for lv in bw._all_levels()] == [1, 1, 1]
    assert [bw._row_programs(cpu, 128 * 197, 128, lv) for lv in bw._all_levels()] == [8, 16, 10]
    # float64 and long coefficient sets halve the rows: 16 x 128 becomes 8 x 128, offered once
    row_sum64 = [c[:5] for c in bw._template_configs(3072, torch.float64, 10) if c[6] == 1 and c[5] == 1]
    assert row_sum64 == [(8, 128, 4, 4, 4), (8, 128, 4, 3, 3), (4, 128, 4, 4, 4), (4, 128, 4, 3, 3),
                         (8, 64, 2, 4, 4), (16, 64, 2, 3, 3)]
    # a config may leave out its level and ROW_SUM (0 both)
    monkeypatch.setitem(bw._state, "configs", [(8, 128, 4, 3, 3), (8, 128, 4, 3, 3, 1, 1)])
    assert bw._template_configs(3072, torch.bfloat16, 10) == [(8, 128, 4, 3, 3, 0, 0), (8, 128, 4, 3, 3, 1, 1)]
    for bad in ("8", "of", "128x8,"):
        monkeypatch.setenv("FLASHKAT_ROW_SUM_LEVELS", bad)
        with pytest.raises(ValueError, match="FLASHKAT_ROW_SUM_LEVELS"):
            bw._row_sum_levels_from_env()


def test_lanes_from_the_environment(monkeypatch):
    """FLASHKAT_LANES: the LANES loops (ROW_SUM 2) offered by default, withdrawn with 0; where
    VEC (16 bytes of x) does not divide C, the group width, BLOCK_C and the slabs, never built."""
    from flashkat_inductor.lowerings import backward as bw

    monkeypatch.delenv("FLASHKAT_LANES", raising=False)
    assert bw._lanes_from_env() is True
    monkeypatch.setenv("FLASHKAT_LANES", "0")
    assert bw._lanes_from_env() is False
    monkeypatch.setattr(bw, "_LANES", False)
    assert all(c[6] != 2 for c in bw._template_configs(3072, torch.bfloat16, 10))
    for bad in ("2", "-1", "yes"):
        monkeypatch.setenv("FLASHKAT_LANES", bad)
        with pytest.raises(ValueError, match="FLASHKAT_LANES"):
            bw._lanes_from_env()

    class Spec:  # the one field _lanes_fit reads
        def __init__(self, width):
            self.width = width

    assert bw._lanes_fit(Spec(384), 3072, 8, 128, 4, 64, 64)
    assert bw._lanes_fit(Spec(24), 192, 8, 64, 3, 8, 8)
    assert not bw._lanes_fit(Spec(25), 200, 8, 64, 3, 1, 1)  # 200 channels, groups of 25
    assert not bw._lanes_fit(Spec(12), 96, 8, 64, 3, 4, 4)  # groups of 12 bf16 channels
    assert bw._lanes_fit(Spec(12), 96, 4, 64, 3, 4, 4)  # float32: 4 per 16 bytes
    assert not bw._lanes_fit(Spec(384), 3072, 8, 128, -2, 64, 64)  # register-prefetch loops
    assert not bw._lanes_fit(Spec(384), 3072, 8, 128, 4, 1, 64)  # per-channel entries
    assert not bw._lanes_fit(Spec(384), 3072, 2, 128, 4, 64, 64)  # float64 x: the other loops
    assert [bw._row_reps(16, 128, 4, 8), bw._row_reps(8, 128, 4, 8), bw._row_reps(16, 64, 2, 8),
            bw._row_reps(16, 256, 8, 8), bw._row_reps(4, 64, 4, 4)] == [2, 1, 2, 2, 1]


def test_registration_is_lazy_and_idempotent():
    code = textwrap.dedent("""
        import sys
        import flashkat_inductor, flashkat_inductor.lowerings as L
        assert "torch._inductor.lowering" not in sys.modules, "importing the package imported Inductor"
        L.register_lowerings(); L.register_lowerings()
        import torch
        from torch._inductor.lowering import lowerings
        from flashkat_inductor.lowerings.forward import rational_fwd_lowering
        assert torch.ops.flashkat.rational_fwd.default in lowerings
        assert torch.ops.flashkat.rational_bwd.default in lowerings
        print("OK")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


# ============================================================================
# The Triton template on CPU: Inductor's Triton codegen under the interpreter
# ============================================================================
_TEMPLATE_SCRIPT = r"""
import json, os, re, sys
sys.path.insert(0, {tests!r})
import fake_triton_cpu  # noqa: F401  (process-wide: cpu_backend="triton", a stand-in driver)
import torch
import torch._inductor.config as inductor_config
import torch._functorch.config as functorch_config
inductor_config.fx_graph_cache = False
functorch_config.enable_autograd_cache = False
import flashkat_inductor as fk
from flashkat_inductor.lowerings import register_lowerings
from flashkat_inductor.lowerings import backward as bw
from flashkat_inductor.semantics import reference_backward, reference_forward
from helpers import coefficients, rel_err
from torch._inductor.utils import run_and_get_code

register_lowerings()
# (1) runs the pipelined `for` over row blocks (PIPE_STAGES = 3), (2) the `while`
bw._state["configs"] = [(4, 64, 4, 3, 3)]
torch.manual_seed(0)
result = {{}}

# (1) backward op with an epilogue on dx, several forms / layouts in one graph
cases = [("safe", "torch", 1, 8, 6, 4), ("signed", "kat", 8, 8, 6, 4), ("abs_sum", "kat", 8, 1, 6, 4),
         ("safe", "kat", 1, 1, 1, 1), ("safe", "torch", 4, 4, 8, 8)]
args = []
for form, zs, gn, gd, m, n in cases:
    x = torch.randn(3, 11, 80)
    x[0, 0, :5] = 0.0
    a, b = coefficients(m, n, gn, gd, form=form, zeros=True)
    args += [torch.rand(3, 11, 80) + 0.5, x, a, b]

def graph_of(cases):  # one graph: each case's backward op, dx through an epilogue
    def f(*flat):
        outs = []
        for i, (form, zs, *_ ) in enumerate(cases):
            dy, x, a, b = flat[4 * i: 4 * i + 4]
            dx, da, db = torch.ops.flashkat.rational_bwd(dy, x, a, b, form, zs)
            outs += [dx * 3.0 + 1.0, da, db]
        return outs
    return f

f = graph_of(cases)
out, codes = run_and_get_code(torch.compile(f, backend="inductor", fullgraph=True), *args)
code = "\n".join(codes)
def case_errors(out, cases=cases, args=args):  # [dx, da, db] errors of each case against float64
    errs = []
    for i, (form, zs, *_ ) in enumerate(cases):
        dy, x, a, b = args[4 * i: 4 * i + 4]
        ref = reference_backward(dy, x, a, b, form, zs)
        errs.append([rel_err(out[3 * i], ref[0] * 3 + 1), rel_err(out[3 * i + 1], ref[1]), rel_err(out[3 * i + 2], ref[2])])
    return errs

result["bwd_errs"] = case_errors(out)
result["template_kernels"] = sorted(set(re.findall(r"def (triton_tem_\w+)\(", code)))
result["eager_bwd"] = "torch.ops.flashkat.rational_bwd.default(" in code
result["pipelined_loop"] = "for it in tl.range(0, n_iter, num_stages=PIPE_STAGES)" in code and "while row0 < R" not in code and bool(re.search(r"PIPE_STAGES\s*(: tl.constexpr)?\s*=\s*3\b", code))
loop = code[code.index("for it in tl.range(0, n_iter"):code.index("# ---- stage 1 of the reduction")]
result["coef_loads_in_loop"] = ("tl.load(A" in loop) or ("tl.load(B" in loop)
result["divisions_in_loop"] = sum(" / " in ln for ln in loop.splitlines() if not ln.strip().startswith("#"))
# (1b) the same graph with ROW_SUM (each row block's terms summed over its rows into (1, BLOCK_C)
#      accumulators), pipelined and `while`
result["row_sum_errs"], result["row_sum_code"] = [], []
for cfg in ((4, 64, 4, 3, 3, 0, 1), (8, 64, 4, 1, 0, 0, 1)):
    bw._state["configs"] = [cfg]
    torch._dynamo.reset()
    out, codes = run_and_get_code(torch.compile(f, backend="inductor", fullgraph=True), *args)
    code = "\n".join(codes)
    result["row_sum_errs"] += case_errors(out)
    result["row_sum_code"].append(["acc1 += tl.sum(gq * x1, 0, keep_dims=True)" in code,
                                   "acc0 = tl.zeros((1, BLOCK_C), ACC_TYPE)" in code, "tl.fma(gq, x1, acc1)" in code])

# (1c) LANES loops (ROW_SUM 2: VEC adjacent channels of one group per thread, VEC 4 in float32 and 8
#      in bf16) at 192 channels (a ragged last 128-wide tile), zeros of both signs: pipelined with the
#      row blocks walked from the last (the default), `while`, and pipelined walked forwards
#      (ROWS_REVERSED off, also the other loops' order before it)
lcases = [("safe", "kat", 1, 8, 6, 4), ("safe", "torch", 8, 8, 6, 4), ("signed", "kat", 4, 4, 6, 4),
          ("abs_sum", "kat", 8, 1, 6, 4)]
lf = graph_of(lcases)
result["lanes_errs"], result["lanes_code"] = [], []
for dt in (torch.float32, torch.bfloat16):
    largs = []
    for form, zs, gn, gd, m, n in lcases:
        x = torch.randn(3, 11, 192)
        x[0, 0, :5] = 0.0
        x[0, 1, :5] = -0.0
        a, b = coefficients(m, n, gn, gd, form=form, zeros=True)
        largs += [(torch.rand(3, 11, 192) + 0.5).to(dt), x.to(dt), a, b]
    for cfg, rev in (((4, 64, 4, 3, 3, 0, 2), True), ((8, 128, 4, 1, 0, 0, 2), True), ((4, 64, 4, 3, 3, 0, 2), False)):
        bw._state["configs"] = [cfg]
        bw._ROWS_REVERSED = rev
        torch._dynamo.reset()
        out, codes = run_and_get_code(torch.compile(lf, backend="inductor", fullgraph=True), *largs)
        code = "\n".join(codes)
        result["lanes_errs"].append([str(dt), case_errors(out, lcases, largs)])
        result["lanes_code"].append([bool(re.search(r"ROW_SUM\s*(: tl.constexpr)?\s*=\s*2\b", code)),
                                     "tl.reshape(x, (BLOCK_R, BLOCK_C // VEC, VEC))" in code,
                                     "blk = pid_p + it * NPROG_RUN" in code])
bw._ROWS_REVERSED = True

# (2) training step: x * 2 -> rational -> + 1 forward fused (Triton), bf16 x, dynamic batch
bw._state["configs"] = [(8, 64, 4, 1)]
a, b = coefficients(6, 4, 1, 8, kind="gelu")
def g(x, a, b):
    return fk.rational(x * 2.0, a, b, form="safe", zero_sign="kat") + 1.0
compiled = torch.compile(g, backend="inductor", fullgraph=True)
train = []
for batch in (4, 6):
    x = torch.randn(batch, 7, 64)
    xr, ar, br = (t.clone().requires_grad_() for t in (x, a, b))
    torch._dynamo.mark_dynamic(xr, 0)
    dy = torch.rand(x.shape) + 0.5
    def step():
        y = compiled(xr, ar, br)
        y.backward(dy)
        return y
    y, c2 = run_and_get_code(step)
    ref = reference_backward(dy, 2 * x, a, b, "safe", "kat")
    train.append([rel_err(y, reference_forward(2 * x, a, b, "safe") + 1), rel_err(xr.grad, 2 * ref[0]),
                  rel_err(ar.grad, ref[1]), rel_err(br.grad, ref[2])])
    if batch == 4:
        fwd_code, bwd_code = c2
        result["fwd_kernels"] = sorted(set(re.findall(r"def (triton_\w+)\(", fwd_code)))
        result["fwd_2d"] = "YBLOCK" in fwd_code and "ynumel" in fwd_code
        result["fwd_grouped"] = "((xindex // 8) % 8)" in fwd_code and "YBLOCK" not in fwd_code
        result["bwd_template"] = sorted(set(re.findall(r"def (triton_tem_\w+)\(", bwd_code)))
        result["while_loop"] = "while row0 < R" in bwd_code
        result["dynamic_rows"] = "R = {{size(" not in bwd_code and bool(re.search(r"R = ks\d|R = \d+\*ks\d|R = 7\*ks", bwd_code))
result["train_errs"] = train
# forward.ELEMENTS_PER_THREAD at 16 (FLASHKAT_FORWARD_ELEMENTS_PER_THREAD=16; 0, Inductor's, by
# default) from 1000 elements here (1 << 22 on a GPU)
from flashkat_inductor.lowerings import forward as fw
elements_found, fw.ELEMENTS_PER_THREAD, fw._ELEMENTS_MIN_NUMEL = fw.ELEMENTS_PER_THREAD, 16, 1000
def elements(codes):
    return sorted(set(re.findall(r"min_elem_per_thread=(\d+)", "\n".join(codes))))
# near miss for the tiling hook: a pointwise kernel without the rational keeps Inductor's 1-D tiling
_, cp = run_and_get_code(torch.compile(lambda x: torch.sin(x * 2.0) + 1.0, backend="inductor", fullgraph=True),
                         torch.randn(4, 7, 64))
result["plain_1d"] = "def triton_poi" in "\n".join(cp) and "YBLOCK" not in "\n".join(cp)
result["elements"] = {{"plain": elements(cp)}}
# and rows whose width is a multiple of forward._FLAT_BLOCK_MAX stay 1-D (loads once per thread there)
aw, bw_ = coefficients(6, 4, 1, 8, kind="gelu")
_, cw = run_and_get_code(torch.compile(lambda x, a, b: fk.rational(x, a, b, form="safe", zero_sign="kat") + 1.0,
                                       backend="inductor", fullgraph=True), torch.randn(2, 3, 2048), aw, bw_)
result["wide_1d"] = "rational_fwd" in "\n".join(cw) and "YBLOCK" not in "\n".join(cw)
result["elements"]["wide_1d"] = elements(cw)
_, cw = run_and_get_code(torch.compile(lambda x, a, b: fk.rational(x, a, b, form="safe", zero_sign="kat") + 1.0,
                                       backend="inductor", fullgraph=True), torch.randn(2, 3, 1536), aw, bw_)
result["wide_2d"] = "rational_fwd" in "\n".join(cw) and "YBLOCK" in "\n".join(cw)
result["wide_grouped"] = "((xindex // 192) % 8)" in "\n".join(cw) and "YBLOCK" not in "\n".join(cw)
result["elements"]["wide_1536"] = elements(cw)
# forward.GROUPED_RANGES: a rational realized on its own (here: no consumer to fuse with) iterates
# (*lead, G, D), the group index a range of its own, and the tiling hook leaves it 1-D
assert fw.GROUPED_RANGES and fw.EXPANDED_COEFFICIENTS  # the defaults
xg = torch.randn(2, 3, 64)
yg, cg = run_and_get_code(torch.compile(lambda x, a, b: fk.rational(x * 2.0, a, b, form="safe", zero_sign="kat"),
                                        backend="inductor", fullgraph=True), xg, aw, bw_)
cg = "\n".join(cg)
result["grouped"] = [rel_err(yg, reference_forward(2 * xg, aw, bw_, "safe")),
                     len(re.findall(r"def (triton_poi\w+)\(", cg)), "((xindex // 8) % 8)" in cg and "YBLOCK" not in cg]
result["elements"]["grouped_384"] = elements([cg])
fw.ELEMENTS_PER_THREAD = elements_found
# forward.EXPANDED_COEFFICIENTS: bf16 x at 7 x 33 x 200, every grouping and form, a zero row, fused
# into a consumer (* 3): [error, error of the exact rational rounded to bf16, then * 3 in bf16, the (k, 200) expansion kernel,
# kernels, no c // D left in the main kernel's loads, the (i // D) % G index, rows expanded]; and a bf16 rational realized
# by itself: iterated (*lead, G, D), its expansion dropped as dead code
expanded = []
for gn, gd, form, zs in ((8, 8, "safe", "kat"), (1, 8, "signed", "kat"), (8, 1, "abs_sum", "torch"),
                         (4, 4, "safe", "torch"), (1, 1, "safe", "kat")):
    ae, be = coefficients(6, 4, gn, gd, form=form, zeros=True)
    xe = torch.randn(7, 33, 200).to(torch.bfloat16)
    xe[0, 0, :3] = 0.0
    ye, ce = run_and_get_code(torch.compile(lambda x, a, b: fk.rational(x, a, b, form=form, zero_sign=zs) * 3.0,
                                            backend="inductor", fullgraph=True), xe, ae, be)
    ce = "\n".join(ce)
    rows = (6 if gn > 1 else 0) + (4 if gd > 1 else 0)
    main = ce[ce.rindex("def triton_poi"):]
    ref = 3 * reference_forward(xe, ae, be, form)
    expanded.append([rel_err(ye, ref), rel_err(reference_forward(xe, ae, be, form).to(torch.bfloat16) * 3.0, ref),
                     f"xnumel = {{rows * 200}}" in ce, len(re.findall(r"def (triton_poi\w+)\(", ce)),
                     f"// {{200 // max(gn, gd)}})" not in main,
                     f"((xindex // {{200 // max(gn, gd)}}) % {{max(gn, gd)}})" in ce, rows])
result["expanded"] = expanded
ae, be = coefficients(6, 4, 1, 8, form="safe")
xe = torch.randn(7, 33, 200).to(torch.bfloat16)
ye, ce = run_and_get_code(torch.compile(lambda x, a, b: fk.rational(x, a, b, form="safe", zero_sign="kat"),
                                        backend="inductor", fullgraph=True), xe, ae, be)
ce = "\n".join(ce)
result["bf16_alone"] = [rel_err(ye, reference_forward(xe, ae, be, "safe")), len(re.findall(r"def (triton_poi\w+)\(", ce)),
                        "((xindex // 25) % 8)" in ce]

xb = torch.randn(3, 11, 80).to(torch.bfloat16)
ab, bb = coefficients(6, 4, 1, 8, form="safe")
dyb = (torch.rand(3, 11, 80) + 0.5).to(torch.bfloat16)
o = torch.compile(lambda dy, x, a, b: torch.ops.flashkat.rational_bwd(dy, x, a, b, "safe", "torch"),
                  backend="inductor", fullgraph=True)(dyb, xb, ab, bb)
ref = reference_backward(dyb, xb, ab, bb, "safe", "torch")
result["bf16"] = [str(o[0].dtype), str(o[1].dtype)] + [rel_err(u, v) for u, v in zip(o, ref)]

# (3) the finishing reductions at an H200's program counts (at 768 channels 88 row programs at
#     the first level, 132 at the second: the workspaces hold 132 entries, the config launches 88
#     and zeroes the other 44; slabs of 32 channels per group of 96, of 64, the configs' BLOCK_C,
#     for a shared row): one layer each, the cast and sign fused into them; per-group and shared
#     numerator rows
#     (with FLASHKAT_ONE_FINISH=0: backward._ONE_FINISH, the default, is (3c))
bw._ROW_PROGRAM_LEVELS = ((128, 4), (256, 3))  # as FLASHKAT_ROW_PROGRAM_LEVELS=128x4,256x3 sets them
one_finish = result["one_finish_found"] = bw._ONE_FINISH
bw._ONE_FINISH = False
bw._state["configs"] = [(4, 64, 4, 3, 3, 0)]
row_programs = bw._row_programs
bw._row_programs = lambda device, R, C_hint, level=bw._ROW_PROGRAM_LEVELS[0]: 88 if level == bw._ROW_PROGRAM_LEVELS[0] else 132
x, dy = torch.randn(2, 5, 768), torch.randn(2, 5, 768)
def kernel_names(codes):  # the Triton kernels of one compile
    return sorted(set(re.findall(r"def (triton_\w+)\(", "\n".join(codes))))
def safe_bwd_errors(outs, dy, x, a, b, zs):  # [dx, da, db] of the safe form against float64
    return [rel_err(u, v) for u, v in zip(outs, reference_backward(dy, x, a, b, "safe", zs))]
result["finish_kernels"], result["finish_errs"], result["slab"] = [], [], []
for gn in (8, 1):
    a, b = coefficients(6, 4, gn, 8, form="safe")
    o, c3 = run_and_get_code(torch.compile(lambda dy, x, a, b: torch.ops.flashkat.rational_bwd(dy, x, a, b, "safe", "kat"),
                                           backend="inductor", fullgraph=True), dy, x, a, b)
    result["finish_kernels"].append(kernel_names(c3))
    result["finish_hints"] = result.get("finish_hints", []) + re.findall(r"reduction_hint=ReductionHint\.(\w+)", "\n".join(c3))
    result["slab"].append([re.findall("SLAB_" + w + r" : tl.constexpr = (\d+)", "\n".join(c3))[:1] for w in ("NUM", "DEN")])
    result["nprog"] = result.get("nprog", []) + [re.findall(r"NPROG(?:_RUN)? : tl.constexpr = \d+", "\n".join(c3))[:2]]
    result["finish_errs"] += safe_bwd_errors(o, dy, x, a, b, "kat")
bw._row_programs = row_programs
# (3c) backward._ONE_FINISH: both finishing sums as one reduction, the two gradients views of its
#      output (per-group rows, zero_sign "torch" and zero coefficients; a shared numerator row), and
#      through autograd twice (the second step accumulates into the views)
bw._ONE_FINISH = True
result["one_finish"] = []
for gn, zs in ((8, "torch"), (1, "kat")):
    a, b = coefficients(6, 4, gn, 8, form="safe", zeros=True)
    torch._dynamo.reset()
    o, c3 = run_and_get_code(torch.compile(lambda dy, x, a, b: torch.ops.flashkat.rational_bwd(dy, x, a, b, "safe", zs),
                                           backend="inductor", fullgraph=True), dy, x, a, b)
    result["one_finish"].append([kernel_names(c3), safe_bwd_errors(o, dy, x, a, b, zs),
                                 o[1].untyped_storage().data_ptr() == o[2].untyped_storage().data_ptr()])
xa = x.clone().requires_grad_()
aa, ba = (t.clone().requires_grad_() for t in coefficients(6, 4, 8, 8, form="safe"))
step_fn = torch.compile(lambda x, a, b: fk.rational(x, a, b, form="safe", zero_sign="kat"), backend="inductor")
for _ in range(2):
    step_fn(xa, aa, ba).backward(dy)
ref = reference_backward(dy, x, aa.detach(), ba.detach(), "safe", "kat")
result["one_finish_autograd"] = [rel_err(u, 2 * v) for u, v in zip((xa.grad, aa.grad, ba.grad), ref)]
bw._ONE_FINISH = one_finish
# (3b) slabs at KAT's 3072 channels (the limit 4096, the default) with a ROW_SUM loop: 64-channel
#      slabs for the shared numerator row and each group of 384, bf16
#      (and per-group numerator rows in float32)
slab_max = bw._SLAB_MAX_CHANNELS
bw._SLAB_MAX_CHANNELS, bw._state["configs"] = 4096, [(8, 128, 4, 3, 3, 0, 1), (4, 64, 4, 1, 0, 0, 0)]
result["slab_3072"], result["slab_3072_kernels"], result["slab_3072_errs"] = [], [], []
for gn, dt3 in ((1, torch.bfloat16), (8, torch.float32)):
    x3, dy3 = torch.randn(2, 3, 3072).to(dt3), torch.randn(2, 3, 3072).to(dt3)
    a3, b3 = coefficients(6, 4, gn, 8, form="safe")
    torch._dynamo.reset()
    o, c3 = run_and_get_code(torch.compile(lambda dy, x, a, b: torch.ops.flashkat.rational_bwd(dy, x, a, b, "safe", "kat"),
                                           backend="inductor", fullgraph=True), dy3, x3, a3, b3)
    result["slab_3072"].append([re.findall("SLAB_" + w + r" : tl.constexpr = (\d+)", "\n".join(c3))[:1] for w in ("NUM", "DEN")])
    result["slab_3072_kernels"].append(kernel_names(c3))
    result["slab_3072_errs"].append(safe_bwd_errors(o, dy3, x3, a3, b3, "kat"))
bw._SLAB_MAX_CHANNELS = slab_max

# (4) dx written over dy where nothing reads dy afterwards (no dx-sized buffer of its own): dy
#     computed in the graph, this backward its only reader; declined where dy has another reader,
#     where dy is a graph input and where a pointwise op reads dx (an epilogue is worth more)
#     (x and dy prefetched into registers two row blocks ahead: the next blocks' dy is read before
#     this block's dx is written over its own)
from torch._dynamo.utils import counters
bw._state["configs"] = [(4, 64, 4, 1, -2)]
a, b = coefficients(6, 4, 8, 8, form="safe")
x, dy0 = torch.randn(7, 33, 200), torch.randn(7, 33, 200)
x[0, 0, :7] = 0.0
def only_reader(dy0, x, a, b):
    return torch.ops.flashkat.rational_bwd(dy0 * 2.0, x, a, b, "safe", "kat")
def second_reader(dy0, x, a, b):
    dy = dy0 * 2.0
    return (*torch.ops.flashkat.rational_bwd(dy, x, a, b, "safe", "kat"), dy.sum(0))
def graph_input(dy0, x, a, b):
    return torch.ops.flashkat.rational_bwd(dy0, x, a, b, "safe", "kat")
def epilogue(dy0, x, a, b):
    dx, da, db = torch.ops.flashkat.rational_bwd(dy0 * 2.0, x, a, b, "safe", "kat")
    return dx * 3.0 + 1.0, da, db
ref = reference_backward(dy0 * 2.0, x, a, b, "safe", "kat")
result["into_grad"] = {{}}
for fn in (only_reader, second_reader, graph_input, epilogue):
    counters.clear()
    o, c5 = run_and_get_code(torch.compile(fn, backend="inductor", fullgraph=True), dy0, x, a, b)
    want = list(ref) if fn is not graph_input else list(reference_backward(dy0, x, a, b, "safe", "kat"))
    if fn is epilogue:
        want[0] = want[0] * 3.0 + 1.0
    errs = [rel_err(u, v) for u, v in zip(o, want)]
    if fn is second_reader:  # dy itself, read after the backward: not overwritten
        errs.append(rel_err(o[3], (dy0 * 2.0).sum(0)))
    code5 = "\n".join(c5)
    result["into_grad"][fn.__name__] = [counters["flashkat"]["bwd_dx_into_grad"],
                                       code5.count("empty_strided_cpu((7, 33, 200)"), errs]
    result["prefetched"] = result.get("prefetched", True) and "dy_n1 = tl.load(" in code5
# (5) a KAN MLP (rational -> linear -> rational -> linear) under the flashkat backend: both
#     backward templates write over dy (the matmuls' outputs), gradients equal eager
from helpers import RationalAct, module_grads
import flashkat_inductor.backend  # noqa: F401
mlp = torch.nn.Sequential(RationalAct(), torch.nn.Linear(32, 128), RationalAct(), torch.nn.Linear(128, 32))
xm = torch.randn(3, 5, 32, requires_grad=True)
wm = torch.linspace(-1, 1, xm.numel()).view_as(xm)
ref = module_grads(mlp, mlp, xm, wm)
counters.clear()
got = module_grads(torch.compile(mlp, backend="flashkat"), mlp, xm, wm)
result["mlp_into_grad"] = [counters["flashkat"]["bwd_dx_into_grad"], [rel_err(u, v) for u, v in zip(got, ref)]]
print("RESULT" + json.dumps(result))
"""


def test_triton_template_on_cpu_interpreter():
    res = run_result_script(_TEMPLATE_SCRIPT.format(tests=HERE), TRITON_INTERPRET="1")
    assert not res["eager_bwd"]
    assert res["pipelined_loop"] and res["while_loop"], res
    assert not res["coef_loads_in_loop"], "coefficients must be loaded once per program, not per element"
    assert res["divisions_in_loop"] == 1, res["divisions_in_loop"]  # one reciprocal per element
    # the dx epilogue (* 3 + 1) is inside the template kernel
    assert any("add" in k and "mul" in k and "rational_bwd" in k for k in res["template_kernels"]), res
    for e in res["bwd_errs"]:
        assert max(e) <= F32_BOUND, res["bwd_errs"]
    # ROW_SUM: every form and layout as exact, (1, BLOCK_C) accumulators summed per row block
    assert len(res["row_sum_errs"]) == 10 and max(max(e) for e in res["row_sum_errs"]) <= F32_BOUND, res["row_sum_errs"]
    assert res["row_sum_code"] == [[True, True, False]] * 2, res["row_sum_code"]
    # LANES: as exact in float32; in bf16 dx rounded once (2^-9), the coefficient sums in float32;
    # the row blocks walked from the last in the pipelined loop by default, forwards without
    assert [d for d, _ in res["lanes_errs"]] == ["torch.float32"] * 3 + ["torch.bfloat16"] * 3, res["lanes_errs"]
    for dt, errs in res["lanes_errs"]:
        bounds = [F32_BOUND] * 3 if dt == "torch.float32" else [1e-2, 1e-5, 1e-5]
        assert len(errs) == 4 and all(e <= t for case in errs for e, t in zip(case, bounds)), (dt, errs)
    assert res["lanes_code"] == [[True, True, True], [True, True, False], [True, True, False]] * 2, res["lanes_code"]
    # forward: x * 2, the rational and + 1 in one Triton kernel; backward through the template
    fwd = [k for k in res["fwd_kernels"] if "rational_fwd" in k]
    assert len(fwd) == 1 and "add" in fwd[0] and "mul" in fwd[0] and len(res["fwd_kernels"]) == 1, res
    # bf16, fused into a consumer: the grouped coefficient rows are read expanded over the channels
    # (one extra k x C kernel); realized by itself: (*lead, G, D), one kernel
    for err, rounding, expansion_kernel, n_kernels, no_group_division, grouped_index, rows in res["expanded"]:
        assert err <= 2 * rounding + 1e-6, res["expanded"]
        if not rows:
            assert (expansion_kernel, n_kernels) == (False, 1), res["expanded"]
        elif expansion_kernel:  # torch 2.13+: the consumer inlines the rational, which reads expanded rows
            assert n_kernels == 2 and no_group_division, res["expanded"]
        else:  # torch 2.11: the view realizes the (*lead, G, D) rational and the consumer fuses with its kernel
            assert n_kernels == 1 and grouped_index, res["expanded"]
    err, n_kernels, grouped_index = res["bf16_alone"]
    assert err <= 1e-2 and n_kernels == 1 and grouped_index, res["bf16_alone"]
    # fused into a consumer: tiled rows x channels (forward.ND_TILING) unless C is a multiple of 1024
    # (2048: 1-D, 1536: 2-D), while other pointwise kernels keep Inductor's choice.  (torch 2.11's view
    # realizes the (*lead, G, D) rational instead, and the consumer fuses with its 1-D grouped kernel.)
    assert (res["fwd_2d"] or res["fwd_grouped"]) and (res["wide_2d"] or res["wide_grouped"]), res
    assert res["plain_1d"] and res["wide_1d"], res
    # 16 elements per thread asked for by the 1-D rational kernels of 1000 elements or more only
    # (2 x 3 x 2048, and 2 x 3 x 1536 where torch 2.11 iterates it by groups), not by a kernel
    # without the rational, 2-D tiles (1536 on 2.13+), nor 2 x 3 x 64
    elements = res["elements"]
    assert elements["plain"] == ["0"] and elements["wide_1d"] == ["16"] and elements["grouped_384"] == ["0"], elements
    assert elements["wide_1536"] == (["16"] if res["wide_grouped"] else ["0"]), elements
    err, n_kernels, grouped_index = res["grouped"]
    assert err <= F32_BOUND and n_kernels == 1 and grouped_index, res["grouped"]
    assert res["bwd_template"], res
    assert res["dynamic_rows"], res
    for e in res["train_errs"]:
        assert max(e) <= F32_BOUND, res["train_errs"]
    assert res["bf16"][:2] == ["torch.bfloat16", "torch.float32"]
    assert max(res["bf16"][2:]) <= 1e-2, res["bf16"]
    # one template launch, then one one-layer reduction per coefficient tensor over the template's
    # (program, slab) sums: the sign of b and the casts are fused into them, no kernel of their own
    assert res["slab"] == [[["32"], ["32"]], [["64"], ["32"]]], res["slab"]  # per group: D = 96; shared: C = 768
    assert res["nprog"] == [["NPROG : tl.constexpr = 132", "NPROG_RUN : tl.constexpr = 88"]] * 2, res["nprog"]
    # programs fastest in the slab workspaces: each output's sum is one contiguous run (inner),
    # not an outer reduction, which Inductor runs on one program for a few dozen outputs
    assert res["finish_hints"] and set(res["finish_hints"]) == {"INNER"}, res["finish_hints"]
    for fin in res["finish_kernels"]:
        assert sum(k.startswith("triton_tem_") for k in fin) == 1, fin
        assert sum(k.startswith("triton_red_") or k.startswith("triton_per_") for k in fin) == len(fin) - 1 == 2, fin
    assert max(res["finish_errs"]) <= F32_BOUND, res["finish_errs"]
    # backward._ONE_FINISH: one finishing kernel for both coefficient tensors, whose gradients share
    # its output buffer; exact through autograd too
    for kernels, errs, shared_storage in res["one_finish"]:
        assert sum(k.startswith("triton_tem_") for k in kernels) == 1 and len(kernels) == 2, kernels
        assert max(errs) <= F32_BOUND and shared_storage, res["one_finish"]
    assert max(res["one_finish_autograd"]) <= F32_BOUND, res["one_finish_autograd"]
    assert res["slab_3072"] == [[["64"], ["64"]]] * 2, res["slab_3072"]
    for fin in res["slab_3072_kernels"]:  # one finishing kernel for both (ONE_FINISH), else one each
        assert sum(k.startswith("triton_tem_") for k in fin) == 1 and len(fin) == (2 if res["one_finish_found"] else 3), fin
    # bf16: dx rounded once, the coefficient gradients summed in float32 from bf16 inputs
    e_bf16, e_f32 = res["slab_3072_errs"]
    assert e_bf16[0] <= 1e-2 and max(e_bf16[1:]) <= 1e-5, e_bf16
    assert max(e_f32) <= F32_BOUND, e_f32
    # dx over dy: only where nothing else reads dy (one (7, 33, 200) buffer: dy's, then dx's)
    into = res["into_grad"]
    assert res["prefetched"]  # these ran the loop that prefetches x and dy into registers
    assert into["only_reader"][:2] == [1, 1], into
    for name in ("second_reader", "graph_input", "epilogue"):
        assert into[name][0] == 0, into
    assert into["second_reader"][1] == 2 and into["epilogue"][1] == 2, into
    for name, (_, _, errs) in into.items():
        assert max(errs) <= F32_BOUND, (name, errs)
    n_into, errs = res["mlp_into_grad"]
    assert n_into == 2 and max(errs) <= 1e-5, res["mlp_into_grad"]


# ============================================================================
# CUDA: the real template (skipped without a GPU)
# ============================================================================
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
def test_cuda_template_numerics_autotune_epilogue():
    cases = []
    for form, zs, (gn, gd) in [("safe", "torch", (1, 8)), ("safe", "kat", (8, 8)), ("signed", "kat", (8, 1)),
                               ("abs_sum", "torch", (1, 1)), ("abs_sum", "kat", (8, 8))]:
        x = torch.randn(7, 33, 200, device="cuda")
        x[0, 0, :7] = 0.0
        a, b = coefficients(6, 4, gn, gd, form=form, device="cuda", zeros=True)
        cases.append((x, a, b, form, zs))
    for m, n in [(1, 1), (8, 8)]:
        x = torch.randn(7, 33, 200, device="cuda")
        a, b = coefficients(m, n, 8, 8, device="cuda")
        cases.append((x, a, b, "safe", "kat"))
    args = []
    for x, a, b, _, _ in cases:
        args += [uniform_grad(x.shape, device="cuda"), x, a, b]
    specs = [(c[3], c[4]) for c in cases]

    def f(*flat):
        outs = []
        for i, (form, zs) in enumerate(specs):
            dy, x, a, b = flat[4 * i : 4 * i + 4]
            dx, da, db = torch.ops.flashkat.rational_bwd(dy, x, a, b, form, zs)
            outs += [dx * 3.0 + 1.0, da, db]
        return outs

    out, codes = compile_and_run(f, *args)
    code = "\n".join(codes)
    assert_no_eager_op(code)
    tem = set(re.findall(r"def (triton_tem_\w+)\(", code))
    assert tem and all("add" in k and "mul" in k for k in tem), tem  # epilogue fused
    for i, (x, a, b, form, zs) in enumerate(cases):
        dy = args[4 * i]
        ref = reference_backward(dy, x, a, b, form, zs)
        errs = [rel_err(out[3 * i], ref[0] * 3 + 1), rel_err(out[3 * i + 1], ref[1]), rel_err(out[3 * i + 2], ref[2])]
        assert max(errs) <= F32_BOUND, (form, zs, errs)


@cuda
def test_cuda_every_template_config(monkeypatch):
    """Each configuration offered to the autotuner at each of two row-program levels, and the loops
    that prefetch x and dy into registers (not offered), forced alone and compiled by Triton's CUDA
    back end: ragged rows and channels (7 x 33 x 200 and 3 x 5 x 3072), per-group and shared rows,
    bf16 and float32, dx over dy, against float64."""
    from flashkat_inductor.lowerings import backward as bw

    # the default levels, ROW_SUM's too (the LANES loops: test_cuda_lanes_configs)
    configs = [c for c in bw._template_configs(3072, torch.float32, 10) if c[6] != 2]
    monkeypatch.setattr(bw, "_ROW_PROGRAM_LEVELS", ((128, 4), (256, 3)))
    configs += [(4, 256, 4, 3, 3, 1, 0), (4, 128, 4, 4, 4, 1, 0), (4, 256, 4, 1, -1, 0, 0), (2, 256, 4, 1, -2, 1, 0)]
    assert {c[4] > 0 for c in configs} == {True, False} and {c[5] for c in configs} >= {0, 1}
    assert {c[6] for c in configs} == {0, 1}
    cases = []
    for shape, (gn, gd), dt in [((7, 33, 200), (8, 8), torch.float32), ((7, 33, 200), (1, 8), torch.bfloat16),
                                ((3, 5, 3072), (1, 8), torch.bfloat16)]:
        x = torch.randn(*shape, device="cuda").to(dt)
        x[0, 0, :7] = 0.0
        a, b = coefficients(6, 4, gn, gd, form="safe", device="cuda", zeros=True)
        cases.append((uniform_grad(shape, dt, device="cuda"), x, a, b))

    def f(dy0, x, a, b):  # dy computed in the graph and read by the backward alone: dx over dy
        return torch.ops.flashkat.rational_bwd(dy0 * 2.0, x, a, b, "safe", "kat")

    try:
        for cfg in configs:
            bw._state["configs"] = [cfg]
            for dy0, x, a, b in cases:
                torch._dynamo.reset()
                out = torch.compile(f, backend="inductor", fullgraph=True)(dy0, x, a, b)
                ref = reference_backward(dy0 * 2.0, x, a, b, "safe", "kat")
                # bf16: dx rounded once (2^-9); the coefficient gradients summed in float32
                bounds = [F32_BOUND] * 3 if x.dtype == torch.float32 else [1e-2, 1e-5, 1e-5]
                errs = [rel_err(u, v) for u, v in zip(out, ref)]
                assert out[0].dtype == x.dtype and all(e <= t for e, t in zip(errs, bounds)), \
                    (cfg, tuple(x.shape), x.dtype, errs)
    finally:
        bw._state.pop("configs", None)


@cuda
def test_cuda_lanes_configs():
    """The LANES loops (ROW_SUM 2: VEC adjacent channels per thread), each forced alone and compiled
    by Triton's CUDA back end, at both ROW_SUM levels: ragged rows, a ragged last channel tile
    (192 channels), KAT's 3072, per-group and shared rows, zeros of both signs, bf16 / fp16 /
    float32, dx over dy and dx through an epilogue, against float64."""
    from torch._inductor.utils import run_and_get_code

    from flashkat_inductor.lowerings import backward as bw

    configs = [c for c in bw._template_configs(3072, torch.float32, 10) if c[6] == 2]
    assert len(configs) == len(bw._LANES_BASE) * len(bw._ROW_SUM_LEVELS) and configs
    cases = []
    for shape, (gn, gd), dt in [((7, 33, 192), (8, 8), torch.float32), ((7, 33, 192), (1, 8), torch.bfloat16),
                                ((3, 5, 3072), (8, 8), torch.float16), ((3, 5, 3072), (1, 8), torch.bfloat16)]:
        x = torch.randn(*shape, device="cuda").to(dt)
        x[0, 0, :7] = 0.0
        x[0, 1, :7] = -0.0
        a, b = coefficients(6, 4, gn, gd, form="safe", device="cuda", zeros=True)
        cases.append((uniform_grad(shape, dt, device="cuda"), x, a, b))

    def over_dy(dy0, x, a, b):  # dy computed in the graph and read by the backward alone: dx over dy
        return torch.ops.flashkat.rational_bwd(dy0 * 2.0, x, a, b, "safe", "kat")

    def epilogue(dy0, x, a, b):
        dx, da, db = torch.ops.flashkat.rational_bwd(dy0, x, a, b, "safe", "kat")
        return dx * 2.0, da, db

    try:
        for cfg in configs:
            bw._state["configs"] = [cfg]
            for i, (dy0, x, a, b) in enumerate(cases):
                f = over_dy if i % 2 else epilogue
                torch._dynamo.reset()
                out, codes = run_and_get_code(torch.compile(f, backend="inductor", fullgraph=True), dy0, x, a, b)
                assert re.search(r"ROW_SUM\s*(: tl.constexpr)?\s*=\s*2", "\n".join(codes)), cfg
                ref = reference_backward(dy0 * 2.0 if i % 2 else dy0, x, a, b, "safe", "kat")
                ref = (ref[0] if i % 2 else 2.0 * ref[0], ref[1], ref[2])
                bounds = [F32_BOUND] * 3 if x.dtype == torch.float32 else [1e-2, 1e-5, 1e-5]
                errs = [rel_err(u, v) for u, v in zip(out, ref)]
                assert out[0].dtype == x.dtype and all(e <= t for e, t in zip(errs, bounds)), \
                    (cfg, tuple(x.shape), x.dtype, errs)
    finally:
        bw._state.pop("configs", None)


@cuda
def test_cuda_training_dynamic_batch_bf16_and_forward_fusion():
    a, b = coefficients(6, 4, 1, 8, kind="gelu", device="cuda")

    def g(x, a, b):
        return fk.rational(x * 2.0, a, b, form="safe", zero_sign="kat") + 1.0

    compiled = torch.compile(g, backend="inductor", fullgraph=True)
    from torch._inductor.utils import run_and_get_code

    for batch in (8, 24):
        x = torch.randn(batch, 197, 192, device="cuda")
        xr, ar, br = leaves(x, a, b)
        torch._dynamo.mark_dynamic(xr, 0)
        dy = uniform_grad(x.shape, device="cuda")

        def step():
            y = compiled(xr, ar, br)
            y.backward(dy)
            return y

        y, codes = run_and_get_code(step) if batch == 8 else (step(), None)
        ref = reference_backward(dy, 2 * x, a, b, "safe", "kat")
        errs = [rel_err(y, reference_forward(2 * x, a, b, "safe") + 1), rel_err(xr.grad, 2 * ref[0]),
                rel_err(ar.grad, ref[1]), rel_err(br.grad, ref[2])]
        assert max(errs) <= F32_BOUND, (batch, errs)
        if codes:
            fwd, bwd = codes
            fk_fwd = [k for k in re.findall(r"def (triton_\w+)\(", fwd) if "rational_fwd" in k]
            assert len(fk_fwd) == 1 and "mul" in fk_fwd[0] and "add" in fk_fwd[0], fk_fwd
            assert re.search(r"def triton_tem_\w*rational_bwd", bwd)
            assert_no_eager_op(fwd + bwd)

    # bf16 end to end
    xb = torch.randn(16, 197, 384, device="cuda", dtype=torch.bfloat16)
    ab, bb = coefficients(6, 4, 1, 8, form="safe", device="cuda")
    dyb = uniform_grad(xb.shape, torch.bfloat16, device="cuda")
    xr, ar, br = leaves(xb, ab, bb)
    y = torch.compile(lambda x, a, b: fk.rational(x, a, b, form="safe", zero_sign="torch"),
                      backend="inductor", fullgraph=True)(xr, ar, br)
    y.backward(dyb)
    ref_y = reference_forward(xb, ab, bb, "safe")
    ref_g = reference_backward(dyb, xb, ab, bb, "safe", "torch")
    xl, al, bl = (t.detach().to(torch.bfloat16).requires_grad_() for t in (xb, ab, bb))
    yl = naive_lowp(xl, al, bl, "safe")
    yl.backward(dyb)
    base = [rel_err(yl, ref_y)] + [rel_err(u, v) for u, v in zip((xl.grad, al.grad, bl.grad), ref_g)]
    ours = [rel_err(y, ref_y)] + [rel_err(u, v) for u, v in zip((xr.grad, ar.grad, br.grad), ref_g)]
    assert y.dtype == torch.bfloat16 and xr.grad.dtype == torch.bfloat16
    for name, o, bb_ in zip(("y", "dx", "dnum", "dden"), ours, base):
        assert o <= 2 * bb_, (name, o, bb_)


@cuda
def test_cuda_dx_written_over_dy():
    """Where nothing reads dy after the backward, the template writes dx over dy's buffer (no
    dx-sized allocation; the peak of a KAT training step was that allocation): a KAN MLP's two
    rationals under the flashkat backend, bf16 and float32, gradients against eager; and dy with
    a second reader keeps its values."""
    import flashkat_inductor.backend  # noqa: F401
    from torch._dynamo.utils import counters

    for dtype, bound in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        torch.manual_seed(0)
        mlp = torch.nn.Sequential(fk.GroupRational(8), torch.nn.Linear(96, 384), fk.GroupRational(8),
                                  torch.nn.Linear(384, 96)).cuda().to(dtype)
        x = torch.randn(16, 197, 96, device="cuda", dtype=dtype, requires_grad=True)
        w = torch.randn(16, 197, 96, device="cuda", dtype=dtype)
        ref = module_grads(mlp, mlp, x, w)
        torch._dynamo.reset()
        counters.clear()
        got = module_grads(torch.compile(mlp, backend="flashkat"), mlp, x, w)
        assert counters["flashkat"]["bwd_dx_into_grad"] == 2, dict(counters["flashkat"])
        errs = [rel_err(u, v) for u, v in zip(got, ref)]
        assert max(errs) <= bound, (dtype, errs)

    a, b = coefficients(6, 4, 8, 8, form="safe", device="cuda")
    x, dy0 = torch.randn(7, 33, 200, device="cuda"), torch.randn(7, 33, 200, device="cuda")

    def second_reader(dy0, x, a, b):
        dy = dy0 * 2.0
        return (*torch.ops.flashkat.rational_bwd(dy, x, a, b, "safe", "kat"), dy.sum(0))

    counters.clear()
    out, _ = compile_and_run(second_reader, dy0, x, a, b)
    assert counters["flashkat"]["bwd_dx_into_grad"] == 0
    ref = reference_backward(dy0 * 2.0, x, a, b, "safe", "kat")
    errs = [rel_err(u, v) for u, v in zip(out, ref)] + [rel_err(out[3], (dy0 * 2.0).sum(0))]
    assert max(errs) <= F32_BOUND, errs


@cuda
def test_cuda_forward_division():
    """The forward's CUDA division (y = p * rcp.approx(q), forward.FAST_DIVISION) in every form,
    float32 / bf16 / fp16, 7 x 33 x 200 against float64, the rational alone and fused with a
    consumer; then the values where 1 / q is subnormal (q > 2^126, |x| about 3e9 to 4e9), q = inf,
    inf and nan: the same infinities, nans and (finite) values as the exact quotient."""
    for form, dt in itertools.product(FORMS, (torch.float32, torch.bfloat16, torch.float16)):
        torch.manual_seed(0)
        x = torch.randn(7, 33, 200, device="cuda").to(dt)
        a, b = coefficients(6, 4, 1, 8, form=form, device="cuda")
        (y, z), codes = compile_and_run(
            lambda x, a, b: (torch.ops.flashkat.rational_fwd(x, a, b, form, "kat"),
                             torch.ops.flashkat.rational_fwd(x * 2, a, b, form, "kat") + 1), x, a, b)
        fast = form != "signed"
        assert ("rcp.approx.ftz.f32" in "".join(codes)) == fast, (form, dt)
        refs = reference_forward(x, a, b, form), reference_forward(x * 2, a, b, form) + 1
        errs = rel_err(y, refs[0]), rel_err(z, refs[1])
        if dt == torch.float32:
            assert max(errs) <= F32_BOUND, (form, errs)
        else:  # at most 2x the error of the naive computation in that dtype
            base = rel_err(naive_lowp(x, a, b, form), refs[0]), rel_err(naive_lowp(x * 2, a, b, form) + 1, refs[1])
            assert errs[0] <= 2 * base[0] and errs[1] <= 2 * base[1], (form, dt, errs, base)
    # the range 1 / q cannot reach (rcp.approx.ftz flushes a subnormal 1 / q to 0)
    a = torch.tensor([[0.5, 1.0, -0.5, 0.25, 0.125, 1.0]], device="cuda")  # m = 6: p = inf there
    b = torch.tensor([[0.5, 0.25, 0.5, 1.0]], device="cuda")
    vals = [3.0e9, -3.2e9, 3.5e9, 3.9e9, 4.1e9, 5e9, 1e30, float("inf"), float("-inf"), float("nan"), 1.0, -2.0]
    for m in (6, 5):
        x = torch.tensor(vals, device="cuda").reshape(1, -1).repeat(8, 1)
        am = a[:, :m].contiguous()
        (y,), _ = compile_and_run(lambda x, a, b: (torch.ops.flashkat.rational_fwd(x, a, b, "safe", "kat"),),
                                  x, am, b)
        exact = torch_impl.forward(x, am, b, "safe")  # Horner in float32, then the exact quotient p / q
        assert torch.equal(torch.isnan(y), torch.isnan(exact)), (m, y[0], exact[0])
        assert torch.equal(torch.isinf(y), torch.isinf(exact)) and torch.equal(y[torch.isinf(y)], exact[torch.isinf(y)])
        fin = torch.isfinite(exact)
        torch.testing.assert_close(y[fin], exact[fin], rtol=1e-6, atol=0)
