"""Tensor factories: zeros/ones/full/empty (and their ``new_*`` forms), arange, scalar tensors.

Their outputs start with fresh axes, coupled to the rest of the graph by the ops
that consume them; size arguments are rewritten from the new output widths.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from prunec.analysis.context import AnalysisContext
from prunec.rules.registry import register_rule
from prunec.rules.reshape import rewrite_size_list

aten = torch.ops.aten


def _fresh(ctx: AnalysisContext, node: fx.Node) -> None:
    ctx.layouts[node] = ctx.fresh_for(node.meta.get("val"))


@register_rule(aten.zeros, aten.ones, aten.empty, aten.full, aten.randn, aten.rand,
               rewrite=lambda rw, node: rewrite_size_list(rw, node, 0))
def factory(ctx: AnalysisContext, node: fx.Node) -> None:
    _fresh(ctx, node)


@register_rule(aten.new_zeros, aten.new_ones, aten.new_empty, aten.new_full,
               rewrite=lambda rw, node: rewrite_size_list(rw, node, 1))
def new_factory(ctx: AnalysisContext, node: fx.Node) -> None:
    _fresh(ctx, node)


@register_rule(aten.arange, aten.scalar_tensor, aten.tensor, aten.linspace, aten.eye)
def fixed_factory(ctx: AnalysisContext, node: fx.Node) -> None:
    _fresh(ctx, node)
    ctx.freeze_value(node, f"{node.target} has a length fixed by its arguments")
