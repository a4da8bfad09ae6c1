"""Merge two consecutive linear layers with nothing between them into one.

``linear(linear(x, W1, b1), W2, b2) = linear(x, W2 @ W1, W2 @ b1 + b2)``: exact in real
arithmetic (computed in float64, so outputs match to float rounding).  By default only
merges that do not grow the layer (a low-rank bottleneck ``in -> r -> out`` with
``r * (in + out) < in * out`` stays factored); ``allow_growth=True`` merges those too.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from prunec.attrs import get_path, set_tensor
from prunec.pass_api import NO_DEAD_NODES, SHAPES_PROPAGATED, PassResult, register_pass
from prunec.shapes import add_tensor_attr, fake_value, free_attr_path

aten = torch.ops.aten


def _bias(node: fx.Node) -> fx.Node | None:
    return node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")


def _own_tensor(node: object) -> bool:
    """A ``get_attr`` read by this one node only (merging must not change a tied tensor)."""
    if not isinstance(node, fx.Node) or node.op != "get_attr" or len(node.users) != 1:
        return False
    return sum(1 for n in node.graph.find_nodes(op="get_attr") if n.target == node.target) == 1


def _is_linear(node: object) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target == aten.linear.default


def mergeable(outer: fx.Node, allow_growth: bool) -> bool:
    """``outer`` reads a linear used by nothing else, and both layers own their tensors."""
    inner = outer.args[0]
    if not (_is_linear(outer) and _is_linear(inner)) or len(inner.users) != 1:
        return False
    tensors = [inner.args[1], outer.args[1], _bias(inner), _bias(outer)]
    if not all(t is None or _own_tensor(t) for t in tensors) or tensors[0] is None or tensors[1] is None:
        return False
    out_f, mid = get_path(outer.graph.owning_module, str(outer.args[1].target)).shape
    in_f = get_path(outer.graph.owning_module, str(inner.args[1].target)).shape[1]
    return allow_growth or in_f * out_f <= mid * (in_f + out_f)


def merge(gm: fx.GraphModule, outer: fx.Node) -> None:
    """Replace ``outer(inner(x))`` by one linear stored in ``outer``'s tensors."""
    inner = outer.args[0]
    w1 = get_path(gm, str(inner.args[1].target)).detach().double()
    w2_node = outer.args[1]
    w2 = get_path(gm, str(w2_node.target))
    dtype = w2.dtype
    w2d = w2.detach().double()
    b1_node, b2_node = _bias(inner), _bias(outer)
    b = None
    if b1_node is not None:
        b = w2d @ get_path(gm, str(b1_node.target)).detach().double()
    if b2_node is not None:
        b2 = get_path(gm, str(b2_node.target)).detach().double()
        b = b2 if b is None else b + b2
    merged = (w2d @ w1).to(dtype)
    set_tensor(gm, str(w2_node.target), merged)
    w2_node.meta["val"] = fake_value(gm, merged)
    if b is not None:
        if b2_node is not None:
            set_tensor(gm, str(b2_node.target), b.to(dtype))
        else:
            prefix = str(w2_node.target).rsplit(".", 1)[0] + "." if "." in str(w2_node.target) else ""
            b2_node = add_tensor_attr(gm, free_attr_path(gm, prefix + "bias"), b.to(dtype), before=w2_node.next)
    outer.args = (inner.args[0], w2_node, b2_node)
    outer.kwargs = {}
    gm.graph.erase_node(inner)


@register_pass("merge-linear", requires=(SHAPES_PROPAGATED,), ensures=(SHAPES_PROPAGATED,),
               invalidates=(NO_DEAD_NODES,))
class MergeLinear:
    """Merge linear->linear with nothing between into one linear (when it does not grow the layer)."""

    def __init__(self, allow_growth: bool = False) -> None:
        self.allow_growth = allow_growth

    def __call__(self, gm: fx.GraphModule) -> PassResult:
        merged = 0
        # Topological order: a chain a->b->c merges a into b, then (a.b) into c, in one sweep.
        for node in list(gm.graph.nodes):
            if _is_linear(node) and mergeable(node, self.allow_growth):
                merge(gm, node)
                merged += 1
        if merged:
            gm.graph.lint()
            gm.recompile()
        return PassResult(gm, modified=merged > 0)
