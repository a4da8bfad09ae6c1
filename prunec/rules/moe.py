"""Mixture-of-experts products: Hugging Face's grouped expert matmul.

``transformers::grouped_mm_fallback(x[S, K], w[E, K, N], offs[E])`` multiplies each expert's
slice of the (expert-sorted) tokens by that expert's weight.  It is a linear map per expert: the
contraction couples ``x``'s features with every expert's input features and the output features
are the experts' ``N``, so one unit is the same channel in all experts (the config has a single
``intermediate_size``).  The expert axis is tied to the routing offsets.  The op exists only once
``transformers.integrations.moe`` is imported, hence the rule is keyed by its schema name.
"""

from __future__ import annotations

import torch.fx as fx

from prunec.analysis.context import AnalysisContext
from prunec.rules.registry import register_rule


@register_rule("transformers::grouped_mm_fallback", "transformers::grouped_mm")
def grouped_mm(ctx: AnalysisContext, node: fx.Node) -> None:
    x, w, offs = node.args[0], node.args[1], node.args[2]
    ctx.unify(ctx.dim(x, 1), ctx.dim(w, 1), "grouped_mm contraction")
    ctx.unify(ctx.dim(w, 0), ctx.dim(offs, 0), "grouped_mm experts")
    ctx.set(node, [ctx.dim(x, 0), ctx.dim(w, 2)])
