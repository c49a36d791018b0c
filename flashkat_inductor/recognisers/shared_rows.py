"""Pass a coefficient row shared by every group to the ops as the row itself.

KAT's modules keep one numerator row ``(1, m)`` for all groups and ``.repeat`` it to
``(G, m)`` before every call (kat-semantics.md), so a compiled training graph reads::

    num = repeat(w, [G, 1]);  y = rational_fwd(x, num, den, ...)
    dx, dnum, dden = rational_bwd(dy, x, num, den, ...)
    dw = sum(view(dnum, [G, 1, m]), [0])                  # repeat's backward

The ops take a shared ``(1, m)`` row as it is (``Gn = 1``): the same forward values,
and a ``(1, m)`` gradient that is the sum over every group's channels, which is ``dw`` up
to the order of the summation (both float32 sums of the same products).  So ``w`` goes
to the ops directly and ``dw`` is the backward's own gradient: no repeat kernel in the
forward, no per-group ``(G, m)`` partials summed over the groups in the backward, and the
kernels read the row as scalars.  A repeat with any other reader, a gradient of the
repeated tensor read elsewhere than through that sum, or a repeat that is not
``[G, 1]`` of a ``(1, k)`` row is left as it is.
``counters["flashkat"]["shared_rows_unrepeated"]`` counts the rows taken.
"""
from __future__ import annotations

import operator

import torch
from torch._dynamo.utils import counters
from torch.fx import Graph, Node

from .base import COUNTER, RESHAPES, refresh_fake_values, val

UNREPEATED = "shared_rows_unrepeated"
_FWD_POS = (1, 2)  # rational_fwd(x, num, den, form, zero_sign)
_BWD_POS = {2: 1, 3: 2}  # rational_bwd(dy, x, num, den, ...) argument -> its output index


def _row_repeated(node: Node) -> "Node | None":
    """``w`` when ``node`` is ``repeat(w, [G, 1])`` with ``w`` a ``(1, k)`` tensor, else None."""
    if node.op != "call_function" or node.target is not torch.ops.aten.repeat.default or node.kwargs:
        return None
    w, reps = node.args
    if not isinstance(w, Node) or len(reps) != 2:
        return None
    wv, nv = val(w), val(node)
    if wv is None or nv is None or wv.dim() != 2:
        return None
    if not (isinstance(reps[1], int) and reps[1] == 1 and wv.shape[0] == 1 and nv.shape[0] == reps[0]):
        return None
    return w


def _sum_over_groups(grad: Node, w: Node) -> "Node | None":
    """The node computing repeat's backward from the op's ``(G, k)`` gradient ``grad``: its one
    reader, ``sum(grad, [0])`` directly or through views (AOTAutograd writes it over a
    ``(G, 1, k)`` view), with ``w``'s shape and dtype; None when ``grad`` is read in any other
    way.  The sum may name the gradient's own dtype (``dtype=torch.float32``: CUDA autocast,
    under which the backward is traced, runs ``sum`` in float32 and says so)."""
    node = grad
    while len(node.users) == 1:
        (user,) = node.users
        if user.op == "call_function" and user.target in RESHAPES:
            node = user
            continue
        total, wv, gv = val(user), val(w), val(node)
        if user.op == "call_function" and user.target is torch.ops.aten.sum.dim_IntList and \
                list(user.args[1]) == [0] and total is not None and gv is not None and \
                user.kwargs.get("dtype") in (None, gv.dtype) and \
                tuple(total.shape) == tuple(wv.shape) and total.dtype == wv.dtype == gv.dtype:
            return user
        return None
    return None


def unrepeat_shared_rows(graph: Graph) -> int:
    """Give the ops every eligible shared row of ``graph`` directly, in place; returns the count."""
    fwd_op = torch.ops.flashkat.rational_fwd.default
    bwd_op = torch.ops.flashkat.rational_bwd.default
    done = 0
    touched: list = []
    for rep in list(graph.find_nodes(op="call_function", target=torch.ops.aten.repeat.default)):
        w = _row_repeated(rep)
        if w is None or not rep.users:
            continue
        plan = []  # (op node, argument position, sum node or None)
        for user in rep.users:
            pos = [i for i, a in enumerate(user.args) if a is rep]
            if user.target is fwd_op and len(pos) == 1 and pos[0] in _FWD_POS:
                plan.append((user, pos[0], None))
            elif user.target is bwd_op and len(pos) == 1 and pos[0] in _BWD_POS:
                if any(g.target is not operator.getitem for g in user.users):
                    break
                grads = [g for g in user.users if g.args[1] == _BWD_POS[pos[0]]]
                sums = [_sum_over_groups(g, w) for g in grads]
                if len(grads) > 1 or None in sums:
                    break
                plan.append((user, pos[0], (grads[0], sums[0]) if grads else None))
            else:
                break
        else:
            for user, pos, grad in plan:
                user.update_arg(pos, w)
                touched.append(user)
                if grad is not None:
                    g, total = grad
                    total.replace_all_uses_with(g)
                    chain = []
                    node = total
                    while node is not g:  # the sum and the views between, now unread
                        chain.append(node)
                        node = node.args[0]
                    for n in chain:
                        graph.erase_node(n)
                    touched.append(g)
            graph.erase_node(rep)
            counters[COUNTER][UNREPEATED] += 1
            done += 1
    if done:
        refresh_fake_values(graph, touched)
        graph.lint()
    return done
