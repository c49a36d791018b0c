"""Inductor lowerings of the project's ops.

``register_lowerings()`` installs, once, into Inductor's global lowering table:

- ``flashkat::rational_fwd`` -> an ``ir.Pointwise`` (``forward.py``): fuses
  with its neighbours on CPU (C++) and GPU (Triton); in Triton iterated by
  channel groups where it is realized by itself (``forward.GROUPED_RANGES``),
  else its kernels are tiled rows x channels (``forward.ND_TILING``);
- ``flashkat::rational_bwd`` -> on CUDA a ``TritonTemplate`` (``backward.py``
  + ``backward.py.jinja``): dx through ``store_output`` (epilogue-fusable),
  coefficient partial sums reduction-first into a workspace, finished by an
  Inductor reduction, autotuned over a few configs; on CPU (and for what the
  template does not take) Inductor IR that fuses into one C++ loop nest.

Importing this package does not import ``torch._inductor``; calling
``register_lowerings()`` does.  The lowerings are global once registered:
``backend="inductor"`` uses them too (they only replace the eager fallback of
the project's own ops).
"""
from __future__ import annotations

import threading

__all__ = ["register_lowerings", "lowering_source_files"]

_lock = threading.Lock()
_registered = False


def register_lowerings() -> None:
    """Register the forward and backward lowerings (idempotent, thread-safe)."""
    global _registered
    if _registered:
        return
    with _lock:
        if _registered:
            return
        import torch
        from torch._inductor.lowering import register_lowering

        from .. import ops as _ops  # noqa: F401 - defines torch.ops.flashkat.*
        from .backward import rational_bwd_lowering
        from .forward import install_tiling_hook, rational_fwd_lowering

        register_lowering(torch.ops.flashkat.rational_fwd.default, type_promotion_kind=None)(rational_fwd_lowering)
        install_tiling_hook()
        register_lowering(torch.ops.flashkat.rational_bwd.default, type_promotion_kind=None)(rational_bwd_lowering)
        _registered = True


def lowering_source_files() -> list:
    """The files whose contents shape the lowered code (for cache keys, e.g. a CustomGraphPass.uuid())."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    names = ("__init__.py", "forward.py", "backward.py", "backward.py.jinja")
    return [os.path.join(here, n) for n in names]
