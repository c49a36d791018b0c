"""Drop the float32 round trip around the rational under mixed precision.

KAT's Function runs under ``custom_fwd(cast_inputs=torch.float32)``: under bf16 or
fp16 autocast its input is cast to float32, its float32 output is cast back to the
autocast dtype by the next linear layer, and autograd does the same to the
gradients.  Once the Function is rewritten into this project's ops, the joint graph
reads::

    x32 = convert(x16, float32);  y32 = rational_fwd(x32, a, b, ...);  y16 = convert(y32, dt)
    dy32 = convert(dy16, float32);  dx32, da, db = rational_bwd(dy32, x32, a, b, ...)
    dx16 = convert(dx32, dt)

The ops take bf16 / fp16 ``x`` and compute in float32 themselves, converting ``x``
exactly and rounding the output once.  So, when ``dt`` is ``x16``'s dtype::

    convert(rational_fwd(convert(x16, f32)), dt)        == rational_fwd(x16)
    convert(rational_bwd(convert(dy16), convert(x16))[0], dt) == rational_bwd(dy16, x16)[0]

bit for bit (the coefficient gradients stay float32 sums of the same terms, equal up
to their summation order).  Without this, the partitioner saves ``x32`` for the
backward: a float32 copy of every activation (on KAT-T in bf16, two conversion
kernels per block and 750 MB of peak memory on the H200; see the README).

A site is narrowed only where every user of the float32 result is a conversion to
``dt``, directly or through a plain clone (what ``Dropout(p=0)``, KAT's default
between the activation and fc2, is in a training graph): a float32 consumer (a
residual add in float32, say) would see a different value.  The forward and the
backward are narrowed independently.

The backward's ``x`` alone is narrowed where its gradient is not a widened ``dt`` tensor:
under ``Dropout(p > 0)`` the incoming gradient is ``convert(dy16, float32) * mask * scale``,
computed in float32, and a float32 reader of the output adds a float32 gradient.  Then
``convert(rational_bwd(dy32, convert(x16, f32))[0], dt) == rational_bwd(dy32, x16)[0]`` bit
for bit for the same reason, the partitioner saves ``x16`` instead of its float32 copy, and
the forward's ``convert(x16, f32)`` is read by the forward alone, inlined into its kernel
(``counters["flashkat"]["float32_round_trips_dropped_bwd_x"]``).

Narrowed, the forward's output is a buffer of its own that fc2 reads, so the lowering
iterates it by groups (lowerings/forward.py, GROUPED_RANGES) instead of inside the cast's
kernel.
"""
from __future__ import annotations

import operator

import torch
from torch._dynamo.utils import counters
from torch.fx import Graph, Node

from .base import COUNTER, cast_dtype, refresh_fake_values, val

NARROWED_FWD = "float32_round_trips_dropped_fwd"
NARROWED_BWD = "float32_round_trips_dropped_bwd"
NARROWED_BWD_X = "float32_round_trips_dropped_bwd_x"
_LOW = (torch.bfloat16, torch.float16)


def _dtype(node) -> "torch.dtype | None":
    v = val(node)
    return None if v is None else v.dtype


def _widened_from(node) -> "Node | None":
    """x16 when ``node`` is ``convert(x16, float32)`` with x16 bf16 / fp16, else None."""
    if cast_dtype(node) is not torch.float32:
        return None
    src = node.args[0]
    return src if _dtype(src) in _LOW else None


def _all_narrowing(node: Node, dt) -> bool:
    users = list(node.users)
    return bool(users) and all(cast_dtype(u) is dt and u.args[0] is node for u in users)


def _is_plain_clone(node: Node) -> bool:
    """``aten.clone(t)`` with no memory format: what ``Dropout(p=0)`` is in a training graph."""
    return node.target is torch.ops.aten.clone.default and not node.kwargs.get("memory_format")


def _all_narrowing_through_clones(node: Node, dt) -> bool:
    """Every user of ``node`` is ``convert(node, dt)`` or a plain clone whose users all are
    ``convert(clone, dt)``: convert(clone(y), dt) is clone(convert(y, dt)), a fresh dt tensor
    of the same values, which the narrowed op's output is."""
    users = list(node.users)
    return bool(users) and all(
        (cast_dtype(u) is dt and u.args[0] is node) or (_is_plain_clone(u) and _all_narrowing(u, dt))
        for u in users)


def _take_over_casts(graph: Graph, old: Node, new: Node) -> None:
    """Every ``convert(old, dt)`` now reads ``new`` (already of dtype dt): drop the casts, and the
    plain clones between (``convert(clone(old), dt)``)."""
    for u in list(old.users):
        if _is_plain_clone(u):
            _take_over_casts(graph, u, new)
        else:
            u.replace_all_uses_with(new)
        graph.erase_node(u)


def drop_float32_round_trips(graph: Graph) -> int:
    """Narrow every eligible rational_fwd / rational_bwd of ``graph`` in place; returns the count."""
    fwd_op = torch.ops.flashkat.rational_fwd.default
    bwd_op = torch.ops.flashkat.rational_bwd.default
    new_nodes: list = []
    widenings: list = []
    done = 0
    for node in list(graph.find_nodes(op="call_function", target=fwd_op)):
        x16 = _widened_from(node.args[0])
        if x16 is None or not _all_narrowing_through_clones(node, _dtype(x16)):
            continue
        widenings.append(node.args[0])
        with graph.inserting_before(node):
            new = graph.call_function(fwd_op, (x16,) + tuple(node.args[1:]), dict(node.kwargs))
        new.meta.update(node.meta)
        cast = next(iter(node.users))
        new.meta["val"] = (next(iter(cast.users)) if _is_plain_clone(cast) else cast).meta.get("val")
        _take_over_casts(graph, node, new)
        graph.erase_node(node)
        new_nodes.append(new)
        counters[COUNTER][NARROWED_FWD] += 1
        done += 1
    for node in list(graph.find_nodes(op="call_function", target=bwd_op)):
        x16 = _widened_from(node.args[1])
        if x16 is None or any(u.target is not operator.getitem for u in node.users):
            continue
        dt = _dtype(x16)
        dx = [u for u in node.users if u.args[1] == 0]
        if any(d.users and not _all_narrowing(d, dt) for d in dx):
            continue
        # the incoming gradient too where it is a widened dt tensor; else (a float32 gradient
        # computed in float32: a dropout's mask and scale, a float32 reader of the output) x alone
        dy16 = _widened_from(node.args[0])
        whole = dy16 is not None and _dtype(dy16) is dt
        widenings += [node.args[0], node.args[1]] if whole else [node.args[1]]
        with graph.inserting_before(node):
            new = graph.call_function(bwd_op, (dy16 if whole else node.args[0], x16) + tuple(node.args[2:]),
                                      dict(node.kwargs))
        new.meta.update(node.meta)
        old_val = node.meta.get("val")
        if old_val is not None:
            dx_val = next(iter(dx[0].users)).meta.get("val") if dx and dx[0].users else x16.meta.get("val")
            new.meta["val"] = (dx_val,) + tuple(old_val[1:])
        for g in list(node.users):
            with graph.inserting_before(g):
                ng = graph.call_function(operator.getitem, (new, g.args[1]))
            ng.meta.update(g.meta)
            if g.args[1] == 0:
                ng.meta["val"] = new.meta.get("val", (None,))[0]
                _take_over_casts(graph, g, ng)
            else:
                g.replace_all_uses_with(ng)
            graph.erase_node(g)
            new_nodes.append(ng)
        graph.erase_node(node)
        new_nodes.append(new)
        counters[COUNTER][NARROWED_BWD if whole else NARROWED_BWD_X] += 1
        done += 1
    if done:
        for w in dict.fromkeys(widenings):  # the float32 copies nothing reads any more
            if not w.users:
                graph.erase_node(w)
        refresh_fake_values(graph, new_nodes)
        graph.lint()
    return done
