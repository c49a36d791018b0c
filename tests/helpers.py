"""Test helpers shared by the numeric tests: inputs, error measure, low-precision baselines."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import torch

from flashkat_inductor.semantics import init_coefficients, init_modes


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN anywhere (or a shape mismatch) gives +inf."""
    assert out.shape == ref.shape, (out.shape, ref.shape)
    out, ref = out.double().cpu(), ref.double().cpu()
    if not torch.isfinite(out).all():
        return float("inf")
    den = ref.norm().item()
    diff = (out - ref).norm().item()
    return diff / den if den > 0 else diff


def coefficients(m: int, n: int, gn: int, gd: int, *, kind: str = "random", form: str = "safe",
                 dtype=torch.float32, device="cpu", zeros: bool = False):
    """(numerator (gn, m), denominator (gd, n)).

    kind "random": N(0, 0.25) numerator and denominator; for the signed form, where
    Q = 1 + sum |b_j| x^(j+1) can reach 0 for x < 0, the odd powers' coefficients are
    scaled by 0.02 so the function stays well-conditioned (errors then measure the code).
    kind a KAT mode name ("gelu", "swish", ...): KAT's fitted (6, 4) set, per group rows.
    zeros=True puts exact zeros into b (where zero_sign matters)."""
    if kind == "random":
        a = torch.randn(gn, m) * 0.5
        b = torch.randn(gd, n) * 0.5
        if form == "signed":  # keep Q away from 0: small odd powers (x^1, x^3, ...)
            b[:, 0::2] *= 0.02
    else:
        num, den = init_coefficients(kind)
        assert (m, n) == (len(num), len(den))
        a = torch.tensor([num] * gn)
        b = torch.tensor([den] * gd)
        # per-group variety, keeping realistic magnitudes
        a = a * (1 + 0.05 * torch.randn(gn, 1))
        b = b * (1 + 0.05 * torch.randn(gd, 1))
    if zeros:
        b[0, 0] = 0.0
        if n > 2:
            b[-1, 2] = 0.0
    return a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype)


class RationalAct(torch.nn.Module):
    """A safe group rational on 8 groups as an nn.Module (random (6, 4) coefficients, KAT's
    ``sign(0) = +1``); ``float32=True`` computes on ``x.float()``, as KAT's first rational does
    under autocast."""

    def __init__(self, float32: bool = False):
        super().__init__()
        a, b = coefficients(6, 4, 8, 8, form="safe")
        self.a, self.b = torch.nn.Parameter(a), torch.nn.Parameter(b)
        self.float32 = float32

    def forward(self, x):
        import flashkat_inductor as fk

        return fk.rational(x.float() if self.float32 else x, self.a, self.b, form="safe", zero_sign="kat")


def module_grads(run, module: torch.nn.Module, x: torch.Tensor, weight: torch.Tensor) -> list:
    """[x.grad, each parameter's grad] of ``(run(x) * weight).sum()`` (in float32), ``run`` being
    ``module`` itself or a compiled version of it; earlier gradients are cleared first."""
    for p in list(module.parameters()) + [x]:
        p.grad = None
    (run(x).float() * weight.float()).sum().backward()
    return [x.grad.clone()] + [p.grad.clone() for p in module.parameters()]


def naive_lowp(x, a, b, form):
    """The same function computed naively (explicit powers) entirely in x's dtype: the
    low-precision baseline that bf16/fp16 results are bounded against."""
    dt = x.dtype
    G = max(a.shape[0], b.shape[0])
    C = x.shape[-1]
    xv = x.reshape(*x.shape[:-1], G, C // G)
    a = a.to(dt).expand(G, a.shape[1])
    b = b.to(dt).expand(G, b.shape[1])
    P = sum(a[:, i : i + 1] * xv**i for i in range(a.shape[1]))
    t = xv.abs() if form == "safe" else xv
    c = b if form == "abs_sum" else b.abs()
    s = sum(c[:, j : j + 1] * t ** (j + 1) for j in range(b.shape[1]))
    Q = 1 + (s.abs() if form == "abs_sum" else s)
    return (P / Q).reshape(x.shape)


KAT_MODES = [m for m in init_modes() if m != "identity"]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_result_script(code: str, *, cwd: str = ROOT, pythonpath: str = ROOT, drop=(), timeout: int | None = None,
                      **env_vars) -> dict:
    """Run ``python -c code`` in a fresh process and return the JSON object of its last
    stdout line that starts with ``RESULT``; ``pythonpath`` goes first on PYTHONPATH,
    ``env_vars`` are added to the environment and the names in ``drop`` removed from it.

    The child runs with ``-X faulthandler``; one that outlives ``timeout`` seconds (default
    ``FLASHKAT_TEST_CHILD_TIMEOUT``, else 600) gets SIGABRT, so the failure shows the Python stack
    of every thread where it stalled instead of a bare timeout."""
    if timeout is None:
        timeout = int(os.environ.get("FLASHKAT_TEST_CHILD_TIMEOUT", "600"))
    env = dict(os.environ, PYTHONPATH=pythonpath + os.pathsep + os.environ.get("PYTHONPATH", ""), **env_vars)
    for name in drop:
        env.pop(name, None)
    proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        raise AssertionError(f"child still running after {timeout} s; its stacks at SIGABRT:\n{stderr[-8000:]}")
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and lines, stderr[-5000:]
    return json.loads(lines[-1][len("RESULT"):])


def train_step(compiled, flat, grads, capture: bool):
    """compiled(*flat) and its backward with output gradients ``grads``: (outputs, generated code);
    the code only with ``capture`` (run_and_get_code resets Dynamo: use it on the first call only)."""
    from torch._inductor.utils import run_and_get_code

    def step():
        outs = compiled(*flat)
        torch.autograd.backward(outs, grads)
        return outs

    if capture:
        return run_and_get_code(step)
    return step(), []


@contextlib.contextmanager
def no_compile_caches():
    """Inductor's FX-graph cache and AOTAutograd's cache off: every compile runs the graph passes
    (a cache hit skips them, and with them the counters tests assert)."""
    import torch._functorch.config as fconfig
    from torch._inductor import config as iconfig

    with iconfig.patch(fx_graph_cache=False), fconfig.patch(enable_autograd_cache=False):
        yield
