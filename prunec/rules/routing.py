"""Mixture-of-experts routing bookkeeping: one-hot masks, token counts per expert, argsort.

These ops read routing *indices* (values, not channels): their inputs are token/top-k dims,
and their new dims (classes, histogram bins) are addressed by those values, so they are frozen.
No hidden width passes through them, so none is frozen needlessly; the dims they pass through
unchanged (one_hot's input dims) stay coupled.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from prunec.analysis.context import AnalysisContext
from prunec.rules.registry import register_rule

aten = torch.ops.aten


@register_rule(aten.one_hot)
def one_hot(ctx: AnalysisContext, node: fx.Node) -> None:
    """``one_hot(ids, n)``: the input's dims, then a class dim indexed by the ids' values."""
    classes = ctx.table.layout_for_size(ctx.shape(node)[-1])
    ctx.freeze(classes, "one_hot classes are addressed by the input's values")
    ctx.set(node, list(ctx.dims(node.args[0])) + [classes])


@register_rule(aten.histc, aten.bincount)
def histogram(ctx: AnalysisContext, node: fx.Node) -> None:
    """Counts over every element of the input, into bins addressed by value."""
    name = node.target.overloadpacket.__name__
    ctx.freeze_value(node.args[0], f"{name} counts every element of its input")
    weights = node.args[1] if len(node.args) > 1 else node.kwargs.get("weights")
    if ctx.is_tensor(weights):  # bincount's weights are summed per bin
        ctx.freeze_value(weights, f"{name} counts every element of its input")
    ctx.layouts[node] = ctx.fresh_for(node.meta.get("val"))
    ctx.freeze_value(node, f"{name} bins are addressed by the input's values")


@register_rule(aten.argsort)
def argsort(ctx: AnalysisContext, node: fx.Node) -> None:
    """Ranks along one dim (frozen); the other dims pass through."""
    x = node.args[0]
    dim = node.args[1] if len(node.args) > 1 and isinstance(node.args[1], int) else node.kwargs.get("dim", -1)
    xd = list(ctx.dims(x))
    dim %= len(xd)
    ctx.freeze(xd[dim], "argsort ranks along this dim")
    ctx.set(node, xd)
