"""Remove identity / no-op nodes: copies, aliases, same-shape views, ``x * 1``, ``x + 0``, ...

Which ops can be no-ops is data: :data:`NOOP_RULES` maps an ATen overload to a rule that
returns the input a node forwards unchanged (or ``None`` when this node does real work).
Whatever a rule says, a node is only removed when its forwarded input has the node's
exact shape and dtype, so a rule never has to re-check them.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.fx as fx

from prunec.pass_api import SHAPES_PROPAGATED, PassResult, register_pass
from prunec.shapes import shape_of

aten = torch.ops.aten

NoopRule = Callable[[fx.Node], "fx.Node | None"]
NOOP_RULES: dict[Any, NoopRule] = {}


def register_noop(*ops: Any) -> Callable[[NoopRule], NoopRule]:
    """Register a rule for ``ops`` (ATen overloads)."""

    def deco(rule: NoopRule) -> NoopRule:
        for op in ops:
            NOOP_RULES[op] = rule
        return rule

    return deco


def _is_number(value: Any, wanted: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == wanted


def _node(value: Any) -> fx.Node | None:
    return value if isinstance(value, fx.Node) else None


@register_noop(aten.clone.default, aten.alias.default, aten.detach.default, aten.lift_fresh_copy.default,
               aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.expand.default,
               aten.flatten.using_ints, aten.contiguous.default, aten.to.dtype, aten.type_as.default)
def _forwards_first_input(node: fx.Node) -> fx.Node | None:
    """Copies and aliases; views/reshapes/expands/casts that the shape+dtype guard shows are identities."""
    return _node(node.args[0])


@register_noop(aten._to_copy.default)
def _same_dtype_copy(node: fx.Node) -> fx.Node | None:
    """A ``.to(dtype)`` copy that changes nothing but the dtype (the guard checks the dtype is equal)."""
    return _node(node.args[0]) if set(node.kwargs) <= {"dtype"} else None


@register_noop(aten.mul.Tensor, aten.mul.Scalar)
def _times_one(node: fx.Node) -> fx.Node | None:
    """``x * 1`` and ``1 * x``."""
    a, b = node.args[:2]
    if _is_number(b, 1):
        return _node(a)
    return _node(b) if _is_number(a, 1) else None


@register_noop(aten.div.Tensor, aten.div.Scalar)
def _divided_by_one(node: fx.Node) -> fx.Node | None:
    """``x / 1`` (without a rounding mode: it would round)."""
    return _node(node.args[0]) if _is_number(node.args[1], 1) and "rounding_mode" not in node.kwargs else None


@register_noop(aten.add.Tensor, aten.add.Scalar, aten.sub.Tensor, aten.sub.Scalar)
def _plus_zero(node: fx.Node) -> fx.Node | None:
    """``x + 0``, ``x - 0`` and ``0 + x``."""
    a, b = node.args[:2]
    if _is_number(b, 0):
        return _node(a)
    return _node(b) if _is_number(a, 0) and node.target in (aten.add.Tensor, aten.add.Scalar) else None


@register_noop(aten.permute.default)
def _identity_permutation(node: fx.Node) -> fx.Node | None:
    """``permute`` by ``(0, 1, ..., n-1)``."""
    dims = [int(d) for d in node.args[1]]
    n = len(dims)
    return _node(node.args[0]) if [d % n for d in dims] == list(range(n)) else None


@register_noop(aten.transpose.int)
def _transpose_with_itself(node: fx.Node) -> fx.Node | None:
    """``transpose(x, d, d)``."""
    x, d0, d1 = node.args[:3]
    rank = len(x.meta["val"].shape) if isinstance(x, fx.Node) and "val" in x.meta else None
    return _node(x) if rank and int(d0) % rank == int(d1) % rank else None


@register_noop(aten.dropout.default)
def _inference_dropout(node: fx.Node) -> fx.Node | None:
    """``dropout(x, p, train=False)``."""
    return _node(node.args[0]) if node.args[2] is False else None


@register_noop(aten.slice.Tensor)
def _full_slice(node: fx.Node) -> fx.Node | None:
    """A step-1 slice that keeps the whole dimension (the shape guard shows it keeps everything)."""
    step = node.args[4] if len(node.args) > 4 else node.kwargs.get("step", 1)
    return _node(node.args[0]) if step == 1 else None


def _same_type(a: fx.Node, b: fx.Node) -> bool:
    va, vb = a.meta.get("val"), b.meta.get("val")
    return (isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor)
            and shape_of(va) == shape_of(vb) and va.dtype == vb.dtype)


def noop_input(node: fx.Node) -> fx.Node | None:
    """The input ``node`` forwards unchanged, or ``None`` when it is not a no-op."""
    if node.op != "call_function":
        return None
    rule = NOOP_RULES.get(node.target)
    if rule is None:
        return None
    source = rule(node)
    return source if source is not None and _same_type(source, node) else None


@register_pass("remove-noops", requires=(SHAPES_PROPAGATED,), ensures=(SHAPES_PROPAGATED,))
def remove_noops(gm: fx.GraphModule) -> PassResult:
    """Remove identity nodes (clone, alias, detach, same-shape view, x*1, x+0, ...) by a rule registry."""
    removed = 0
    for node in list(gm.graph.nodes):
        source = noop_input(node)
        if source is None:
            continue
        node.replace_all_uses_with(source)
        gm.graph.erase_node(node)
        removed += 1
    if removed:
        gm.graph.lint()
        gm.recompile()
    return PassResult(gm, modified=removed > 0)
