"""torch 2.11 only: capture KAT's bound ``Function.apply`` attribute whole, as torch 2.12+ does.

KAT's module stores ``self.rational = rational_1dgroup.apply`` in ``__init__``
and calls ``self.rational(x, num, den, G)``.  Torch 2.11's Dynamo cannot
capture that call (``flashkat_inductor.kat_functions`` has the full story,
with source references): ``UserDefinedObjectVariable.var_getattr``
(``torch/_dynamo/variables/user_defined.py``) turns the attribute into
``UserMethodVariable(Function.apply, AutogradFunctionVariable(cls))``, inlining
``Function.apply`` graph-breaks at ``_is_setup_context_defined``, the module's
``forward`` is skipped, and the Function's atomic backward runs eagerly
whatever the backend.  Torch 2.12 reads the attribute from the instance
``__dict__`` and builds it with ``VariableBuilder``, whose branch for bound
``apply`` of a ``FunctionMeta`` class ("handle aliased autograd function
`apply` calls", present in 2.11's ``torch/_dynamo/variables/builder.py`` as
well) yields ``GetAttrVariable(AutogradFunctionVariable(cls), "apply")``: the
call becomes one ``autograd_function_apply`` node with forward and backward
bodies.

:func:`install` wraps 2.11's ``UserDefinedObjectVariable.var_getattr`` so that
it takes the 2.12 route for exactly this case, and falls through to the
original for everything else.  All of these must hold:

- the object is an ``nn.Module`` with a source (Dynamo can guard on it) and
  no custom ``__getattribute__``; the type has no data descriptor of that
  name (CPython would prefer it to the instance ``__dict__``);
- ``name`` is in the instance ``__dict__``, bound to a ``FunctionMeta`` class,
  named ``apply`` and equal to ``cls.apply``; no pending mutation of the
  attribute in the frame being traced;
- the frame is being compiled for the flashkat backend (the backend chain of
  ``tx.output.compiler_fn`` reaches an object marked ``_flashkat_backend``:
  ``backend="inductor"`` and every other backend see stock 2.11);
- the Function's ``forward`` or ``backward`` names a Triton kernel of the
  :mod:`~flashkat_inductor.kat_functions` registry (a static look at its code
  and the functions it calls, three calls deep).

The value is then built exactly as 2.12 builds it (same builder branch, same
guards: ``CLOSURE_MATCH`` on ``__func__`` of the attribute, so reassigning
``module.rational`` to a plain function recompiles).  The shim counts its uses
in ``counters["flashkat"]["kat_function_captured"]``.  It is installed when
``flashkat_inductor.backend`` is imported (which the ``flashkat`` entry point
does before Dynamo traces anything) and never on torch >= 2.12, where it is
not needed.  Known limits: modules traced as specialised ``NNModuleVariable``
(``torch._dynamo.config.inline_inbuilt_nn_modules = False``) do not go through
this method; and a module whose ``forward`` stock 2.11 already marked as
skipped (compiled earlier in the process under another backend) stays skipped
until ``torch._dynamo.reset()``.
"""
from __future__ import annotations

import inspect
import types
from typing import Optional

import torch
from torch._dynamo.utils import counters

from .recognisers.base import COUNTER

__all__ = ["needed", "install", "uninstall", "installed", "is_flashkat_compile", "mark_flashkat_backend"]

CAPTURED = "kat_function_captured"
_STATE: dict = {"original": None}


def _torch_version() -> tuple:
    parts = []
    for p in torch.__version__.split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def needed() -> bool:
    """True on torch < 2.12 (the version whose Dynamo cannot capture the bound apply)."""
    return _torch_version() < (2, 12)


def installed() -> bool:
    return _STATE["original"] is not None


def mark_flashkat_backend(fn):
    """Mark a callable as a flashkat backend (the shim is active only while one compiles)."""
    try:
        fn._flashkat_backend = True
    except (AttributeError, TypeError):
        pass
    return fn


def is_flashkat_compile(tx) -> bool:
    """Is ``tx`` (Dynamo's instruction translator) compiling for a flashkat backend?"""
    fn = getattr(getattr(tx, "output", None), "compiler_fn", None)
    for _ in range(12):
        if fn is None:
            return False
        if getattr(fn, "_flashkat_backend", False) is True:
            return True
        fn = (getattr(fn, "_torchdynamo_orig_backend", None) or getattr(fn, "compiler_fn", None)
              or getattr(fn, "__wrapped__", None) or getattr(fn, "func", None))
    return False


def _bound_function_apply(value) -> Optional[type]:
    """The Function class if ``value`` is ``SomeFunction.apply`` (bound), else None."""
    if not isinstance(value, types.MethodType):
        return None
    cls = getattr(value, "__self__", None)
    if type(cls) is not torch.autograd.function.FunctionMeta:
        return None
    if getattr(value, "__name__", "") != "apply" or value != getattr(cls, "apply", None):
        return None
    return cls


def _build_bound_apply(vt, tx, name: str):
    """The 2.12 route for ``module.<name>`` when it is a known Function's bound apply, else None."""
    from torch._dynamo.source import AttrSource
    from torch._dynamo.variables.builder import VariableBuilder

    from .kat_functions import function_launches_known_kernel

    value = vt.value
    if not isinstance(value, torch.nn.Module) or vt.source is None:
        return None
    if getattr(vt, "_object_has_getattribute", True):
        return None
    d = getattr(value, "__dict__", None)
    if not isinstance(d, dict) or name not in d:
        return None
    cls = _bound_function_apply(d[name])
    if cls is None:
        return None
    type_attr = inspect.getattr_static(type(value), name, None)
    if type_attr is not None and hasattr(type(type_attr), "__set__"):
        return None  # a data descriptor wins over the instance __dict__
    if tx.output.side_effects.has_pending_mutation_of_attr(vt, name):
        return None
    if not is_flashkat_compile(tx) or not function_launches_known_kernel(cls):
        return None
    counters[COUNTER][CAPTURED] += 1
    return VariableBuilder(tx, AttrSource(vt.source, name))(d[name])


def install() -> bool:
    """Install the shim where it is needed (torch < 2.12), once.  Returns whether it is active."""
    if installed() or not needed():
        return installed()
    try:
        from torch._dynamo.variables.user_defined import UserDefinedObjectVariable
    except ImportError:
        return False
    original = UserDefinedObjectVariable.var_getattr

    def var_getattr(self, tx, name):
        built = _build_bound_apply(self, tx, name)
        if built is not None:
            return built
        return original(self, tx, name)

    var_getattr.__wrapped__ = original
    var_getattr._flashkat_shim = True
    UserDefinedObjectVariable.var_getattr = var_getattr
    _STATE["original"] = original
    return True


def uninstall() -> None:
    """Restore Dynamo's own method (tests)."""
    if installed():
        from torch._dynamo.variables.user_defined import UserDefinedObjectVariable

        UserDefinedObjectVariable.var_getattr = _STATE["original"]
        _STATE["original"] = None
