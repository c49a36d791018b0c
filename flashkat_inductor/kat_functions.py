"""KAT's and FlashKAT's Triton ``autograd.Function``s, run as the project's ops.

On the GPU, KAT's ``KAT_Group`` and FlashKAT's ``FlashKAT_Group`` call an
``autograd.Function`` whose ``forward`` fills ``torch.empty_like(x)`` with one
Triton kernel and whose ``backward`` fills ``empty_like(x)`` and two float32
``zeros_like`` coefficient buffers with another, accumulating the coefficient
gradients with atomics (``shared/kat-semantics.md`` sections 1 and 2).  This
module makes both directions of such a Function run ``flashkat::rational_fwd``
/ ``flashkat::rational_bwd`` (safe form, ``zero_sign="kat"``) under
``backend="flashkat"``, so Inductor lowers them like any other rewrite.

How Dynamo captures these Functions
===================================

``Fn.apply(x, num, den, G)`` called directly (FlashKAT's module; KAT's
``rational_1dgroup.apply`` written out) is captured whole on every supported
torch: ``torch/_dynamo/variables/misc.py`` ``AutogradFunctionVariable.call_apply``
speculates ``forward`` and ``backward`` into two subgraphs and emits one node

    autograd_function_apply(fwd_body, bwd_body, x, num, den, non_differentiable_idx=..., saved_for_backward_idx=...)

(``torch/_functorch/autograd_function.py``).  ``fwd_body(x, num, den)`` returns
``((y,), (saved...))``; ``bwd_body(grad_y, *saved)`` returns the input
gradients.  Each body holds the Function's own code: ``_set_grad_enabled``,
the autocast regions of ``custom_fwd`` / ``custom_bwd``, the float32 casts
``custom_fwd(cast_inputs=float32)`` applies to CUDA inputs under autocast,
``empty_like`` / ``zeros_like`` buffers, and the kernel launch as a
``triton_kernel_wrapper_mutation`` node whose kernel lives in
``kernel_side_table`` (``torch/_higher_order_ops/triton_kernel_wrap.py``).

KAT stores the *bound* ``apply`` on the module (``self.rational =
rational_1dgroup.apply``), and that changes everything on torch 2.11:

- torch 2.11, ``torch/_dynamo/variables/user_defined.py``
  ``UserDefinedObjectVariable.var_getattr``: a ``types.MethodType`` attribute
  of an ``nn.Module`` whose ``__self__`` is not the module becomes
  ``UserMethodVariable(Function.apply, AutogradFunctionVariable(cls))``.
  Calling it inlines ``torch/autograd/function.py`` ``Function.apply``, which
  graph-breaks at ``_is_setup_context_defined(cls.setup_context)``
  ("GetAttrVariable(AutogradFunctionVariable(), setup_context) has no type");
  the break cannot be resumed ("Reconstruction failure ... sourceless
  UserMethodVariable"), so ``KAT_Group.forward`` is skipped, the Function runs
  eagerly, its ``forward`` frame is compiled on its own (a graph with
  ``empty_like`` and the forward launch, no ``autograd_function_apply``) and
  its atomic backward never enters a graph.
- torch 2.12 and later: ``var_getattr`` follows CPython's lookup ("Step 3:
  Instance __dict__") and builds the value with ``VariableTracker.build``;
  ``torch/_dynamo/variables/builder.py`` ``VariableBuilder._wrap`` has a
  branch for bound ``apply`` of a ``FunctionMeta`` class ("handle aliased
  autograd function `apply` calls") returning
  ``GetAttrVariable(AutogradFunctionVariable(cls), "apply")``, so the call is
  captured whole, as ``Fn.apply`` is.

:mod:`flashkat_inductor.capture_shim` gives torch 2.11 the 2.12 behaviour for
exactly this case (see there).  Everything below then sees the same graph on
2.11, 2.12, 2.13 and 2.14.

What is rewritten
=================

Inside the two bodies of every ``autograd_function_apply`` node of the graph
Dynamo hands the backend (before ``compile_fx``; AOTAutograd inlines the
bodies into the joint graph afterwards):

- forward: ``y = empty_like(x)`` + the launch of a known forward kernel
  ``(x, num, den, y)``  ->  ``y = flashkat.rational_fwd(x, num, den, "safe", "kat")``;
- backward: ``dx = empty_like(x)``, ``dnum = zeros_like(num, dtype=float32)``,
  ``dden = zeros_like(den, dtype=float32)`` + the launch of a known backward
  kernel ``(dy, x, num, den, dx, dnum, dden)``  ->
  ``dx, dnum, dden = flashkat.rational_bwd(dy, x, num, den, "safe", "kat")``.

A known forward launch outside any ``autograd_function_apply`` is replaced the
same way, with the same checks: under ``torch.no_grad()`` Dynamo inlines
``Function.forward`` into the graph (inference), and on torch 2.11 without the
shim the Function's ``forward`` frame is compiled on its own.  ``y = P/Q``
depends on nothing the backward does, so this is exact in both cases (in the
second, the Function's own backward still runs eagerly, reported by
``explain`` as a "forward only" site).

Each substitution is local: one launch and the fresh buffers it fills become
one op computing the same values from the same operand nodes.  Whatever the
Function does around its kernels stays exactly as it is: ``custom_fwd``'s
float32 casts and autocast-off region (so the op computes in float32 where
KAT does), ``custom_bwd``'s autocast state, what is saved, what is returned,
FlashKAT's ``grad_output.contiguous()``.  That is also why no check ties the
backward's operands to the forward's: each launch is replaced by its own
operands' function.

Checks (all must hold for both bodies, or the site is left alone, reported by
``explain`` with the first failing check, and compiles as under Inductor):

- each body has exactly one Triton launch, of a kernel in the registry below,
  the forward body a ``"fwd"`` kernel and the backward body a ``"bwd"``
  kernel, both declaring the same form, sign convention and ``(m, n)``; one
  launch configuration, no TMA descriptors;
- the output buffers are fresh: ``empty_like(x)`` (or ``zeros_like``) of the
  very node passed as ``x``, ``zeros_like(num)`` / ``zeros_like(den)`` with
  dtype float32 for the accumulated coefficient gradients, with no other
  arguments, not read before the launch, no buffer passed twice;
- ``x`` is contiguous (the kernels index it as flat ``(..., D)`` memory) and
  of a dtype the signature trusts: float32, bfloat16 or float16 for kernels
  that convert ``x`` to float32 (for float64 the op would compute in float64, a
  different result), float32 only for the upstream kernels, which do not (their
  backward would raise a bfloat16 ``x`` to powers in bfloat16); ``x.shape[-1]``
  equals the kernel's ``D``; ``D`` is divisible by ``D_PER_GROUP``, giving
  ``G = D // D_PER_GROUP``; the element/row count argument equals ``x``'s;
- ``num`` is ``(G, m)`` and ``den`` ``(G, n)``, float32, contiguous, on
  ``x``'s device (the kernels read row ``g`` at ``g * m``); ``dy`` has ``x``'s
  shape; forward and backward agree on ``G``;
- the launch grid covers the tensor: 1-D kernels ``grid[0] * BLOCK >= numel``
  (or ``grid[0]`` is exactly ``cdiv(numel, BLOCK)``, which is what a symbolic
  batch gives); FlashKAT's row-tiled backward likewise with ``rows`` and its
  row block (upstream: ``BLOCK_M_OUT * BLOCK_M_IN``), and ``grid[1] == G``;
  where the kernel walks its group's channels in a given number of tiles
  (upstream FlashKAT: ``GROUP_OUT`` tiles of ``GROUP_IN``), the tiles cover the
  group width;
- ``D``, ``D_PER_GROUP``, ``G`` and the coefficient shapes are static; a
  symbolic (dynamic) batch is rewritten unless ``FLASHKAT_DYNAMIC_REWRITES=0``
  (as for every other rewrite, see ``recognisers.base.dynamic_rewrites_enabled``),
  every size relation above then being proved for all values of the symbols.

Where KAT's kernel is wrong the op is right, and nowhere else do they differ:
KAT's backward reads ``grad_output`` as if contiguous (an expanded gradient is
read out of bounds), the op reads it through its strides.  The coefficient
gradients are reduced in a fixed order instead of by atomics (deterministic;
equal up to float32 summation order).

Kernel identification
=====================

A launch is trusted only if its kernel is in an explicit registry of
:class:`KernelSignature`\\ s.  A signature pins the kernel's parameter names
(in order, with the constexpr ones) and a *structural digest* of its source:
the kernel's ``def`` parsed with :mod:`ast`, docstrings, comments,
formatting, decorators and the kernel's own name dropped, local variable names
replaced by their order of first assignment, global names resolved (modules to
their ``__name__``, global constants to their values, other ``@triton.jit``
helpers to their own digests), serialised field by field (leaving out empty
optional fields, so the text does not depend on the Python version's ``ast``
layout) and hashed with SHA-256.  The digest therefore survives reformatting,
comments, renames of the kernel and its locals, moving it to another module,
and Triton upgrades (it reads source, not compiled IR), while any change to an
operation, a constant, an operand order or the control flow changes it.  Names
alone were rejected: a look-alike with KAT's names that computes the signed
form would be miscompiled silently.  Compiled IR or a probe launch were
rejected too: both need the target GPU at compile time, and IR changes with
every Triton release.  The signature also says which parameter plays which
role (``x``, ``num``, ``den``, ``y``; ``dy``, ``dx``, ``dnum``, ``dden``),
where ``D``, ``D_PER_GROUP`` and the element or row count are, and which grid
rule the kernel needs.

Built-in entries (``BUILTIN_SIGNATURES``):

- the project's KAT-style kernels (``FIXTURE_SIGNATURES``; ``tests/kat_modules.py``:
  KAT's 1-D forward and per-element-atomic backward, FlashKAT's forward and
  2-D-grid backward), written from ``shared/kat-semantics.md`` and checked
  against the float64 reference (``tests/test_kat_functions.py``);
- the real upstream kernels (``UPSTREAM_SIGNATURES``), all of form ``"safe"``,
  ``zero_sign="kat"``, ``m = 6``, ``n = 4``, for float32 ``x``:

  * ``OSU-STARLAB/FlashKAT rational_kat/kernels/rational_triton.py@adb7aeed``,
    ``rational_fwd_kernel`` / ``rational_bwd_kernel``: KAT's own kernels, copied
    unchanged from ``Adamdad/rational_kat_cu kat_rational/rational_triton.py``
    (its 2-D/3-D version, kernels taking ``D, group, x_size, ...``).  Used by
    ``KAT_Group(device="cuda")`` of ``kat_rational`` and of FlashKAT's
    ``rational_kat``;
  * ``Adamdad/rational_kat_cu kat_rational/rational_triton2d.py@e514a6f4``,
    same two names: the earlier 3-D-only version (kernels taking ``B, L, D,
    ...``), whose backward is also that of ``rational_triton.py@20cd0e43``;
  * ``OSU-STARLAB/FlashKAT rational_kat/kernels/flash_rational_triton.py@3a39e87c``,
    same two names: ``FlashKAT_Group``'s forward (block 128, constexpr group
    width) and row-tiled backward.

  Their digests were computed by :func:`fingerprint` from the files read at
  those commits (saved outside the project; no upstream code is in it), and
  each pair was run in Triton's interpreter against the float64 reference and
  compiled end to end through the upstream modules on torch 2.11, 2.13 and
  2.14 (``UPSTREAM_SIGNATURES``' comment has the details).  Not recognised,
  hence left alone: ``kat_rational/rational_triton.py@20cd0e43``'s forward
  (a vectorised coefficient load that does not compile), forks whose kernels
  differ (``felippe-alves/rational_kat_cu``'s abs-sum forward keeps KAT's
  parameter names: reported as a look-alike), and KAT's CUDA-extension
  ``kat_rational_cu`` Function (no Triton launch to replace).

Another version (a fork, a later commit: any change to a kernel's code changes
its digest) is registered once checked, with the roles and sizes of its
parameters, e.g. for kernels written like upstream KAT's::

    from kat_rational import rational_triton as rt   # the user's installed package
    from flashkat_inductor.kat_functions import register_known_kernel
    up = dict(channels="D", group_width="D_per_group", numel="x_size", grid=("flat", "BLOCK_SIZE"),
              x_dtypes=("float32",))
    register_known_kernel(rt.rational_fwd_kernel, direction="fwd", name="my KAT forward",
                          pointers={"x": "x_ptr", "num": "a_ptr", "den": "b_ptr", "y": "result_ptr"}, **up)
    register_known_kernel(rt.rational_bwd_kernel, direction="bwd", name="my KAT backward",
                          pointers={"dy": "grad_output_ptr", "x": "x_ptr", "num": "a_ptr", "den": "b_ptr",
                                    "dx": "d_x_ptr", "dnum": "d_a_ptr", "dden": "d_b_ptr"}, **up)

(the defaults of ``register_known_kernel`` are the project's fixtures' names:
``x_ptr, a_ptr, b_ptr, y_ptr, numel, D, D_PER_GROUP, BLOCK``; :func:`fingerprint`
shows what a kernel's parameters and digest are, :func:`canonical_text` what the
digest hashes).  ``flashkat_inductor.kat_functions``
counts every rewritten site in ``counters["flashkat"]["kat_function_safe"]``
(and ``"rewrites"``), every site left alone in ``"kat_function_left_alone"``.
"""
from __future__ import annotations

import ast
import builtins
import dataclasses
import functools
import hashlib
import inspect
import operator
import textwrap
import types
from typing import Iterable, Optional

import torch
from torch._dynamo.utils import counters
from torch.fx import GraphModule, Node

from .recognisers.base import COUNTER, Rewrite, dynamic_rewrites_enabled
from .semantics import FORMS, ZERO_SIGNS

__all__ = [
    "PATTERN",
    "Fingerprint",
    "KernelSignature",
    "fingerprint",
    "register_known_kernel",
    "register_signature",
    "unregister",
    "known_signatures",
    "identify",
    "function_launches_known_kernel",
    "rewrite_kat_functions",
    "KatRewrite",
]

PATTERN = "kat_function_safe"  # counter / explain name of a rewritten site (form "safe")
LEFT_ALONE = "kat_function_left_alone"


# ============================================================================
# Fingerprints: parameter names + a structural digest of the kernel's source
# ============================================================================
@dataclasses.dataclass(frozen=True)
class Fingerprint:
    name: str  # the kernel's __name__ (informative only: not part of the match)
    params: tuple  # parameter names, in order
    constexprs: tuple  # the parameters annotated tl.constexpr
    digest: str  # 16 hex digits of SHA-256 over the normalised AST


def _python_function(kernel) -> Optional[types.FunctionType]:
    """The Python function behind a Triton kernel object (JITFunction, the
    interpreter's InterpretedFunction, Autotuner / Heuristics wrappers)."""
    obj = kernel
    for _ in range(8):
        if isinstance(obj, types.FunctionType):
            return obj
        obj = getattr(obj, "fn", None)
        if obj is None:
            return None
    return None


def is_triton_kernel(obj) -> bool:
    """A ``@triton.jit`` kernel, possibly wrapped by autotune/heuristics (checked by type name:
    importing Triton here is not needed)."""
    for _ in range(8):
        if type(obj).__name__ in ("JITFunction", "InterpretedFunction"):
            return True
        if type(obj).__name__ not in ("Autotuner", "Heuristics"):
            return False
        obj = getattr(obj, "fn", None)
    return False


_SKIP_FIELDS = frozenset({"ctx", "type_comment", "type_params", "kind", "decorator_list"})


class _Canon:
    """Serialise a kernel's FunctionDef so that only its structure is left."""

    def __init__(self, fn: types.FunctionType, tree: ast.FunctionDef, depth: int):
        self.fn = fn
        self.globals = getattr(fn, "__globals__", {})
        self.depth = depth
        a = tree.args
        self.params = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
        self.locals: dict = {}
        for node in ast.walk(tree):  # BFS order: deterministic for a given tree
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id not in self.params:
                self.locals.setdefault(node.id, f"v{len(self.locals)}")

    def name(self, ident: str) -> str:
        if ident in self.params:
            return f"P:{ident}"
        if ident in self.locals:
            return f"L:{self.locals[ident]}"
        value = self.globals.get(ident, getattr(builtins, ident, None))
        if isinstance(value, types.ModuleType):
            return f"M:{value.__name__}"
        if is_triton_kernel(value) and self.depth < 4:
            return f"K:{_digest(_python_function(value), self.depth + 1)}"
        inner = getattr(value, "value", value)  # tl.constexpr(...) globals
        if isinstance(inner, (bool, int, float, str)) and not isinstance(value, type):
            return f"C:{type(inner).__name__}:{inner!r}"
        return f"G:{ident}"

    def emit(self, node) -> str:
        if isinstance(node, list):
            return "[" + ",".join(self.emit(v) for v in node if not _is_docstring(v)) + "]"
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.Constant):
            return f"{type(node.value).__name__}:{node.value!r}"
        if isinstance(node, ast.arg):
            ann = self.emit(node.annotation) if node.annotation is not None else ""
            return f"arg({node.arg}:{ann})"
        if isinstance(node, ast.AST):
            parts = []
            for field in node._fields:
                if field in _SKIP_FIELDS:
                    continue
                value = getattr(node, field, None)
                if value is None or (isinstance(value, list) and not value):
                    continue
                parts.append(f"{field}={self.emit(value)}")
            return f"{type(node).__name__}({','.join(parts)})"
        return repr(node)

    def function(self, tree: ast.FunctionDef) -> str:
        return f"def({self.emit(tree.args)}):{self.emit(tree.body)}"


def _is_docstring(stmt) -> bool:
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str))


def _function_tree(fn: types.FunctionType) -> Optional[ast.FunctionDef]:
    try:
        src = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return None
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.FunctionDef) and node.name == fn.__name__:
            return node
    return None


@functools.lru_cache(maxsize=256)
def _digest(fn: Optional[types.FunctionType], depth: int = 0) -> str:
    tree = _function_tree(fn) if fn is not None else None
    if tree is None:
        return "unavailable"
    text = _Canon(fn, tree, depth).function(tree)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def canonical_text(kernel) -> str:
    """The normalised text the digest hashes (for debugging a digest mismatch)."""
    fn = _python_function(kernel)
    tree = _function_tree(fn) if fn is not None else None
    return "" if tree is None else _Canon(fn, tree, 0).function(tree)


def fingerprint(kernel) -> Optional[Fingerprint]:
    """Parameter names, constexpr parameters and structural digest of a Triton kernel
    (``None`` when its source cannot be read)."""
    fn = _python_function(kernel)
    if fn is None:
        return None
    tree = _function_tree(fn)
    if tree is None:
        return None
    a = tree.args
    params = tuple(p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs))
    constexprs = tuple(p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)
                       if p.annotation is not None and ast.unparse(p.annotation).endswith("constexpr"))
    return Fingerprint(fn.__name__, params, constexprs, _digest(fn))


# ============================================================================
# The registry
# ============================================================================
FWD_ROLES = ("x", "num", "den", "y")
BWD_ROLES = ("dy", "x", "num", "den", "dx", "dnum", "dden")
_KAT_FWD_POINTERS = (("x", "x_ptr"), ("num", "a_ptr"), ("den", "b_ptr"), ("y", "y_ptr"))
_KAT_BWD_POINTERS = (("dy", "dy_ptr"), ("x", "x_ptr"), ("num", "a_ptr"), ("den", "b_ptr"), ("dx", "dx_ptr"),
                     ("dnum", "da_ptr"), ("dden", "db_ptr"))
GRID_RULES = ("flat", "rows_by_group")


_X_DTYPES = ("float32", "bfloat16", "float16")


def _names(spec) -> tuple:
    """A parameter name, or a tuple of them, as a tuple."""
    return (spec,) if isinstance(spec, str) else tuple(spec)


@dataclasses.dataclass(frozen=True)
class KernelSignature:
    """A Triton kernel whose launches may be replaced by the project's ops.

    ``pointers`` maps roles to parameter names: forward ``x, num, den, y``;
    backward ``dy, x, num, den, dx, dnum, dden``.  ``grid`` is the launch rule
    the kernel needs to cover the tensor: ``("flat", BLOCK)`` (1-D grid of
    ``BLOCK``-element programs over ``numel``) or ``("rows_by_group", BLOCK_R)``
    (``(cdiv(rows, BLOCK_R), G)`` programs, program ``(r, g)`` owning ``BLOCK_R``
    rows of group ``g``); the block may be a tuple of parameters whose product
    it is (FlashKAT's ``("BLOCK_M_OUT", "BLOCK_M_IN")``: ``BLOCK_M_OUT`` tiles of
    ``BLOCK_M_IN`` rows).  ``group_tiles``, for a kernel that walks its group's
    channels in a number of tiles given by parameters (FlashKAT's ``GROUP_OUT``
    tiles of ``GROUP_IN``), names those parameters: their product must reach the
    group width.  ``x_dtypes`` are the dtypes of ``x`` for which the kernel is
    known to compute in float32 (a kernel that does not convert ``x`` to float32
    evaluates powers in ``x``'s dtype: only float32 is then the same function).
    ``form`` / ``zero_sign`` / ``m`` / ``n`` state what the kernel computes
    (``flashkat_inductor.semantics``)."""

    name: str
    direction: str  # "fwd" | "bwd"
    params: tuple
    constexprs: tuple
    digest: str
    pointers: tuple  # ((role, parameter), ...)
    channels: str = "D"
    group_width: str = "D_PER_GROUP"
    numel: Optional[str] = "numel"
    rows: Optional[str] = None
    grid: tuple = ("flat", "BLOCK")
    group_tiles: tuple = ()
    x_dtypes: tuple = _X_DTYPES
    form: str = "safe"
    zero_sign: str = "kat"
    m: int = 6
    n: int = 4

    def __post_init__(self):
        roles = FWD_ROLES if self.direction == "fwd" else BWD_ROLES
        problems = []
        if self.direction not in ("fwd", "bwd"):
            problems.append(f"direction must be 'fwd' or 'bwd', got {self.direction!r}")
        if sorted(r for r, _ in self.pointers) != sorted(roles):
            problems.append(f"pointers must name the roles {roles}, got {[r for r, _ in self.pointers]}")
        if not (isinstance(self.grid, tuple) and len(self.grid) == 2 and _names(self.grid[1])):
            problems.append(f"grid must be (rule, block parameter(s)), got {self.grid!r}")
        named = [p for _, p in self.pointers] + [self.channels, self.group_width]
        named += [p for p in (self.numel, self.rows) if p]
        named += list(_names(self.grid[1]) if len(self.grid) == 2 else ()) + list(self.group_tiles)
        missing = [p for p in named if p not in self.params]
        if missing:
            problems.append(f"parameters {missing} are not among the kernel's {list(self.params)}")
        if self.grid[0] not in GRID_RULES:
            problems.append(f"grid rule must be one of {GRID_RULES}, got {self.grid[0]!r}")
        if self.grid[0] == "flat" and not self.numel:
            problems.append("a 'flat' grid needs the element-count parameter (numel=...)")
        if self.grid[0] == "rows_by_group" and not self.rows:
            problems.append("a 'rows_by_group' grid needs the row-count parameter (rows=...)")
        if not self.x_dtypes or not set(self.x_dtypes) <= set(_X_DTYPES):
            problems.append(f"x_dtypes must be a non-empty subset of {_X_DTYPES}, got {self.x_dtypes!r}")
        if self.form not in FORMS or self.zero_sign not in ZERO_SIGNS:
            problems.append(f"form/zero_sign must be in {FORMS}/{ZERO_SIGNS}, got {self.form!r}/{self.zero_sign!r}")
        if self.m < 1 or self.n < 1:
            problems.append(f"m and n must be >= 1, got {self.m}, {self.n}")
        if problems:
            raise ValueError(f"KernelSignature {self.name!r}: " + "; ".join(problems))

    @property
    def semantics(self) -> tuple:
        return (self.form, self.zero_sign, self.m, self.n)

    def pointer(self, role: str) -> str:
        return dict(self.pointers)[role]


_FWD_PARAMS = ("x_ptr", "a_ptr", "b_ptr", "y_ptr", "numel", "D", "D_PER_GROUP", "BLOCK")

# The project's KAT-style kernels (tests/kat_modules.py). tests/test_kat_functions.py
# checks that the fixtures still have these fingerprints and compute this semantics.
FIXTURE_SIGNATURES = (
    KernelSignature(
        name="KAT rational_fwd_kernel", direction="fwd", params=_FWD_PARAMS, constexprs=("BLOCK",),
        digest="7cfd772a93859a8e", pointers=_KAT_FWD_POINTERS),
    KernelSignature(
        name="KAT rational_bwd_kernel", direction="bwd",
        params=("dy_ptr", "x_ptr", "a_ptr", "b_ptr", "dx_ptr", "da_ptr", "db_ptr", "numel", "D", "D_PER_GROUP",
                "BLOCK"),
        constexprs=("BLOCK",), digest="6f35d427afe1bc0f", pointers=_KAT_BWD_POINTERS),
    KernelSignature(
        name="FlashKAT flashkat_rational_fwd_kernel", direction="fwd", params=_FWD_PARAMS, constexprs=("BLOCK",),
        digest="8e5b7c085f4af78f", pointers=_KAT_FWD_POINTERS),
    KernelSignature(
        name="FlashKAT flashkat_rational_bwd_kernel", direction="bwd",
        params=("dy_ptr", "x_ptr", "a_ptr", "b_ptr", "dx_ptr", "da_ptr", "db_ptr", "ROWS", "D", "D_PER_GROUP",
                "BLOCK_R", "BLOCK_C"),
        constexprs=("ROWS", "D", "D_PER_GROUP", "BLOCK_R", "BLOCK_C"), digest="1b9b3fb49c584a59",
        pointers=_KAT_BWD_POINTERS, numel=None, rows="ROWS", grid=("rows_by_group", "BLOCK_R")),
)

# The real upstream kernels.  How each digest was obtained: the file was read from the
# public repository at the commit named, saved outside this project as an importable
# module, imported, and passed to fingerprint() (same digest on torch 2.11, 2.13 and
# 2.14, Python 3.11, Triton 3.6 and 3.8).  Each pair was then run eagerly in Triton's
# interpreter on CPU tensors (3-D and, where the wrapper allows it, 2-D input; exact
# zeros in x and in b; rows not a multiple of the row tile; a group wider than the
# channel tile) and matched the float64 reference of form "safe", zero_sign "kat",
# m = 6, n = 4 to float32 rounding (relative error <= 2e-6); and compiled end to end
# (backend="flashkat", torch 2.11 / 2.13 / 2.14) through the upstream modules.  None of
# their code is in this project: only parameter names and digests.  The upstream
# kernels load x without converting it to float32 (their backward then raises x to
# powers in x's dtype), so they are trusted for float32 x only, which is what their
# Functions' custom_fwd(cast_inputs=torch.float32) gives under autocast.
_UP_FWD_POINTERS = (("x", "x_ptr"), ("num", "a_ptr"), ("den", "b_ptr"), ("y", "result_ptr"))
_UP_BWD_POINTERS = (("dy", "grad_output_ptr"), ("x", "x_ptr"), ("num", "a_ptr"), ("den", "b_ptr"),
                    ("dx", "d_x_ptr"), ("dnum", "d_a_ptr"), ("dden", "d_b_ptr"))
_UP_1D = dict(channels="D", group_width="D_per_group", numel="x_size", grid=("flat", "BLOCK_SIZE"),
              x_dtypes=("float32",))
UPSTREAM_SIGNATURES = (
    # KAT's kernels as KAT_Group(device="cuda") runs them today: kat_rational/rational_triton.py
    # of Adamdad/rational_kat_cu with the `D = x.shape[-1]` wrappers (2-D and 3-D input), copied
    # unchanged into OSU-STARLAB/FlashKAT; fingerprinted from FlashKAT's copy.  (Read, not
    # fingerprinted: the stored copy of that file in Adamdad/rational_kat_cu's history and the
    # fork johnnynunez/rational_kat_cu@b2cca121 have the same two kernels line for line, the
    # fork keroseus/DiFF@255ede01 the same backward and a modified forward.)
    KernelSignature(
        name="OSU-STARLAB/FlashKAT rational_kat/kernels/rational_triton.py@adb7aeed rational_fwd_kernel "
             "(= Adamdad/rational_kat_cu kat_rational/rational_triton.py, 2-D/3-D version)",
        direction="fwd",
        params=("x_ptr", "a_ptr", "b_ptr", "result_ptr", "D", "group", "x_size", "D_per_group", "BLOCK_SIZE"),
        constexprs=("BLOCK_SIZE",), digest="0cd92b8bb12007d8", pointers=_UP_FWD_POINTERS, **_UP_1D),
    KernelSignature(
        name="OSU-STARLAB/FlashKAT rational_kat/kernels/rational_triton.py@adb7aeed rational_bwd_kernel "
             "(= Adamdad/rational_kat_cu kat_rational/rational_triton.py, 2-D/3-D version)",
        direction="bwd",
        params=("grad_output_ptr", "x_ptr", "a_ptr", "b_ptr", "d_x_ptr", "d_a_ptr", "d_b_ptr", "D", "group",
                "x_size", "n_size", "d_size", "D_per_group", "BLOCK_SIZE"),
        constexprs=("BLOCK_SIZE",), digest="41db1b3c0176627b", pointers=_UP_BWD_POINTERS, **_UP_1D),
    # The earlier 3-D-only version (`B, L, D = x.shape`; kernels take B, L too, unused).  The
    # backward is also that of kat_rational/rational_triton.py@20cd0e43, whose forward (a
    # vectorised coefficient load of shape (8,) added to a (BLOCK_SIZE,) offset) does not
    # compile, so that forward is not registered and such sites are left alone.
    KernelSignature(
        name="Adamdad/rational_kat_cu kat_rational/rational_triton2d.py@e514a6f4 rational_fwd_kernel "
             "(3-D version)",
        direction="fwd",
        params=("x_ptr", "a_ptr", "b_ptr", "result_ptr", "B", "L", "D", "group", "x_size", "D_per_group",
                "BLOCK_SIZE"),
        constexprs=("BLOCK_SIZE",), digest="736eb136b48a5d81", pointers=_UP_FWD_POINTERS, **_UP_1D),
    KernelSignature(
        name="Adamdad/rational_kat_cu kat_rational/rational_triton2d.py@e514a6f4 rational_bwd_kernel "
             "(3-D version; also kat_rational/rational_triton.py@20cd0e43)",
        direction="bwd",
        params=("grad_output_ptr", "x_ptr", "a_ptr", "b_ptr", "d_x_ptr", "d_a_ptr", "d_b_ptr", "B", "L", "D",
                "group", "x_size", "n_size", "d_size", "D_per_group", "BLOCK_SIZE"),
        constexprs=("BLOCK_SIZE",), digest="60b018bc9a5d7796", pointers=_UP_BWD_POINTERS, **_UP_1D),
    # FlashKAT_Group's Function (FlashRationalTriton1DGroup): forward block 128 with a constexpr
    # group width; backward on a (cdiv(rows, BLOCK_M_OUT * BLOCK_M_IN), G) grid walking the
    # group's channels in GROUP_OUT tiles of GROUP_IN, its x and dy viewed as (rows, din).
    KernelSignature(
        name="OSU-STARLAB/FlashKAT rational_kat/kernels/flash_rational_triton.py@3a39e87c rational_fwd_kernel",
        direction="fwd",
        params=("x_ptr", "a_ptr", "b_ptr", "result_ptr", "D", "x_size", "BLOCK_SIZE", "D_per_group"),
        constexprs=("BLOCK_SIZE", "D_per_group"), digest="5d190d2e83bc8f76", pointers=_UP_FWD_POINTERS,
        **_UP_1D),
    KernelSignature(
        name="OSU-STARLAB/FlashKAT rational_kat/kernels/flash_rational_triton.py@3a39e87c rational_bwd_kernel",
        direction="bwd",
        params=("grad_output_ptr", "x_ptr", "a_ptr", "b_ptr", "d_x_ptr", "d_a_ptr", "d_b_ptr", "B", "din",
                "group_size", "BLOCK_M_OUT", "BLOCK_M_IN", "GROUP_OUT", "GROUP_IN"),
        constexprs=("B", "din", "group_size", "BLOCK_M_OUT", "BLOCK_M_IN", "GROUP_OUT", "GROUP_IN"),
        digest="270e13d7ac22ad22", pointers=_UP_BWD_POINTERS, channels="din", group_width="group_size",
        numel=None, rows="B", grid=("rows_by_group", ("BLOCK_M_OUT", "BLOCK_M_IN")),
        group_tiles=("GROUP_OUT", "GROUP_IN"), x_dtypes=("float32",)),
)

BUILTIN_SIGNATURES = FIXTURE_SIGNATURES + UPSTREAM_SIGNATURES

_REGISTRY: list = list(BUILTIN_SIGNATURES)
_VERSION = [0]  # bumped on every change (caches keyed on it)


def known_signatures() -> tuple:
    return tuple(_REGISTRY)


def register_signature(sig: KernelSignature) -> KernelSignature:
    """Add a signature (no-op if an equal one is registered)."""
    if sig not in _REGISTRY:
        _REGISTRY.append(sig)
        _VERSION[0] += 1
    return sig


def unregister(sig: KernelSignature) -> None:
    if sig in _REGISTRY:
        _REGISTRY.remove(sig)
        _VERSION[0] += 1


def register_known_kernel(kernel, *, direction: str, name: Optional[str] = None, pointers=None,
                          channels: str = "D", group_width: str = "D_PER_GROUP", numel: Optional[str] = "numel",
                          rows: Optional[str] = None, grid: tuple = ("flat", "BLOCK"), group_tiles: tuple = (),
                          x_dtypes: tuple = _X_DTYPES, form: str = "safe", zero_sign: str = "kat", m: int = 6,
                          n: int = 4) -> KernelSignature:
    """Trust ``kernel`` (a ``@triton.jit`` function): launches of any kernel with its
    parameters and structural digest will be replaced by the project's ops.

    Only register a kernel after checking that it computes ``form`` /
    ``zero_sign`` of order ``(m, n)`` with the roles given (defaults: the
    project's fixtures' names, ``x_ptr, a_ptr, b_ptr, y_ptr`` forward,
    ``dy_ptr, x_ptr, a_ptr, b_ptr, dx_ptr, da_ptr, db_ptr`` backward; a 1-D grid
    of ``BLOCK``-element programs over ``numel``; upstream KAT's names differ:
    see the module docstring), for every ``x`` dtype in ``x_dtypes``.  The
    other keywords are :class:`KernelSignature`'s fields.  Returns the
    signature (pass it to :func:`unregister` to undo)."""
    fp = fingerprint(kernel)
    if fp is None:
        raise ValueError(f"register_known_kernel: cannot read the source of {kernel!r}; pass a @triton.jit function")
    if pointers is None:
        pointers = _KAT_FWD_POINTERS if direction == "fwd" else _KAT_BWD_POINTERS
    elif isinstance(pointers, dict):
        pointers = tuple(pointers.items())
    sig = KernelSignature(name=name or fp.name, direction=direction, params=fp.params, constexprs=fp.constexprs,
                          digest=fp.digest, pointers=tuple(pointers), channels=channels, group_width=group_width,
                          numel=numel, rows=rows, grid=tuple(grid), group_tiles=tuple(group_tiles),
                          x_dtypes=tuple(x_dtypes), form=form, zero_sign=zero_sign, m=m, n=n)
    return register_signature(sig)


def identify(kernel) -> tuple:
    """``(signature or None, fingerprint or None, look-alike signature or None)``.

    A look-alike is a registered signature with the same parameters but another digest."""
    fp = fingerprint(kernel)
    if fp is None:
        return None, None, None
    lookalike = None
    for sig in _REGISTRY:
        if sig.params == fp.params and sig.constexprs == fp.constexprs:
            if sig.digest == fp.digest:
                return sig, fp, None
            lookalike = lookalike or sig
    return None, fp, lookalike


# ----------------------------------------------------------------------------
# Does a Function's code launch a registered kernel? (used by the torch 2.11 shim)
# ----------------------------------------------------------------------------
def _unwrap(fn):
    for _ in range(8):
        if isinstance(fn, (staticmethod, classmethod)):
            fn = fn.__func__
        elif hasattr(fn, "__wrapped__"):
            fn = fn.__wrapped__
        else:
            break
    return fn


def _referenced_objects(fn) -> Iterable:
    """Objects ``fn``'s code names: globals, closure cells, attributes of named modules."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return
    names, todo = set(), [code]
    while todo:
        c = todo.pop()
        names.update(c.co_names)
        todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    glb = getattr(fn, "__globals__", {})
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            yield cell.cell_contents
        except ValueError:
            continue
    for name in sorted(names):
        if name not in glb:
            continue
        obj = glb[name]
        yield obj
        if isinstance(obj, types.ModuleType):
            for attr in sorted(names):
                sub = getattr(obj, attr, None)
                if sub is not None and not isinstance(sub, types.ModuleType):
                    yield sub


def _launches_known(fn, depth: int, seen: set) -> bool:
    fn = _unwrap(fn)
    if not isinstance(fn, types.FunctionType) or fn.__code__ in seen:
        return False
    seen.add(fn.__code__)
    for obj in _referenced_objects(fn):
        if is_triton_kernel(obj):
            if identify(obj)[0] is not None:
                return True
        elif depth > 0 and isinstance(obj, types.FunctionType) and not obj.__module__.startswith("torch"):
            if _launches_known(obj, depth - 1, seen):
                return True
    return False


_FN_CACHE: dict = {}


def function_launches_known_kernel(cls) -> bool:
    """Does the ``autograd.Function`` ``cls`` name (in ``forward`` / ``backward``, or in
    functions they call, three calls deep) a Triton kernel of the registry?  A static
    check of the code: nothing is run."""
    key = (cls, _VERSION[0])
    if key not in _FN_CACHE:
        seen: set = set()
        _FN_CACHE[key] = any(_launches_known(cls.__dict__.get(m, getattr(cls, m, None)), 3, seen)
                             for m in ("forward", "backward"))
    return _FN_CACHE[key]


# ============================================================================
# Matching the two bodies of an autograd_function_apply node
# ============================================================================
class _LeftAlone(Exception):
    pass


def _need(cond, why: str) -> None:
    if not cond:
        raise _LeftAlone(why)


def _hops():
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table, triton_kernel_wrapper_mutation

    return kernel_side_table, triton_kernel_wrapper_mutation, torch.ops.higher_order.autograd_function_apply


def _val(v):
    if isinstance(v, Node):
        return v.meta.get("example_value", v.meta.get("val"))
    return v


def _known_true(expr) -> bool:
    """A (possibly symbolic) boolean that is true for every value of its symbols."""
    if isinstance(expr, bool):
        return expr
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    return bool(statically_known_true(expr))


def _covers(programs, block: int, n) -> bool:
    """``programs`` blocks of ``block`` cover ``n`` elements: ``programs * block >= n``.  With
    symbolic sizes sympy cannot prove that of ``cdiv`` (``(n + 255) // 256 * 256 >= n``), so
    ``programs`` being exactly ``cdiv(n, block)`` counts too."""
    return _known_true(programs * block >= n) or _known_true(programs == (n + block - 1) // block)


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def _static_int(v, what: str) -> int:
    v = _val(v)
    _need(isinstance(v, int) and not isinstance(v, bool), f"{what} is not a static integer ({v!r})")
    return int(v)


def _is_call(n, targets) -> bool:
    return isinstance(n, Node) and n.op == "call_function" and n.target in targets


_EMPTY_LIKE = (torch.empty_like, torch.ops.aten.empty_like.default)
_ZEROS_LIKE = (torch.zeros_like, torch.ops.aten.zeros_like.default)
_DEFAULT_KW = {"memory_format": (None, torch.preserve_format), "layout": (None, torch.strided),
               "device": (None,), "requires_grad": (False,), "pin_memory": (None, False)}


def _fresh_buffer(buf, like: Node, kinds, what: str, dtype=None) -> None:
    """``buf`` is ``empty_like``/``zeros_like`` of ``like``, with nothing else but an optional dtype."""
    kind = "empty_like/zeros_like" if kinds is not _ZEROS_LIKE else "zeros_like"
    _need(_is_call(buf, kinds) and len(buf.args) == 1 and buf.args[0] is like,
          f"{what} is not a fresh {kind}({like.name if isinstance(like, Node) else like})")
    for k, v in buf.kwargs.items():
        if k == "dtype":
            lv = _val(like)
            ok = v is None or v == dtype or (dtype is None and isinstance(lv, torch.Tensor) and v == lv.dtype)
            _need(ok, f"{what} has dtype {v}")
        else:
            _need(k in _DEFAULT_KW and v in _DEFAULT_KW[k], f"{what} is created with {k}={v!r}")


def _not_read_before(buf: Node, launch: Node, order: dict, what: str) -> None:
    early = [u.name for u in buf.users if u is not launch and order[u] < order[launch]]
    _need(not early, f"{what} is used before the kernel fills it (by {', '.join(early)})")


@dataclasses.dataclass
class _Launch:
    node: Node
    sig: KernelSignature
    args: dict  # parameter -> Node / constant
    groups: int = 0


def _launches_in(gm: GraphModule) -> list:
    _, twm, _ = _hops()
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target is twm]


def _kernel(node: Node):
    kst, _, _ = _hops()
    return kst.get_kernel(node.kwargs["kernel_idx"])


def _kernel_name(node: Node) -> str:
    fn = _python_function(_kernel(node))
    return fn.__name__ if fn is not None else "?"


def _identify_launch(body: GraphModule, direction: str, where: str) -> _Launch:
    launches = _launches_in(body)
    _need(len(launches) == 1, f"the {where} launches {len(launches)} Triton kernels (expected one)")
    return _identify_node(launches[0], direction, where)


def _identify_node(node: Node, direction: str, where: str) -> _Launch:
    kst, _, _ = _hops()
    sig, fp, lookalike = identify(_kernel(node))
    kname = fp.name if fp else "?"
    if sig is None:
        if lookalike is not None:
            raise _LeftAlone(f"{where} kernel {kname} has the parameters of {lookalike.name} but another body "
                             f"(digest {fp.digest}, registered {lookalike.digest}): not in the registry "
                             "(flashkat_inductor.kat_functions.register_known_kernel)")
        raise _LeftAlone(f"{where} kernel {kname} is not in the registry")
    _need(sig.direction == direction, f"{where} kernel {kname} is a {sig.direction} kernel")
    kw = node.kwargs
    _need(not kw.get("tma_descriptor_metadata"), f"{where} launch uses TMA descriptors")
    grid = kw.get("grid")
    _need(isinstance(grid, (list, tuple)) and len(grid) == 1, f"{where} launch has {len(grid or ())} grid "
          "configurations (autotuned?): expected one")
    args = dict(kst.get_constant_args(kw["constant_args_idx"]))
    args.update(kw["kwargs"])
    missing = [p for p in sig.params if p not in args]
    _need(not missing, f"{where} launch does not pass {missing}")
    return _Launch(node, sig, args)


def _tensor(node, what: str) -> torch.Tensor:
    v = _val(node)
    _need(isinstance(node, Node) and isinstance(v, torch.Tensor), f"{what} is not a tensor of the graph")
    return v


def _check_operands(launch: _Launch, where: str) -> int:
    """Shapes, dtypes, layouts and size arguments; returns the group count G."""
    sig, args = launch.sig, launch.args
    x = _tensor(args[sig.pointer("x")], "x")
    num = _tensor(args[sig.pointer("num")], "the numerator")
    den = _tensor(args[sig.pointer("den")], "the denominator")
    symbolic = any(not isinstance(s, int) for t in (x, num, den) for s in t.shape)
    _need(not symbolic or dynamic_rewrites_enabled(),
          "dynamic (symbolic) shapes, and FLASHKAT_DYNAMIC_REWRITES=0")
    _need(x.dtype in (torch.float32, torch.bfloat16, torch.float16),
          f"x has dtype {x.dtype} (the kernels compute in float32; the op would not)")
    _need(str(x.dtype).replace("torch.", "") in sig.x_dtypes,
          f"x has dtype {x.dtype}; the {where} kernel {sig.name} is trusted for x in {', '.join(sig.x_dtypes)} "
          "only (it does not compute in float32 otherwise)")
    _need(x.dim() >= 1 and _known_true(x.is_contiguous()), "x is not contiguous (the kernels index it as flat memory)")
    D = _static_int(args[sig.channels], f"the {where} kernel's {sig.channels}")
    Dg = _static_int(args[sig.group_width], f"the {where} kernel's {sig.group_width}")
    _need(isinstance(x.shape[-1], int) and x.shape[-1] == D, f"x has {x.shape[-1]} channels, the kernel's "
          f"{sig.channels} is {D}")
    _need(Dg > 0 and D % Dg == 0, f"{sig.channels}={D} is not divisible by {sig.group_width}={Dg}")
    G = D // Dg
    if sig.group_tiles:
        tiles = [_static_int(args[p], p) for p in sig.group_tiles]
        _need(all(t > 0 for t in tiles) and _prod(tiles) >= Dg,
              f"the {where} kernel walks {' x '.join(map(str, tiles))} channels of a group of {Dg} "
              f"({' x '.join(sig.group_tiles)} < {sig.group_width})")
    if sig.numel:
        _need(_known_true(_val(args[sig.numel]) == x.numel()), f"the {where} kernel's {sig.numel} is not x.numel()")
    if sig.rows:
        _need(_known_true(_val(args[sig.rows]) * D == x.numel()),
              f"the {where} kernel's {sig.rows} x {sig.channels} is not x.numel()")
    for t, what, k in ((num, "numerator", sig.m), (den, "denominator", sig.n)):
        _need(tuple(t.shape) == (G, k), f"the {what} has shape {tuple(t.shape)}, expected ({G}, {k})")
        _need(t.dtype == torch.float32, f"the {what} has dtype {t.dtype}, expected float32")
        _need(t.is_contiguous(), f"the {what} is not contiguous")
        _need(t.device == x.device, f"the {what} is on {t.device}, x on {x.device}")
    # Grid coverage.
    g = [_val(v) for v in launch.node.kwargs["grid"][0]]
    _need(len(g) == 3, f"grid {g}")
    block = _prod(_static_int(args[p], p) for p in _names(sig.grid[1]))
    _need(block > 0, f"the {where} launch's block {sig.grid[1]} is {block}")
    if sig.grid[0] == "flat":
        _need(_known_true(g[1] == 1) and _known_true(g[2] == 1), f"the {where} launch grid {g} is not 1-D")
        _need(_covers(g[0], block, x.numel()), f"the {where} launch grid {g} does not cover x")
    else:
        rows = _val(args[sig.rows])
        _need(_covers(g[0], block, rows) and _known_true(g[1] == G) and _known_true(g[2] == 1),
              f"the {where} launch grid {g} is not (cdiv(rows, {' x '.join(_names(sig.grid[1]))}), G={G}, 1)")
    launch.groups = G
    return G


def _match_fwd(body: GraphModule) -> _Launch:
    return _check_fwd(body, _identify_launch(body, "fwd", "forward"))


def _check_fwd(body: GraphModule, launch: _Launch) -> _Launch:
    sig, args = launch.sig, launch.args
    ptrs = [args[sig.pointer(r)] for r in FWD_ROLES]
    _need(all(isinstance(p, Node) for p in ptrs) and len(set(ptrs)) == 4, "a forward pointer argument is passed twice")
    x, y = args[sig.pointer("x")], args[sig.pointer("y")]
    _check_operands(launch, "forward")
    _fresh_buffer(y, x, _EMPTY_LIKE + _ZEROS_LIKE, "the output buffer")
    order = {n: i for i, n in enumerate(body.graph.nodes)}
    _not_read_before(y, launch.node, order, "the output buffer")
    return launch


def _match_bwd(body: GraphModule) -> _Launch:
    launch = _identify_launch(body, "bwd", "backward")
    sig, args = launch.sig, launch.args
    ptrs = [args[sig.pointer(r)] for r in BWD_ROLES]
    _need(all(isinstance(p, Node) for p in ptrs) and len(set(ptrs)) == 7,
          "a backward pointer argument is passed twice")
    _check_operands(launch, "backward")
    dy = _tensor(args[sig.pointer("dy")], "the incoming gradient")
    xv = _val(args[sig.pointer("x")])
    _need(tuple(dy.shape) == tuple(xv.shape), f"the incoming gradient has shape {tuple(dy.shape)}, x "
          f"{tuple(xv.shape)}")
    _need(dy.dtype in (torch.float32, torch.bfloat16, torch.float16), f"the incoming gradient has dtype {dy.dtype}")
    order = {n: i for i, n in enumerate(body.graph.nodes)}
    _fresh_buffer(args[sig.pointer("dx")], args[sig.pointer("x")], _EMPTY_LIKE + _ZEROS_LIKE, "the dx buffer")
    for role, src in (("dnum", "num"), ("dden", "den")):  # accumulated with atomics: must start at 0
        _fresh_buffer(args[sig.pointer(role)], args[sig.pointer(src)], _ZEROS_LIKE, f"the {role} buffer",
                      dtype=torch.float32)
    for role in ("dx", "dnum", "dden"):
        _not_read_before(args[sig.pointer(role)], launch.node, order, f"the {role} buffer")
    return launch


# ============================================================================
# Rewriting
# ============================================================================
def _rewrite_fwd(body: GraphModule, launch: _Launch) -> None:
    sig, args, g = launch.sig, launch.args, body.graph
    x, num, den, y = (args[sig.pointer(r)] for r in FWD_ROLES)
    with g.inserting_before(launch.node):
        new = g.call_function(torch.ops.flashkat.rational_fwd.default, (x, num, den, sig.form, sig.zero_sign))
    new.meta.update({k: v for k, v in launch.node.meta.items() if k in ("stack_trace", "nn_module_stack")})
    new.meta["example_value"] = _val(y)
    g.erase_node(launch.node)
    y.replace_all_uses_with(new)
    g.erase_node(y)
    body.recompile()


def _rewrite_bwd(body: GraphModule, launch: _Launch) -> None:
    sig, args, g = launch.sig, launch.args, body.graph
    dy, x, num, den, dx, dnum, dden = (args[sig.pointer(r)] for r in BWD_ROLES)
    with g.inserting_before(launch.node):
        new = g.call_function(torch.ops.flashkat.rational_bwd.default, (dy, x, num, den, sig.form, sig.zero_sign))
        outs = [g.call_function(operator.getitem, (new, i)) for i in range(3)]
    new.meta.update({k: v for k, v in launch.node.meta.items() if k in ("stack_trace", "nn_module_stack")})
    new.meta["example_value"] = tuple(_val(b) for b in (dx, dnum, dden))
    g.erase_node(launch.node)
    for out, buf in zip(outs, (dx, dnum, dden)):
        out.meta["example_value"] = _val(buf)
        buf.replace_all_uses_with(out)
        g.erase_node(buf)
    body.recompile()


@dataclasses.dataclass
class KatRewrite(Rewrite):
    """A rewritten Function site, as logged for explain()."""

    source: str = ""  # "rational_fwd_kernel + rational_bwd_kernel" (the kernels it replaced)


def _label(hop: Node) -> str:
    vals = [_val(a) for a in hop.args[2:]]
    grad = any(isinstance(v, torch.Tensor) and v.requires_grad for v in vals)
    return "training" if grad else "inference"


def _site_kernels(body_fwd, body_bwd) -> str:
    names = []
    for body in (body_fwd, body_bwd):
        names += [_kernel_name(n) for n in _launches_in(body)]
    return " + ".join(names) or "no Triton launch"


def _known_or_lookalike(node: Node) -> bool:
    sig, _, lookalike = identify(_kernel(node))
    return sig is not None or lookalike is not None


def rewrite_kat_functions(gm: GraphModule):
    """Rewrite every ``autograd_function_apply`` of ``gm`` (and of its nested graphs) whose
    bodies launch registered kernels; report the others and stray launches of registered
    kernels.  Returns a :class:`flashkat_inductor.recognisers.GraphReport` (stage
    ``"dynamo"``), also handed to ``explain`` when it is collecting."""
    from .recognisers import _REPORT_SINK, GraphReport, NearMiss

    _, twm, afa = _hops()
    rewrites: list = []
    misses: list = []
    bodies: dict = {}  # id(body) -> decision, for bodies shared by several nodes
    hop_bodies: set = set()
    changed = False
    modules = [m for m in gm.modules() if isinstance(m, GraphModule)]
    for mod in modules:
        for hop in list(mod.graph.nodes):
            if not (hop.op == "call_function" and hop.target is afa):
                continue
            try:
                fwd_body = getattr(mod, hop.args[0].target)
                bwd_body = getattr(mod, hop.args[1].target)
            except (AttributeError, IndexError, TypeError):
                continue
            hop_bodies.update((id(fwd_body), id(bwd_body)))
            launches = _launches_in(fwd_body) + _launches_in(bwd_body)
            if not any(_known_or_lookalike(n) for n in launches):
                continue  # not a rational Function: none of our business
            label = _label(hop)
            source = _site_kernels(fwd_body, bwd_body)
            key = (id(fwd_body), id(bwd_body))
            if key not in bodies:
                try:
                    mf = _match_fwd(fwd_body)
                    mb = _match_bwd(bwd_body)
                    _need(mf.sig.semantics == mb.sig.semantics,
                          f"forward ({mf.sig.name}) and backward ({mb.sig.name}) kernels declare different semantics")
                    _need(mf.groups == mb.groups,
                          f"forward and backward disagree on the group count ({mf.groups} vs {mb.groups})")
                except _LeftAlone as e:
                    bodies[key] = str(e)
                else:
                    _rewrite_fwd(fwd_body, mf)
                    _rewrite_bwd(bwd_body, mb)
                    changed = True
                    bodies[key] = (mf.sig, mf.groups)
            decision = bodies[key]
            if isinstance(decision, str):
                counters[COUNTER][LEFT_ALONE] += 1
                misses.append(NearMiss("kat_function", "safe", 6, 4, label, hop.name,
                                       f"{source}: {decision}"))
                continue
            sig, groups = decision
            counters[COUNTER][PATTERN] += 1
            counters[COUNTER]["rewrites"] += 1
            names = ["rational_fwd"] + (["rational_bwd"] if label == "training" else [])
            rewrites.append(KatRewrite(PATTERN, "kat_function", sig.form, sig.zero_sign, groups, sig.m, sig.n,
                                       label, hop.name, names, source))
    # Registered kernels launched outside any autograd_function_apply: an inference graph
    # (under no_grad Dynamo inlines Function.forward) or a Function that was not captured
    # whole (torch 2.11 without the shim: its forward frame compiles on its own and its
    # backward runs eagerly).  A forward launch is replaced on its own, with the same
    # checks: y = P/Q does not depend on anything the backward does, so the replacement
    # is exact whatever happens to the gradient.  A backward launch is left alone.
    for mod in modules:
        if id(mod) in hop_bodies:
            continue
        for n in _launches_in(mod):
            sig = identify(_kernel(n))[0]
            if sig is None:
                continue
            why = (f"{_kernel_name(n)} launched outside an autograd_function_apply: the Function was not "
                   "captured whole (a frame of it was compiled on its own); see flashkat_inductor.capture_shim")
            if sig.direction == "fwd":
                try:
                    launch = _check_fwd(mod, _identify_node(n, "fwd", "forward"))
                except _LeftAlone as e:
                    why = f"{_kernel_name(n)}, a forward launch outside an autograd_function_apply: {e}"
                else:
                    _rewrite_fwd(mod, launch)
                    changed = True
                    counters[COUNTER][PATTERN] += 1
                    counters[COUNTER]["rewrites"] += 1
                    rewrites.append(KatRewrite(PATTERN, "kat_function", sig.form, sig.zero_sign, launch.groups,
                                               sig.m, sig.n, "forward only", n.name, ["rational_fwd"],
                                               _kernel_name(n)))
                    continue
            counters[COUNTER][LEFT_ALONE] += 1
            misses.append(NearMiss("kat_function", sig.form, sig.m, sig.n, "unknown", n.name, why))
    if changed:
        for mod in modules:
            mod.recompile()
    report = GraphReport("dynamo graph", rewrites, misses, [], 0.0, "dynamo")
    if _REPORT_SINK["list"] is not None and (rewrites or misses):
        _REPORT_SINK["list"].append(report)
    return report
