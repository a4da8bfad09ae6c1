"""Linear maps and matrix products: linear, mm, addmm, matmul, bmm, outer.

The contracted dimension couples the input's features with the weight's input
features; the output features come from the weight's rows.  A product of two
computed tensors (attention scores, attention-weighted values) couples its batch
dimensions, which are tagged as attention *heads*.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from prunec.analysis.axes import Layout
from prunec.analysis.context import AnalysisContext
from prunec.rules._common import broadcast_dims, is_activation
from prunec.rules.registry import register_rule

aten = torch.ops.aten


@register_rule(aten.linear)
def linear(ctx: AnalysisContext, node: fx.Node) -> None:
    x, w = node.args[0], node.args[1]
    b = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    ctx.unify(ctx.dim(x, -1), ctx.dim(w, 1), "linear input features")
    out = ctx.dims(x)[:-1] + [ctx.dim(w, 0)]
    if ctx.is_tensor(b):
        out[-1] = ctx.unify(ctx.dim(w, 0), ctx.dim(b, 0), "linear bias")
    ctx.set(node, out)


@register_rule(aten.mm)
def mm(ctx: AnalysisContext, node: fx.Node) -> None:
    a, b = node.args[0], node.args[1]
    ctx.unify(ctx.dim(a, 1), ctx.dim(b, 0), "mm contraction")
    ctx.set(node, [ctx.dim(a, 0), ctx.dim(b, 1)])


@register_rule(aten.addmm)
def addmm(ctx: AnalysisContext, node: fx.Node) -> None:
    bias, a, b = node.args[0], node.args[1], node.args[2]
    ctx.unify(ctx.dim(a, 1), ctx.dim(b, 0), "addmm contraction")
    out: list[Layout] = [ctx.dim(a, 0), ctx.dim(b, 1)]
    bs = ctx.shape(bias)
    for k in range(1, len(bs) + 1):
        if bs[-k] == ctx.shape(node)[-k] and bs[-k] > 1:
            out[-k] = ctx.unify(out[-k], ctx.dim(bias, -k), "addmm bias")
    ctx.set(node, out)


def _batched_product(ctx: AnalysisContext, node: fx.Node, a: fx.Node, b: fx.Node) -> None:
    sa, sb = ctx.shape(a), ctx.shape(b)
    if len(sa) < 2 or len(sb) < 2:
        # Vector products: contract the only/last dim and keep the rest.
        ctx.unify(ctx.dim(a, -1), ctx.dim(b, -2 if len(sb) >= 2 else -1), f"{node.target} contraction")
        out = ctx.dims(a)[:-1] + (ctx.dims(b)[:-2] + ctx.dims(b)[-1:] if len(sb) >= 2 else [])
        ctx.set(node, out)
        return
    ctx.unify(ctx.dim(a, -1), ctx.dim(b, -2), f"{node.target} contraction")
    out_shape = ctx.shape(node)
    batch_shape = out_shape[:-2]
    batch_ops = [(sa[:-2], ctx.dims(a)[:-2]), (sb[:-2], ctx.dims(b)[:-2])]
    batch = broadcast_dims(ctx, batch_ops, batch_shape, f"{node.target} batch") if batch_shape else []
    if is_activation(a) and is_activation(b):
        for lay in batch:
            ctx.tag(lay, "heads")
        ctx.tag(ctx.dim(a, -1), "head_dim")
        ctx.tag(ctx.dim(b, -1), "head_dim")
    ctx.set(node, batch + [ctx.dim(a, -2), ctx.dim(b, -1)])


@register_rule(aten.matmul, aten.bmm)
def matmul(ctx: AnalysisContext, node: fx.Node) -> None:
    _batched_product(ctx, node, node.args[0], node.args[1])


@register_rule(aten.outer, aten.ger)
def outer(ctx: AnalysisContext, node: fx.Node) -> None:
    """``a[:, None] * b[None, :]`` (rotary angle tables): no contraction, each dim is an operand's."""
    ctx.set(node, [ctx.dim(node.args[0], 0), ctx.dim(node.args[1], 0)])
