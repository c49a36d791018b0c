"""What the families share: pattern keys, the rewrite log, the checks' helpers."""
from __future__ import annotations

import contextlib
import dataclasses
import operator
from typing import Optional

import torch
from torch._dynamo.utils import counters
from torch.fx import Node

COUNTER = "flashkat"  # torch._dynamo.utils.counters["flashkat"][<pattern name>]
# the FX targets that reshape a tensor without copying it (a chain of them is one tensor's storage)
RESHAPES = (torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default, torch.ops.aten.reshape.default)


def dynamic_rewrites_enabled() -> bool:
    """Rewrite sites whose x has symbolic (dynamic) batch dimensions?

    On by default; FLASHKAT_DYNAMIC_REWRITES=0 turns it off (such sites then
    compile exactly as under Inductor).  The switch is part of the backend's
    cache key.  Rewrites with symbolic sizes need the fake values of the nodes
    a replacement inserts to alias their bases (see :func:`refresh_fake_values`):
    without that, a training graph with a dynamic batch wrote dx into x."""
    import os

    return os.environ.get("FLASHKAT_DYNAMIC_REWRITES", "1").strip().lower() not in ("0", "false", "off", "no")


# ----------------------------------------------------------------------------
# Fake values of inserted nodes
# ----------------------------------------------------------------------------
def _is_view_op(target) -> bool:
    """An ATen op whose (first) output aliases an input (schema ``Tensor(a) -> Tensor(a)``)."""
    schema = getattr(target, "_schema", None)
    if schema is None or not schema.returns:
        return False
    info = schema.returns[0].alias_info
    return info is not None and not info.is_write


def refresh_fake_values(graph, new_nodes) -> int:
    """Recompute ``meta["val"]`` of the nodes a rewrite inserted, under the graph's own fake mode.

    The pattern matcher copies the replacement's fake values from the
    replacement's own trace, so a view the replacement inserts (e.g. the
    grouped view moved back to channels-last) does not share its base's fake
    storage.  AOTAutograd decides which saved tensors are donated buffers (which
    the backward may overwrite) from those storages, so a saved view of a graph
    input looked like a private buffer, and Inductor wrote dx in place into the
    user's x.  With static shapes Inductor folds the view chain away and it did
    not show; with a symbolic batch it did.

    Recomputed are: every node in ``new_nodes``, and every existing view node
    whose input was recomputed (its value must alias the new one).  Returns
    the number of nodes updated; on any failure the node keeps its value."""
    from torch._dispatch.python import enable_python_dispatcher
    from torch._guards import detect_fake_mode

    new_nodes = set(new_nodes)
    if not new_nodes:
        return 0
    mode = detect_fake_mode([n.meta.get("val") for n in graph.find_nodes(op="placeholder")])
    if mode is None:
        mode = detect_fake_mode()
    if mode is None:
        return 0
    refreshed: set = set()
    for node in graph.nodes:
        if node.op != "call_function" or not (isinstance(node.target, torch._ops.OpOverload)
                                               or node.target is operator.getitem):
            continue
        inputs = node.all_input_nodes
        if node not in new_nodes and not (_is_view_op(node.target) and any(i in refreshed for i in inputs)):
            continue
        if not all("val" in i.meta for i in inputs):
            continue
        args, kwargs = torch.fx.map_arg((node.args, node.kwargs), lambda a: a.meta["val"])
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(mode)
                stack.enter_context(enable_python_dispatcher())
                if mode.shape_env is not None:
                    stack.enter_context(mode.shape_env.ignore_fresh_unbacked_symbols())
                value = node.target(*args, **kwargs)
        except Exception:  # noqa: BLE001 - keep the copied value rather than fail a compile
            continue
        node.meta["val"] = value
        if isinstance(value, torch.Tensor) and "tensor_meta" in node.meta:
            try:
                from torch.fx.passes.shape_prop import _extract_tensor_metadata

                node.meta["tensor_meta"] = _extract_tensor_metadata(value)
            except Exception:  # noqa: BLE001 - informative only
                del node.meta["tensor_meta"]
        refreshed.add(node)
    return len(refreshed)


FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclasses.dataclass(frozen=True)
class PatternKey:
    """Everything a traced pattern specialises on.  One key, one trace."""

    family: str  # "kat_reference" | "horner" | "powers"
    form: str  # "safe" | "signed" | "abs_sum"
    m: int
    n: int
    trace: str  # "joint" | "fwd" | "post"  (see _pm.make_trace_fn)
    grads: tuple = (False, False, False)  # requires grad: x, numerator, denominator (joint only)
    device: str = "cpu"
    writing: str = ""  # powers: "sum" | "explicit"
    coef: str = ""  # pointwise: "col_abs" | "pre_abs" | "plain"
    x_rank: int = 3
    num_sig: tuple = ()
    den_sig: tuple = ()
    q_first: bool = False  # pointwise: the denominator's use of x comes before the numerator's
    dtype: str = "float32"  # joint traces: x's dtype (autograd of abs in float16 / bfloat16 upcasts its sign)
    divide: str = "div"  # pointwise: "div" (p / q) | "reciprocal" (p * q.reciprocal()) | "one_over" (p * (1 / q))
    unit_groups: bool = False  # kat_reference: one channel per group (C = G; size-1 dims change the joint graph)
    coef_dtype: str = ""  # pointwise joint traces: the coefficients' dtype where it differs from x's (autocast)
    autocast: str = ""  # kat_reference: the dtype autocast runs its bmm in ("" without autocast)

    @property
    def name(self) -> str:
        """The counter name: family and form (training and inference share it)."""
        return f"{self.family}_{self.form}"


@dataclasses.dataclass
class Rewrite:
    """One accepted match, as logged for explain()."""

    pattern: str
    family: str
    form: str
    zero_sign: str
    groups: int
    m: int
    n: int
    graph: str  # "training" | "inference" | "training (forward graph)" | ...
    x_node: str
    node_names: list = dataclasses.field(default_factory=list)  # rational_fwd/bwd nodes it became


# ----------------------------------------------------------------------------
# The log of rewrites, and the graph the pass is working on
# ----------------------------------------------------------------------------
_STATE = {"graph": "unknown", "log": None}


@contextlib.contextmanager
def graph_context(kind: str):
    old = _STATE["graph"]
    _STATE["graph"] = kind
    try:
        yield
    finally:
        _STATE["graph"] = old


def current_graph() -> str:
    return _STATE["graph"]


def log_rewrite(key: PatternKey, groups: int, x_node: Node) -> Rewrite:
    counters[COUNTER][key.name] += 1
    counters[COUNTER]["rewrites"] += 1
    r = Rewrite(key.name, key.family, key.form, "torch", int(groups), key.m, key.n, current_graph(),
                x_node.name if isinstance(x_node, Node) else str(x_node))
    if _STATE["log"] is not None:
        _STATE["log"].append(r)
    return r


@contextlib.contextmanager
def collect_rewrites(sink: list):
    """Collect the Rewrite records of every match accepted inside the block (explain() uses it)."""
    old = _STATE["log"]
    _STATE["log"] = sink
    try:
        yield sink
    finally:
        _STATE["log"] = old


def dtype_name(dtype: torch.dtype) -> str:
    """"bfloat16" for torch.bfloat16: how pattern keys name dtypes (``getattr(torch, name)`` inverts it)."""
    return str(dtype).replace("torch.", "")


def trace_dtype(x_node, trace: str) -> str:
    """The dtype a pattern is traced in: x's for joint traces, float32 otherwise.

    Joint graphs differ by dtype: in float16 / bfloat16 Inductor's decomposition
    of the sign in abs's backward upcasts (convert_element_type, sign,
    convert_element_type), so a float32 trace does not match them.  Forward
    graphs are the same in every floating dtype (one trace serves all)."""
    v = val(x_node)
    if trace != "joint" or v is None or v.dtype not in FLOAT_DTYPES:
        return "float32"
    return dtype_name(v.dtype)


# ----------------------------------------------------------------------------
# Helpers for extra_check
# ----------------------------------------------------------------------------
CAST_OPS = frozenset({torch.ops.prims.convert_element_type.default, torch.ops.aten._to_copy.default})


def cast_dtype(node) -> Optional[torch.dtype]:
    """The dtype ``node`` converts to when it is a plain dtype cast (``convert_element_type``, or
    ``_to_copy`` given a dtype alone), else None."""
    if not (isinstance(node, Node) and node.op == "call_function" and node.target in CAST_OPS):
        return None
    if node.target == torch.ops.aten._to_copy.default:
        return node.kwargs.get("dtype") if set(node.kwargs) <= {"dtype"} else None
    return node.args[1] if len(node.args) > 1 else node.kwargs.get("dtype")


def val(node) -> Optional[torch.Tensor]:
    v = node.meta.get("val") if isinstance(node, Node) else None
    return v if isinstance(v, torch.Tensor) else None


def static_shape(t: torch.Tensor) -> bool:
    return all(isinstance(s, int) for s in t.shape)


def same_size(a, b) -> bool:
    """a == b for sizes that may be symbolic, without adding a guard (unknown: False)."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    try:
        return bool(statically_known_true(a == b))
    except Exception:  # noqa: BLE001 - not comparable
        return False


def is_contiguous(t: torch.Tensor) -> bool:
    """Row-major contiguous, decided without guards on symbolic sizes (unknown: False)."""
    expected = 1
    for size, stride in zip(reversed(t.shape), reversed(t.stride())):
        if not same_size(size, 1) and not same_size(stride, expected):
            return False
        expected = expected * size
    return True


def same_float_and_device(tensors) -> bool:
    """One floating dtype, one device (shapes may have symbolic batch dims)."""
    if any(t is None for t in tensors):
        return False
    if len({t.dtype for t in tensors}) != 1 or tensors[0].dtype not in FLOAT_DTYPES:
        return False
    return len({t.device for t in tensors}) == 1


def float_x_and_coefficients(x, cols) -> bool:
    """Floating x and coefficient columns on one device, the columns in one dtype (x's or another:
    a bfloat16 activation with float32 parameters, as under autocast, computes in the promoted dtype)."""
    if x is None or any(c is None for c in cols):
        return False
    if x.dtype not in FLOAT_DTYPES or any(c.dtype not in FLOAT_DTYPES for c in cols):
        return False
    if len({c.dtype for c in cols}) > 1:
        return False
    return len({t.device for t in (x, *cols)}) == 1


def coef_trace_dtype(x_node, coef_nodes, trace: str) -> str:
    """For joint traces, the coefficients' dtype where it differs from x's ("" otherwise): the
    backward of a mixed-dtype product casts the gradients, so the joint graph differs."""
    v = val(x_node)
    cv = [val(c) for c in coef_nodes]
    if trace != "joint" or v is None or not cv or any(c is None for c in cv):
        return ""
    dts = {c.dtype for c in cv}
    if len(dts) != 1 or v.dtype in dts:
        return ""
    return dtype_name(dts.pop())


def coefficient_rows_ok(g_num: int, g_den: int, channels) -> Optional[int]:
    """Rows of (Gn, m) / (Gd, n) are each 1 or G = max(Gn, Gd), and G divides the channels."""
    g = max(g_num, g_den)
    if g_num not in (1, g) or g_den not in (1, g):
        return None
    if not isinstance(channels, int) or channels % g != 0:
        return None
    return g
