"""Embedding lookups: the table's rows are indexed by token ids and are never pruned."""

from __future__ import annotations

import torch
import torch.fx as fx

from prunec.analysis.context import AnalysisContext
from prunec.rules.registry import register_rule

aten = torch.ops.aten


@register_rule(aten.embedding)
def embedding(ctx: AnalysisContext, node: fx.Node) -> None:
    w, ids = node.args[0], node.args[1]
    ctx.freeze(ctx.dim(w, 0), "embedding rows are addressed by input ids")
    ctx.set(node, ctx.dims(ids) + [ctx.dim(w, 1)])
