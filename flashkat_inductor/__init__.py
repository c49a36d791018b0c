"""flashkat_inductor: fast group-rational (GR-KAN) activations for torch.compile.

    import torch
    model = torch.compile(model, backend="flashkat")   # no import needed

The ops are usable without compiling too::

    from flashkat_inductor import rational, GroupRational
    y = rational(x, numerator, denominator, form="safe")

Importing the package registers the custom ops (cheap); Inductor lowerings and
pattern rewrites are registered lazily, once, when the backend first compiles.
"""
from .explain import explain
from .module import GroupRational
from .ops import rational
from .semantics import FORMS, ZERO_SIGNS, init_coefficients, init_modes

__all__ = ["rational", "GroupRational", "explain", "FORMS", "ZERO_SIGNS", "init_coefficients", "init_modes"]
__version__ = "0.1.0"
