"""Every Triton kernel of the project compiles for sm_90 (H100 / H200), on a machine without a GPU.

The Triton interpreter, which runs the kernels in CI, accepts programs the real
compiler rejects; these tests run Triton's CUDA back end down to a cubin
(tests/sm90_compile.py, in processes without ``TRITON_INTERPRET``):

- the project's own kernels (triton_kernels.py) over their constexpr matrix:
  orders, forms, sign conventions, storage dtypes, tile shapes, persistent grids,
  and the backward's stage-2 kernel (shared or per-group rows, output dtypes);
- the kernels Inductor generates from the project's lowerings (the backward
  template with a fused epilogue and forward, the coefficient reductions, the
  forward pointwise kernel), generated in a subprocess with Inductor's Triton
  codegen pointed at the interpreter (tests/fake_triton_cpu.py).
"""
from __future__ import annotations

import importlib.util
import os

import pytest

from helpers import run_result_script

HERE = os.path.dirname(os.path.abspath(__file__))

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton")

_GENERATE = r"""
import json, sys
sys.path.insert(0, {tests!r})
import fake_triton_cpu  # noqa: F401  (process-wide: cpu_backend="triton", a stand-in driver)
import torch
import torch._inductor.config as inductor_config
import torch._functorch.config as functorch_config
inductor_config.fx_graph_cache = False
functorch_config.enable_autograd_cache = False
import flashkat_inductor  # noqa: F401
from flashkat_inductor.lowerings import backward as bw
from flashkat_inductor.lowerings import register_lowerings
from helpers import coefficients
from torch._inductor.utils import run_and_get_code

register_lowerings()
bw._state["configs"] = [(4, 128, 4, 4, 4)]  # the template's pipelined `for` (the `while` below)
torch.manual_seed(0)
cases = [("safe", "kat", 1, 8, 6, 4, torch.float32), ("signed", "torch", 4, 4, 5, 3, torch.bfloat16),
         ("abs_sum", "kat", 1, 1, 8, 8, torch.float16)]
args = []
for form, zs, gn, gd, m, n, dt in cases:
    a, b = coefficients(m, n, gn, gd, form=form)
    args += [torch.rand(3, 11, 80).to(dt), torch.randn(3, 11, 80).to(dt), a, b]

def f(*flat):
    outs = []
    for i, (form, zs, *_ ) in enumerate(cases):
        dy, x, a, b = flat[4 * i: 4 * i + 4]
        dx, da, db = torch.ops.flashkat.rational_bwd(dy, x, a, b, form, zs)
        y = torch.ops.flashkat.rational_fwd(x * 2, a, b, form, zs) + 1
        outs += [dx * 3.0 + 1.0, da, db, y]
    return outs

_, codes = run_and_get_code(torch.compile(f, backend="inductor", fullgraph=True), *args)
def bwd_code(config, dy, x, a, b):  # the generated code of one backward op alone, one template config
    bw._state["configs"] = [config]
    return run_and_get_code(torch.compile(lambda dy, x, a, b: torch.ops.flashkat.rational_bwd(dy, x, a, b, "safe", "kat"),
                                          backend="inductor", fullgraph=True), dy, x, a, b)[1]

codes2 = bwd_code((8, 128, 4, 1, 0), *args[:4])
assert "tl.range(0, n_iter" in codes[0] and "while row0 < R" in codes2[0]
# KAT-T's wide rational in bf16 with the pipelined 4 x 256 tiles, inputs taken as 16-byte aligned
# as Inductor takes CUDA inputs (it never does for CPU tensors): the code an H200 compiles
import torch._inductor.graph as inductor_graph
inductor_graph.should_assume_input_aligned = lambda example: True
a, b = coefficients(6, 4, 8, 8, form="safe")
xb, dyb = torch.randn(2, 197, 768).to(torch.bfloat16), torch.randn(2, 197, 768).to(torch.bfloat16)
codes3 = bwd_code((4, 256, 4, 3, 3), dyb, xb, a, b)
# the same with KAT's shared numerator row, x and dy prefetched into registers (PIPE_STAGES = -1)
a1, _ = coefficients(6, 4, 1, 8, form="safe")
codes4 = bwd_code((4, 256, 4, 1, -1), dyb, xb, a1, b)
assert "x_n0 = tl.load(" in codes4[0]
# ROW_SUM: 8 x 128 tiles pipelined 3 deep, each row block's terms summed over its rows
codes6 = bwd_code((8, 128, 4, 3, 3, 0, 1), dyb, xb, a1, b)
assert "keep_dims=True" in codes6[0]
# ROW_SUM with 16 x 128 tiles pipelined 4 deep: the autotuner's pick at 768-3072 bf16 on the H200
codes7 = bwd_code((16, 128, 4, 4, 4, 0, 1), dyb, xb, a1, b)
assert "keep_dims=True" in codes7[0] and "BLOCK_R : tl.constexpr = 16" in codes7[0]
# LANES (ROW_SUM 2): 16 x 64 tiles over 2 warps pipelined 4 deep, 8 adjacent channels per thread
# (the H200's pick at 192-3072 bf16 since device call 52)
codes8 = bwd_code((16, 64, 2, 4, 4, 0, 2), dyb, xb, a1, b)
assert "tl.reshape(x, (BLOCK_R, BLOCK_C // VEC, VEC))" in codes8[0] and "blk = pid_p + it * NPROG_RUN" in codes8[0]
# the generated code runs here on the interpreter, which cannot run inline PTX: compile the CUDA
# variant, where the lowering sets FAST_RCP (1/q as rcp.approx.ftz.f32) for float32 compute
cuda = lambda cs: [c.replace("FAST_RCP : tl.constexpr = False", "FAST_RCP : tl.constexpr = True") for c in cs]
assert "FAST_RCP : tl.constexpr = False" in codes3[0]
# the forward's CUDA division (forward.FAST_DIVISION: inline PTX, which the interpreter cannot run),
# generated without running: the rational alone and fused with a consumer, bf16 and float32
from flashkat_inductor.lowerings import forward as fw
from torch._inductor.utils import get_code
fw._divides_fast = lambda spec, x: spec.cdt == torch.float32 and spec.form in ("safe", "abs_sum")
codes5, asm_count = [], []
for x5, form in ((xb, "safe"), (xb.float(), "abs_sum"), (xb, "signed")):
    for scale in (1.0, 2.0):  # (get_code's stand-in module returns one output)
        got = get_code(torch.compile(lambda x, a, b: torch.ops.flashkat.rational_fwd(x, a, b, form, "kat") * scale,
                                     backend="inductor", fullgraph=True), x5, a, b)
        torch._dynamo.reset()
        codes5 += got
        asm_count.append(sum(c.count("rcp.approx.ftz.f32") for c in got))
assert min(asm_count[:4]) > 0 and asm_count[4:] == [0, 0], asm_count  # signed: q may be < 1
for suffix, cs in (("", codes), (".while.py", codes2), (".bf16.py", codes3), (".prefetch.py", codes4),
                   (".rowsum.py", codes6), (".rowsum16.py", codes7), (".lanes.py", codes8), (".fastdiv.py", codes5)):
    with open({path!r} + suffix, "w") as fh:
        fh.write("\n".join(cuda(cs)))
print("RESULT" + json.dumps({{"kernels": sum(c.count("async_compile.triton(") for c in codes),
                             "kernels_while": sum(c.count("async_compile.triton(") for c in codes2)}}))
"""


def _compile(*argv) -> dict:
    code = (f"import runpy, sys\nsys.argv = {['sm90_compile.py', *argv]!r}\n"
            f"runpy.run_path({os.path.join(HERE, 'sm90_compile.py')!r}, run_name='__main__')\n")
    return run_result_script(code, drop=("TRITON_INTERPRET",))


def test_project_kernels_compile_for_sm90():
    res = _compile("project")
    assert len(res) == 36, sorted(res)  # 32 forward / backward, 4 stage-2 (finish) kernels
    assert all(v == "ok" for v in res.values()), {k: v for k, v in res.items() if v != "ok"}


def _template_registers(code_path: str) -> int:
    """Registers per thread of the one backward template kernel in a generated file (sm_90)."""
    regs = _compile("inductor-regs", code_path)
    tem = [v for k, v in regs.items() if k.startswith("triton_tem_")]
    assert len(tem) == 1 and tem[0] > 0, regs
    return tem[0]


def test_inductor_generated_kernels_compile_for_sm90(tmp_path):
    path = str(tmp_path / "generated.py")
    gen = run_result_script(_GENERATE.format(tests=HERE, path=path), TRITON_INTERPRET="1")
    assert gen["kernels"] >= 3, gen
    res = _compile("inductor", path)
    assert len(res) == gen["kernels"], (sorted(res), gen)
    assert any(k.startswith("triton_tem_") for k in res), sorted(res)  # the backward template
    assert all(v == "ok" for v in res.values()), {k: v for k, v in res.items() if v != "ok"}
    res = _compile("inductor", path + ".while.py")  # the template's `while` over row blocks
    assert len(res) == gen["kernels_while"] and any(k.startswith("triton_tem_") for k in res), sorted(res)
    assert all(v == "ok" for v in res.values()), {k: v for k, v in res.items() if v != "ok"}
    # bf16, 4 x 256 tiles, pipelined: at most 170 registers per thread, so that three 128-thread
    # programs fit on an SM (65536 registers); coefficient rows loaded as (1, BLOCK_C) tiles keep
    # it at 158, a 1-D load broadcast with [None, :] took 235 (two programs per SM)
    regs = _template_registers(path + ".bf16.py")
    assert regs <= 170, regs
    # bf16, 4 x 256 tiles with x and dy prefetched into registers, KAT's shared numerator row (the
    # loop without shared memory: 43 instructions per element against 50): three programs per SM
    regs = _template_registers(path + ".prefetch.py")
    assert regs <= 170, regs
    # ROW_SUM, bf16 8 x 128 pipelined: (1, BLOCK_C) accumulators summed in-thread over each row block
    # (64 registers at 3072 channels, 128 without ROW_SUM): eight programs per SM
    regs = _template_registers(path + ".rowsum.py")
    assert regs <= 80, regs
    # ROW_SUM, bf16 16 x 128 pipelined 4 deep (the H200's pick at 768-3072 channels): 106 registers
    # for this test's 2 x 197 rows (95 in a build with the H200's 128 x 197 rows and row programs,
    # five programs per SM; 226 there without ROW_SUM): at most 112
    regs = _template_registers(path + ".rowsum16.py")
    assert regs <= 112, regs
    # LANES, bf16 16 x 64 over 2 warps pipelined 4 deep (bench/probe_sass.py at 3072: 128 registers,
    # 47.1 instructions per element): eight 64-thread programs per SM at 128
    regs = _template_registers(path + ".lanes.py")
    assert regs <= 128, regs
    # the forward with its CUDA division (y = p * rcp.approx(q), inline PTX), alone and fused
    res = _compile("inductor", path + ".fastdiv.py")
    assert any(k.startswith("triton_poi_") for k in res), sorted(res)
    assert all(v == "ok" for v in res.values()), {k: v for k, v in res.items() if v != "ok"}
