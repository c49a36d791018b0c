"""Compile Triton kernels for an H100/H200 (sm_90) on a machine without a GPU.

Test helper (run as a script by tests/test_sm90_compile.py, in a process where
``TRITON_INTERPRET`` is unset): the Triton interpreter runs kernels on the CPU
but accepts programs the real compiler rejects, so CI also compiles every
kernel through Triton's CUDA back end (``triton.compile`` with
``GPUTarget("cuda", 90, 32)``: TTIR, TTGIR, LLVM IR, PTX and, with the ptxas
that ships in the Triton wheel, a cubin).  Nothing is launched.

    python tests/sm90_compile.py project           # the project's kernels, over their constexpr matrix
    python tests/sm90_compile.py inductor CODE.py  # every kernel in Inductor's generated code
    python tests/sm90_compile.py inductor-regs CODE.py  # the same, registers per thread of each

Prints one ``RESULT`` line of JSON: {name: "ok" | error text}.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import sys
import tempfile

if os.environ.get("TRITON_INTERPRET") == "1":
    raise SystemExit("sm90_compile: run with TRITON_INTERPRET unset (the interpreter cannot compile)")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)


def compile_fn(fn, signature: dict, constexprs: dict, attrs=None, num_warps=4, num_stages=1, regs=None) -> str:
    """"ok", or the first lines of the compiler's error.  ``regs``: a dict that receives the
    cubin's registers per thread under the kernel's name (read with cuobjdump)."""
    names = fn.arg_names
    src = ASTSource(fn=fn, signature=signature, constexprs={(names.index(k),): v for k, v in constexprs.items()},
                    attrs=attrs)
    try:
        k = triton.compile(src, target=TARGET, options={"num_warps": num_warps, "num_stages": num_stages})
    except Exception as e:  # noqa: BLE001 - reported, the test fails on it
        return f"{type(e).__name__}: {str(e)[:1500]}"
    cubin = k.asm.get("cubin")
    if cubin and regs is not None:
        regs[fn.__name__ if hasattr(fn, "__name__") else str(fn)] = _registers(cubin)
    return "ok" if cubin else "no cubin"


def _registers(cubin: bytes) -> int:
    """Registers per thread of the one kernel in ``cubin`` (-1 where cuobjdump cannot tell)."""
    import subprocess

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+)", out)
    return int(m.group(1)) if m else -1


# ----------------------------------------------------------------------------
# The project's kernels (flashkat_inductor/triton_kernels.py)
# ----------------------------------------------------------------------------
def project() -> dict:
    import flashkat_inductor.triton_kernels as tk

    out = {}
    # (m, n, form, storage dtype of x / y / dy / dx, sign(0) convention); the compute dtype is
    # float32, float64 for float64 storage (semantics.compute_dtype)
    cases = [(6, 4, 0, "fp32", True), (6, 4, 1, "fp32", False), (5, 3, 2, "fp32", True),
             (1, 1, 0, "fp32", False), (8, 8, 2, "fp32", False), (6, 4, 0, "bf16", True), (6, 4, 1, "fp16", False),
             (6, 4, 0, "fp64", True)]
    for m, n, form, storage, zero_kat in cases:
        cdt = tl.float64 if storage == "fp64" else tl.float32
        for kern, extra in ((tk._rational_fwd_kernel, {}),
                            (tk._rational_bwd_kernel, {"ZERO_KAT": zero_kat, "FAST_RCP": storage != "fp64"})):
            for block_r, block_c, stages, iters_c in ((32, 128, 2, 0), (8, 64, 1, 3)):
                consts = dict(M=m, N=n, FORM=form, CDT=cdt, BLOCK_R=block_r, BLOCK_C=block_c, NUM_STAGES=stages,
                              ITERS_C=iters_c, **extra)
                sig = {}
                for a in kern.arg_names:
                    if a in consts:
                        sig[a] = "constexpr"
                    elif a.endswith("_ptr"):
                        sig[a] = (f"*{storage}" if a in ("x_ptr", "y_ptr", "dy_ptr", "dx_ptr")
                                  else "*fp64" if a == "ws_ptr" and storage == "fp64" else "*fp32")
                    else:
                        sig[a] = "i32"
                name = f"{kern.fn.__name__ if hasattr(kern, 'fn') else kern.__name__}[m={m},n={n},form={form}," \
                       f"{storage},{block_r}x{block_c},iters_c={iters_c}]"
                out[name] = compile_fn(kern, sig, consts, num_warps=4, num_stages=stages)
    # stage 2 of the backward: (m, n, shared numerator, shared denominator, workspace, outputs)
    fin = tk._rational_finish_kernel
    for m, n, num_shared, den_shared, ws, outs in ((6, 4, True, False, "fp32", "fp32"), (6, 4, False, False, "fp32", "bf16"),
                                                   (8, 8, True, True, "fp64", "fp64"), (1, 1, False, True, "fp32", "fp16")):
        consts = dict(M=m, N=n, NUM_SHARED=num_shared, DEN_SHARED=den_shared, BLOCK=tk._FINISH_BLOCK, ITERS_C=0)
        sig = {a: "constexpr" if a in consts else f"*{ws}" if a == "ws_ptr" else f"*{outs}" if a.endswith("_ptr")
               else "i32" for a in fin.arg_names}
        out[f"_rational_finish_kernel[m={m},n={n},shared={int(num_shared)}{int(den_shared)},{ws}->{outs}]"] = \
            compile_fn(fin, sig, consts, num_warps=tk._FINISH_WARPS)
    return out


# ----------------------------------------------------------------------------
# Inductor's generated code
# ----------------------------------------------------------------------------
_KERNEL = re.compile(r"^(\w+) = async_compile\.triton\('(\w+)', '''\n(.*?)''', device_str=", re.S | re.M)


def _decorator_kwargs(source: str) -> dict:
    """The keyword arguments of the @triton_heuristics.<kind>(...) decorator, as Python values."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute) \
                        and getattr(dec.func.value, "id", "") == "triton_heuristics":
                    out = {"kind": dec.func.attr}
                    for kw in dec.keywords:
                        if kw.arg in ("triton_meta", "num_warps", "num_stages", "size_hints"):
                            out[kw.arg] = _literal(kw.value)
                    return out
    return {}


def _literal(node):
    """ast.literal_eval, with DeviceProperties(...) calls replaced by None."""
    class Strip(ast.NodeTransformer):
        def visit_Call(self, n):  # noqa: N802
            return ast.Constant(None)

    return ast.literal_eval(Strip().visit(node))


def _without_decorator(source: str) -> str:
    lines, out, skipping, depth = source.splitlines(), [], False, 0
    for line in lines:
        if line.startswith("@triton_heuristics."):
            skipping, depth = True, 0
        if skipping:
            depth += line.count("(") - line.count(")")
            if depth <= 0 and line.strip().endswith(")"):
                skipping = False
            continue
        if "set_driver_to_cpu" in line:
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def kernels(code: str):
    """(name, source, decorator kwargs, the @triton.jit function) of each kernel in Inductor's
    generated ``code``, the function imported from a file of its own without the decorator."""
    tmp = tempfile.mkdtemp(prefix="sm90_")
    for i, (_, name, source) in enumerate(_KERNEL.findall(code)):
        path = os.path.join(tmp, f"k{i}_{name}.py")
        with open(path, "w") as f:
            f.write(_without_decorator(source))
        spec = importlib.util.spec_from_file_location(f"k{i}_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield name, source, _decorator_kwargs(source), getattr(mod, name)


def inductor(code_path: str, regs=None) -> dict:
    out = {}
    for name, _, meta, fn in kernels(open(code_path).read()):
        tmeta = meta.get("triton_meta", {})
        sig = dict(tmeta.get("signature", {}))
        consts = {}
        for arg, ty in sig.items():  # block sizes the heuristics would pick: any power of two compiles the same code
            if ty == "constexpr":
                consts[arg] = 1 if arg.startswith("R0_") and meta.get("kind") == "persistent_reduction" else 16
        if meta.get("kind") == "persistent_reduction":
            for arg in sig:
                if arg.startswith("R0_BLOCK"):
                    consts[arg] = 64
        configs = tmeta.get("configs") or [None]
        attrs = configs[0] if isinstance(configs[0], dict) else None
        out[name] = compile_fn(fn, sig, consts, attrs=attrs, num_warps=meta.get("num_warps", 4),
                               num_stages=meta.get("num_stages", 1), regs=regs)
    return out


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    what = sys.argv[1]
    if what == "inductor-regs":  # {kernel: registers per thread}
        res: dict = {}
        inductor(sys.argv[2], regs=res)
    else:
        res = project() if what == "project" else inductor(sys.argv[2])
    print("RESULT" + json.dumps(res))
