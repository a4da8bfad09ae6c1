"""Concatenation and stacking: the output dimension is the concatenation of the inputs' segments."""

from __future__ import annotations

import torch
import torch.fx as fx

from prunec.analysis.context import AnalysisContext
from prunec.rules.registry import register_rule

aten = torch.ops.aten


@register_rule(aten.cat, aten.concat, aten.concatenate)
def cat(ctx: AnalysisContext, node: fx.Node) -> None:
    tensors = [t for t in node.args[0] if ctx.is_tensor(t) and ctx.shape(t) != (0,)]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    nd = len(ctx.shape(node))
    dim %= nd
    out = []
    for d in range(nd):
        if d == dim:
            segs: list = []
            for t in tensors:
                lay = ctx.dim(t, d)
                if ctx.table.layout_size(lay) != 1:
                    segs.extend(lay)
                else:
                    # A size-1 piece has no axis of its own: give it one (frozen) so offsets stay right.
                    fresh = ((ctx.table.new(1),),)
                    segs.extend(fresh)
            out.append(tuple(segs))
        else:
            lay = ctx.dim(tensors[0], d)
            for t in tensors[1:]:
                lay = ctx.unify(lay, ctx.dim(t, d), "cat operands")
            out.append(lay)
    ctx.set(node, out)


@register_rule(aten.stack)
def stack(ctx: AnalysisContext, node: fx.Node) -> None:
    tensors = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else 0
    nd = len(ctx.shape(node))
    dim %= nd
    dims = ctx.dims(tensors[0])
    for t in tensors[1:]:
        dims = [ctx.unify(a, b, "stack operands") for a, b in zip(dims, ctx.dims(t))]
    new = ctx.table.layout_for_size(len(tensors))
    ctx.freeze(new, "stack index")
    ctx.set(node, dims[:dim] + [new] + dims[dim:])
