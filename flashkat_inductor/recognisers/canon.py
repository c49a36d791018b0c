"""Graph normalisations shared by the patterns and the graphs they are matched in.

Operand order of commutative ops
--------------------------------
Inductor's pattern matcher compares operands positionally, so ``p * x + c``,
``x * p + c`` and ``c + p * x`` are three different patterns.  Before
matching, the operands of every two-tensor ``aten.add.Tensor`` /
``aten.mul.Tensor`` (no ``alpha``) are put in a canonical order, in the user's
graph and in every traced pattern alike:

1. an operand of the output's shape before one that is broadcast (a
   coefficient column ``(G, 1)`` comes second);
2. then the operand with fewer users first (the Horner accumulator, one user,
   before the shared variable ``x``, many users);
3. then a reciprocal (``q.reciprocal()``, or ``1 / q``: ``reciprocal(q) * 1``)
   after anything else, so ``p * (1 / q)`` and ``(1 / q) * p`` are one pattern;
4. otherwise the order is kept.

IEEE addition and multiplication are commutative, so the reordering never
changes a value; it is undone on every node no rewrite consumed, so a graph in
which nothing matched reaches Inductor exactly as it came.
"""
from __future__ import annotations

import torch
from torch.fx import Graph, Node

aten = torch.ops.aten
_COMMUTATIVE = (aten.add.Tensor, aten.mul.Tensor)


def _shape(node: Node):
    val = node.meta.get("val")
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def reciprocal_of(node) -> "Node | None":
    """q when node is ``reciprocal(q)`` or ``reciprocal(q) * 1`` (how ``1 / q`` decomposes), else None."""
    if not isinstance(node, Node) or node.op != "call_function":
        return None
    if (node.target == aten.mul.Tensor and len(node.args) == 2 and not node.kwargs
            and isinstance(node.args[0], Node) and node.args[1] == 1):
        node = node.args[0]
    if node.op == "call_function" and node.target == aten.reciprocal.default and isinstance(node.args[0], Node):
        return node.args[0]
    return None


def _times_one(node) -> "Node | None":
    """a when node is ``a * 1`` (how torch 2.11 decomposes ``addcmul``'s ``value``), else None."""
    if (isinstance(node, Node) and node.op == "call_function" and node.target == aten.mul.Tensor
            and len(node.args) == 2 and not node.kwargs and isinstance(node.args[0], Node)
            and not isinstance(node.args[1], Node) and node.args[1] == 1):
        return node.args[0]
    return None


def _key(node: Node, out_shape):
    from .base import same_size

    inner = _times_one(node)
    s = _shape(inner if inner is not None else node)
    broadcast = 0
    if s is not None and out_shape is not None:
        same = len(s) == len(out_shape) and all(same_size(a, b) for a, b in zip(s, out_shape))
        broadcast = 0 if same else 1
    return (broadcast, len(node.users), reciprocal_of(node) is not None)


def canonicalize_commutative(graph: Graph) -> list:
    """Reorder operands in place; return an undo list of ``(node, original_args)``.

    ``addcmul(c, u, v)`` (c + u * v) has its factors u, v ordered the same way."""
    undo = []
    # (u * 1) * v: the factor under "* 1" is the one that sorts first (so (x * 1) * p and (p * 1) * x,
    # the same value, are one pattern); the two nodes' arguments are exchanged in place
    for node in graph.nodes:
        if node.op != "call_function" or node.target != aten.mul.Tensor or node.kwargs or len(node.args) != 2:
            continue
        for wi in (0, 1):
            w, other = node.args[wi], node.args[1 - wi]
            inner = _times_one(w)
            if inner is None or len(w.users) != 1 or not isinstance(other, Node):
                continue
            out = _shape(node)
            if _key(other, out) < _key(inner, out):
                undo.append((w, w.args, True))
                undo.append((node, node.args, True))
                w.args = (other, 1)
                node.args = (w, inner) if wi == 0 else (inner, w)
            break
    for node in graph.nodes:
        if node.op != "call_function" or node.kwargs:
            continue
        if node.target in _COMMUTATIVE and len(node.args) == 2:
            first = 0
        elif node.target == aten.addcmul.default and len(node.args) == 3:
            first = 1
        else:
            continue
        u, v = node.args[first:first + 2]
        if not (isinstance(u, Node) and isinstance(v, Node)):
            continue
        out = _shape(node)
        if _key(v, out) < _key(u, out):
            undo.append((node, node.args, False))
            node.args = (*node.args[:first], v, u)
    return undo


def undo_canonicalize(undo: list) -> None:
    """Restore the original operands of the nodes still in the graph (latest change first).

    An operand order is restored where the node still has the same operands; an exchange
    between two nodes (``exchanged``) wherever both survive."""
    for node, args, exchanged in reversed(undo):
        if node._erased or not all(not isinstance(a, Node) or not a._erased for a in args):
            continue
        if exchanged or set(node.args) == set(args):
            node.args = args


# ----------------------------------------------------------------------------
# Which values of a joint graph require grad
# ----------------------------------------------------------------------------
# Ops whose outputs never carry a gradient (constants, comparisons, sign).
_NO_GRAD_OPS = {
    aten.sign.default, aten.full.default, aten.zeros_like.default, aten.ones_like.default,
    aten.full_like.default, aten.empty_like.default, aten.eq.Tensor, aten.eq.Scalar, aten.ne.Tensor,
    aten.ne.Scalar, aten.lt.Tensor, aten.lt.Scalar, aten.gt.Tensor, aten.gt.Scalar, aten.le.Tensor,
    aten.le.Scalar, aten.ge.Tensor, aten.ge.Scalar, aten.argmax.default, aten.argmin.default,
    aten.scalar_tensor.default, aten.empty.memory_format, aten.zeros.default, aten.ones.default,
}


def _joint_outputs(graph: Graph):
    """(forward outputs, gradient outputs) of a joint graph, or None when it does not look like one."""
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    primals = [n for n in placeholders if not n.name.startswith("tangents")]
    out_node = next((n for n in reversed(graph.nodes) if n.op == "output"), None)
    if out_node is None:
        return None
    outs = out_node.args[0]
    if not isinstance(outs, (list, tuple)) or len(outs) < len(primals):
        return None
    outs = list(outs)
    return outs[: len(outs) - len(primals)], outs[len(outs) - len(primals):]


def joint_forward_nodes(graph: Graph) -> set:
    """The nodes the forward outputs depend on (the forward part of a joint graph)."""
    split = _joint_outputs(graph)
    if split is None:
        return set(graph.nodes)
    seen, todo = set(), [o for o in split[0] if isinstance(o, Node)]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        todo.extend(n.all_input_nodes)
    return seen


def joint_requires_grad(graph: Graph) -> dict:
    """``{node: bool}`` for the forward part of a joint graph.

    A primal requires grad when the joint graph returns a gradient for it; a
    node requires grad when one of its tensor inputs does (ops in
    ``_NO_GRAD_OPS`` excepted).  Tangents and the backward part get False.
    Best effort: used only to choose which patterns to trace, never to decide
    a rewrite (a wrong guess just means a pattern that does not match)."""
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    primals = [n for n in placeholders if not n.name.startswith("tangents")]
    tangents = {n for n in placeholders if n.name.startswith("tangents")}
    split = _joint_outputs(graph)
    grads = split[1] if split is not None else None
    rg: dict = {}
    for i, p in enumerate(primals):
        val = p.meta.get("val")
        is_float = isinstance(val, torch.Tensor) and val.is_floating_point()
        if grads is not None:
            rg[p] = bool(is_float and grads[i] is not None)
        else:
            rg[p] = bool(is_float)
    for t in tangents:
        rg[t] = False
    back = set(tangents)
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        ins = node.all_input_nodes
        if any(i in back for i in ins):
            back.add(node)
            rg[node] = False
            continue
        if node.target in _NO_GRAD_OPS:
            rg[node] = False
            continue
        rg[node] = any(rg.get(i, False) for i in ins)
    return rg


# ----------------------------------------------------------------------------
# The quotient, twice
# ----------------------------------------------------------------------------
# A joint graph holds the forward's ``P / Q`` twice: once as the output and
# once recomputed by autograd's formula for the gradient of ``Q``.  The two
# nodes are identical, so a joint pattern's output can be bound to the
# backward copy, and the forward is then left behind (seen on torch 2.13).
# Merging identical divisions, in the patterns and in the graph alike, removes
# the ambiguity.  Only divisions: a general CSE would also merge, say, the
# ``|x|`` of two rationals of one ``x``, and neither would match any more.
# AOTAutograd's partitioner merges them anyway (fx_graph_cse) right after the
# joint passes, so this changes nothing Inductor would not.
def _hashable(a):
    if isinstance(a, (list, tuple)):
        return tuple(_hashable(x) for x in a)
    if isinstance(a, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in a.items()))
    hash(a)
    return a


_CSE_TARGETS = (aten.div.Tensor,)


def cse_inplace(graph: Graph, targets=_CSE_TARGETS) -> int:
    """Merge identical call_function nodes of ``targets``; return how many were removed."""
    seen: dict = {}
    removed = 0
    order = {n: i for i, n in enumerate(graph.nodes)}
    for target in targets:
        for node in sorted(graph.find_nodes(op="call_function", target=target), key=order.__getitem__):
            try:
                key = (_hashable(node.args), _hashable(node.kwargs))
            except TypeError:
                continue
            other = seen.get((target, key))
            if other is None:
                seen[(target, key)] = node
                continue
            node.replace_all_uses_with(other)
            graph.erase_node(node)
            removed += 1
    return removed
