"""What the families share: pattern keys, the rewrite log, the checks' helpers."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Optional

import torch
from torch._dynamo.utils import counters
from torch.fx import Node

COUNTER = "flashkat"  # torch._dynamo.utils.counters["flashkat"][<pattern name>]


def dynamic_rewrites_enabled() -> bool:
    """Rewrite sites whose x has symbolic (dynamic) batch dimensions?

    Off unless FLASHKAT_DYNAMIC_REWRITES=1.  The rewrite itself is exact with
    symbolic batch dimensions (checked against eager with the ops as extern
    kernels), but with the project's lowerings as of this writing a training
    graph with dynamic batch wrote into x in the backward; until that is fixed
    and tested, such sites compile exactly as under Inductor."""
    import os

    return os.environ.get("FLASHKAT_DYNAMIC_REWRITES", "") not in ("", "0")
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


# ----------------------------------------------------------------------------
# Helpers for extra_check
# ----------------------------------------------------------------------------
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


def coefficient_rows_ok(g_num: int, g_den: int, channels) -> Optional[int]:
    """Rows of (Gn, m) / (Gd, n) are each 1 or G = max(Gn, Gd), and G divides the channels."""
    g = max(g_num, g_den)
    if g_num not in (1, g) or g_den not in (1, g):
        return None
    if not isinstance(channels, int) or channels % g != 0:
        return None
    return g
