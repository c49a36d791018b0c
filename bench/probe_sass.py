"""sm_90 instructions per element of the backward template's loop, on a machine without a GPU.

    python bench/probe_sass.py [--dtype bfloat16] [--shape 128x197x3072] [--groups 8]
                               [--config 16,128,4,4,4] [--row-sum 1] [--fast-rcp 1] [--dump F.sass]

Step 1 (a child process, Triton interpreter, tests/fake_triton_cpu.py): Inductor generates the code of
one `flashkat::rational_bwd` with one template config, the CUDA inputs' 16-byte alignment assumed.
Step 2 (a child without the interpreter): the template kernel is compiled for sm_90 with the ptxas
and nvdisasm that ship in the Triton wheel (tests/sm90_compile.py), and the SASS of its innermost
loop (the longest block ending in a backward branch) is counted by opcode.  Per element = loop
instructions x 32 lanes / (BLOCK_R x BLOCK_C / num_warps) elements per warp per trip.

Prints the counts and one RESULT line of JSON.  A proxy, never a timing: the H200 decides.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")

_GENERATE = r"""
import json, sys
sys.path.insert(0, {tests!r})
import fake_triton_cpu  # noqa: F401
import torch
import torch._inductor.config as inductor_config
import torch._functorch.config as functorch_config
inductor_config.fx_graph_cache = False
functorch_config.enable_autograd_cache = False
import torch._inductor.graph as inductor_graph
inductor_graph.should_assume_input_aligned = lambda example: True
import flashkat_inductor  # noqa: F401
from flashkat_inductor.lowerings import backward as bw
from flashkat_inductor.lowerings import register_lowerings
from helpers import coefficients
from torch._inductor.utils import run_and_get_code
register_lowerings()
cfg = {cfg!r}
level = len(bw._ROW_PROGRAM_LEVELS) if cfg[-1] else 0
bw._state["configs"] = [tuple(cfg[:5]) + (level, cfg[-1])]
bw._state["fast_rcp"] = False  # the interpreter cannot run its inline PTX: set in the code after (--fast-rcp)
shape, dt = {shape!r}, getattr(torch, {dtype!r})
a, b = coefficients(6, 4, {groups}, {groups}, form="safe")
x, dy = torch.randn(*shape).to(dt), torch.randn(*shape).to(dt)
code = run_and_get_code(torch.compile(lambda dy, x, a, b: torch.ops.flashkat.rational_bwd(dy, x, a, b, "safe", "kat"),
                                      backend="inductor", fullgraph=True), dy, x, a, b)[1][0]
open({out!r}, "w").write(code)
print("RESULT" + json.dumps({{"ok": True}}))
"""


def _generate(args, path: str) -> None:
    cfg = [int(v) for v in args.config.split(",")] + [args.row_sum]
    shape = [int(v) for v in args.shape.split("x")]
    code = _GENERATE.format(tests=TESTS, cfg=cfg, shape=shape, dtype=args.dtype,
                            groups=args.groups, out=path)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=ROOT + os.pathsep + TESTS)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if "RESULT" not in proc.stdout:
        raise SystemExit(f"code generation failed:\n{proc.stderr[-4000:]}")


def _compile_template(smc, code_path: str, fast_rcp: bool):
    """The template kernel of the generated code, compiled for sm_90 (tests/sm90_compile.py)."""
    import triton
    from triton.compiler import ASTSource

    code = open(code_path).read()
    if fast_rcp:
        code, n = re.subn(r"FAST_RCP : tl\.constexpr = (0|False)", "FAST_RCP : tl.constexpr = 1", code)
        assert n, "no FAST_RCP define in the generated code"
    for name, _, meta, fn in smc.kernels(code):
        if not name.startswith("triton_tem_"):
            continue
        tmeta = meta.get("triton_meta", {})
        names = fn.arg_names
        src = ASTSource(fn=fn, signature=dict(tmeta.get("signature", {})),
                        constexprs={(names.index(k),): v for k, v in tmeta.get("constants", {}).items()
                                    if k in names}, attrs=(tmeta.get("configs") or [None])[0])
        return triton.compile(src, target=smc.TARGET, options={"num_warps": meta.get("num_warps", 4),
                                                               "num_stages": meta.get("num_stages", 1)})
    raise SystemExit("no triton_tem_ kernel in the generated code")


def _sass(cubin: bytes) -> str:
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([tool, "-c", f.name], capture_output=True, text=True, check=True).stdout


_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
_LABEL = re.compile(r"^\.(L_x_\d+):", re.M)


def innermost_loop(sass: str):
    """(instructions, opcode counts) of the longest address range [label, backward BRA to it]."""
    lines = sass.splitlines()
    labels, instrs = {}, []
    for line in lines:
        m = _LABEL.match(line.strip())
        if m:
            labels[m.group(1)] = len(instrs)
            continue
        m = _INSTR.search(line)
        if m:
            instrs.append((m.group(3), m.group(4)))
    best = None
    for end, (op, rest) in enumerate(instrs):
        if op.startswith("BRA"):
            t = re.search(r"`\(\.(L_x_\d+)\)", rest)
            if t and t.group(1) in labels and labels[t.group(1)] <= end:
                start = labels[t.group(1)]
                if best is None or end - start > best[1] - best[0]:
                    best = (start, end)
    if best is None:
        return [], collections.Counter()
    body = instrs[best[0]: best[1] + 1]
    return body, collections.Counter(op.split(".")[0] for op, _ in body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--shape", default="4x197x3072")
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--config", default="16,128,4,4,4", help="BLOCK_R,BLOCK_C,warps,stages,PIPE_STAGES")
    ap.add_argument("--row-sum", type=int, default=1)
    ap.add_argument("--fast-rcp", type=int, default=1, help="1: as on CUDA in float32 compute")
    ap.add_argument("--dump", default=None, help="write the whole SASS here (and beside it the generated code, .py, and the TTGIR, .ttgir)")
    args = ap.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("run with TRITON_INTERPRET unset")
    sys.path.insert(0, TESTS)
    import sm90_compile as smc

    with tempfile.TemporaryDirectory() as tmp:
        code_path = os.path.join(tmp, "code.py")
        _generate(args, code_path)
        kernel = _compile_template(smc, code_path, bool(args.fast_rcp))
        code = open(code_path).read()
    sass = _sass(kernel.asm["cubin"])
    registers = smc._registers(kernel.asm["cubin"])
    if args.dump:
        with open(args.dump, "w") as f:
            f.write(sass)
        with open(args.dump + ".py", "w") as f:
            f.write(code)
        with open(args.dump + ".ttgir", "w") as f:
            f.write(kernel.asm.get("ttgir", ""))
    body, ops = innermost_loop(sass)
    br, bc, warps = (int(v) for v in args.config.split(",")[:3])
    per_warp = br * bc / warps
    per_elem = len(body) * 32 / per_warp
    print(f"{args.dtype} {args.shape} config {args.config} row_sum {args.row_sum}: loop {len(body)} instructions, "
          f"{per_warp:.0f} elements per warp per trip, {per_elem:.2f} per element; registers {registers}")
    for op, n in ops.most_common():
        print(f"  {op:10s} {n:5d}  {n * 32 / per_warp:6.2f} per element")
    print("RESULT" + json.dumps({"loop": len(body), "per_element": per_elem, "registers": registers,
                                 "ops": dict(ops)}))


if __name__ == "__main__":
    main()
