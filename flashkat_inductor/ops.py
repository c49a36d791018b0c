"""The rational as PyTorch custom ops (namespace ``flashkat``).

``flashkat::rational_fwd(x, numerator, denominator, form, zero_sign) -> y``
``flashkat::rational_bwd(grad, x, numerator, denominator, form, zero_sign) -> (dx, dnumerator, ddenominator)``

Both stay single nodes through Dynamo and AOTAutograd down to Inductor, which
has lowerings for them (``flashkat_inductor.lowerings``).  Autograd of the
forward goes through the backward op, so a compiled training graph holds the
two ops and nothing else of the rational.

Outputs are contiguous, in ``x``'s dtype (``dnumerator``/``ddenominator`` in
the coefficients' dtype and shape).  On CUDA the project's Triton kernels run
(``triton_kernels.py``); elsewhere, and for orders above the kernels' limit, the
vectorised PyTorch implementation (``torch_impl.py``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import torch_impl
from .semantics import check_args

# ----------------------------------------------------------------------------
# Eager implementations
# ----------------------------------------------------------------------------
_triton_state: dict = {}


def _triton():
    """The Triton kernels module, or None where Triton cannot run."""
    if "mod" not in _triton_state:
        try:
            from . import triton_kernels
        except Exception:  # noqa: BLE001 - no Triton (e.g. macOS): the PyTorch path serves
            triton_kernels = None
        _triton_state["mod"] = triton_kernels
    return _triton_state["mod"]


def _use_triton(x: Tensor, spec) -> bool:
    if x.device.type != "cuda":
        return False
    mod = _triton()
    return mod is not None and mod.supports(spec)


@torch.library.custom_op("flashkat::rational_fwd", mutates_args=())
def rational_fwd(x: Tensor, numerator: Tensor, denominator: Tensor, form: str, zero_sign: str) -> Tensor:
    spec = check_args(x, numerator, denominator, form, zero_sign)
    if _use_triton(x, spec):
        return _triton().forward(x, numerator, denominator, form)
    return torch_impl.forward(x, numerator, denominator, form)


@rational_fwd.register_fake
def _rational_fwd_fake(x, numerator, denominator, form, zero_sign):
    check_args(x, numerator, denominator, form, zero_sign)
    return x.new_empty(x.shape)


@torch.library.custom_op("flashkat::rational_bwd", mutates_args=())
def rational_bwd(
    grad: Tensor, x: Tensor, numerator: Tensor, denominator: Tensor, form: str, zero_sign: str
) -> tuple[Tensor, Tensor, Tensor]:
    spec = check_args(x, numerator, denominator, form, zero_sign)
    _check_grad(grad, x)
    if _use_triton(x, spec):
        return _triton().backward(grad, x, numerator, denominator, form, zero_sign)
    return torch_impl.backward(grad, x, numerator, denominator, form, zero_sign)


@rational_bwd.register_fake
def _rational_bwd_fake(grad, x, numerator, denominator, form, zero_sign):
    check_args(x, numerator, denominator, form, zero_sign)
    _check_grad(grad, x)
    return x.new_empty(x.shape), numerator.new_empty(numerator.shape), denominator.new_empty(denominator.shape)


def _check_grad(grad: Tensor, x: Tensor) -> None:
    if tuple(grad.shape) != tuple(x.shape):
        raise ValueError(f"flashkat rational_bwd: grad has shape {tuple(grad.shape)}, expected x's {tuple(x.shape)}")
    if grad.device != x.device:
        raise ValueError(f"flashkat rational_bwd: grad is on {grad.device}, x on {x.device}")
    if not grad.is_floating_point():
        raise TypeError(f"flashkat rational_bwd: grad has dtype {grad.dtype}, expected a floating dtype")


# ----------------------------------------------------------------------------
# Autograd: the forward's backward is the backward op
# ----------------------------------------------------------------------------
def _setup_context(ctx, inputs, output):
    x, numerator, denominator, form, zero_sign = inputs
    ctx.save_for_backward(x, numerator, denominator)
    ctx.form, ctx.zero_sign = form, zero_sign


def _backward(ctx, grad):
    x, numerator, denominator = ctx.saved_tensors
    dx, dnum, dden = torch.ops.flashkat.rational_bwd(grad, x, numerator, denominator, ctx.form, ctx.zero_sign)
    need = ctx.needs_input_grad
    return (dx if need[0] else None, dnum if need[1] else None, dden if need[2] else None, None, None)


rational_fwd.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------
def rational(x: Tensor, numerator: Tensor, denominator: Tensor, *, form: str = "safe", zero_sign: str = "torch") -> Tensor:
    """Group-rational activation ``y = P(x) / Q(x)`` over the last dimension of ``x``.

    Args:
        x: ``(..., C)``, float16/bfloat16/float32/float64, any strides.
        numerator: ``(Gn, m)`` coefficients of ``P`` (``a_0`` first).
        denominator: ``(Gd, n)`` coefficients of ``Q`` (for ``x^1 .. x^n``).
            ``Gn`` and ``Gd`` are each 1 (a row shared by all groups) or the
            group count ``G = max(Gn, Gd)``; ``C`` must be divisible by ``G``.
        form: ``"safe"`` (``Q = 1 + sum |b_j| |x|^(j+1)``, KAT's kernels),
            ``"signed"`` (``Q = 1 + sum |b_j| x^(j+1)``, KAT's PyTorch code) or
            ``"abs_sum"`` (``Q = 1 + |sum b_j x^(j+1)|``, PAU variant B).
        zero_sign: ``"torch"`` (``sign(0) = 0``, as autograd) or ``"kat"``
            (``sign(0) = +1``, as KAT's and FlashKAT's kernels).

    Returns ``y`` with ``x``'s shape and dtype.  Differentiable in all three
    tensors; coefficient gradients accumulate in float32 (float64 for float64).
    """
    check_args(x, numerator, denominator, form, zero_sign)
    return torch.ops.flashkat.rational_fwd(x, numerator, denominator, form, zero_sign)
