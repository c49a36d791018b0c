"""Run Inductor's Triton code generation on a CPU-only machine, through the Triton interpreter.

Test helper only (never imported by the package).  Importing it, in a process of
its own, before anything compiles:

- makes Triton's active driver a stand-in that reports a CUDA target, so
  Triton's front end and Inductor's Triton codegen run (kernels then execute
  in the interpreter: ``TRITON_INTERPRET=1`` must be set before Triton loads);
- makes ``torch.utils._triton.has_triton()`` true;
- sets ``torch._inductor.config.cpu_backend = "triton"``, so Inductor emits
  Triton (templates included) for CPU tensors;
- gives the interpreter ``libdevice.rsqrt`` (LayerNorm kernels), as ``1 / sqrt``.

These are process-wide changes, which is why the tests that need them run in a
subprocess.
"""
from __future__ import annotations

import os

if os.environ.get("TRITON_INTERPRET") != "1":
    raise RuntimeError("fake_triton_cpu: set TRITON_INTERPRET=1 before importing (and before triton is imported)")

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime.driver import driver as _active_driver  # noqa: E402


class CpuInterpreterDriver:
    """The subset of Triton's driver interface that Inductor and triton.testing use."""

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_current_device(self):
        return 0

    def set_current_device(self, device):  # noqa: ARG002
        pass

    def get_current_stream(self, device=None):  # noqa: ARG002
        return 0

    def get_device_interface(self):
        return torch.cuda

    def get_active_torch_device(self):
        return torch.device("cpu")

    def get_benchmarker(self):
        from triton.testing import do_bench

        return do_bench

    def get_empty_cache_for_benchmark(self):
        return torch.empty(1)

    def clear_cache(self, cache):  # noqa: ARG002
        pass


def _patch_interpreter_index() -> None:
    """Scalars are 1-element arrays in the interpreter, and ``int()`` of a 1-d array is an
    error from NumPy 2.4 on: Inductor's looped reductions (``tl.range(0, r0_numel, ...)``)
    then fail under the interpreter.  Convert through ``.item()`` instead."""
    import triton.runtime.interpreter as interp

    original = interp._patch_lang_tensor
    if getattr(original, "_fk_patched", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._fk_patched = True
    interp._patch_lang_tensor = patched


@triton.jit
def _rsqrt(x):
    return 1.0 / tl.sqrt(x)


def _patch_libdevice() -> None:
    """Inductor's LayerNorm kernels call ``libdevice.rsqrt``, which the interpreter does not
    provide on a CPU-only machine (it returns None there): give it ``1 / sqrt``."""
    from torch._inductor.runtime import triton_helpers

    triton_helpers.libdevice.rsqrt = _rsqrt


def install() -> None:
    _active_driver.set_active(CpuInterpreterDriver())
    _patch_interpreter_index()
    _patch_libdevice()
    import torch.utils._triton as _tu

    _tu.has_triton = lambda: True
    import torch._inductor.config as inductor_config

    inductor_config.cpu_backend = "triton"


install()
