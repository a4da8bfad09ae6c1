"""Reductions and normalising ops over a dimension: sum, mean, max, var, softmax, cumsum.

``sum`` over a pruned width is exact when the removed units are zero; ``mean`` is
rewritten to ``sum / original_width`` so that it stays exact too.  Reductions
that are not exact under removal (max, var, softmax over the width, ...) freeze
the reduced dimension.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from prunec.analysis.axes import UNIT
from prunec.analysis.context import AnalysisContext
from prunec.rules._common import freeze_where_not_zero
from prunec.rules.registry import register_rule

aten = torch.ops.aten


def _reduced_dims(node: fx.Node, ndim: int, dim_arg: int = 1) -> list[int]:
    dims = node.args[dim_arg] if len(node.args) > dim_arg else node.kwargs.get("dim")
    if dims is None or dims == []:
        return list(range(ndim))
    if isinstance(dims, int):
        dims = [dims]
    return sorted(d % ndim for d in dims)


def _keepdim(node: fx.Node, keep_arg: int = 2) -> bool:
    return bool(node.args[keep_arg] if len(node.args) > keep_arg else node.kwargs.get("keepdim", False))


# Reductions whose second argument is the norm order: dims and keepdim come one later.
_ORDER_FIRST = {aten.linalg_vector_norm, aten.norm}


def _reduce(ctx: AnalysisContext, node: fx.Node, freeze_reason: str | None) -> None:
    x = node.args[0]
    xd = ctx.dims(x)
    shift = 1 if node.target.overloadpacket in _ORDER_FIRST else 0
    reduced = _reduced_dims(node, len(xd), 1 + shift)
    keep = _keepdim(node, 2 + shift)
    out = []
    for i, lay in enumerate(xd):
        if i in reduced:
            if freeze_reason:
                ctx.freeze(lay, freeze_reason)
            else:
                freeze_where_not_zero(ctx, x, lay, str(node.target.overloadpacket.__name__))
            if keep:
                out.append(UNIT)
        else:
            out.append(lay)
    ctx.note(node, reduced_dims=reduced)
    val = node.meta["val"]
    if isinstance(val, (list, tuple)):  # max.dim returns (values, indices)
        ctx.layouts[node] = [list(out) for _ in val]
    else:
        ctx.set(node, out)


def _rewrite_mean(rw, node: fx.Node) -> None:
    """``mean`` over a shrunk width becomes ``sum / original_width``."""
    x = node.args[0]
    reduced = rw.note(node, "reduced_dims")
    old = new = 1
    for d in reduced:
        old *= rw.old_size(x, d)
        new *= rw.new_size(x, d)
    if old != new:
        rw.replace_mean_with_sum(node, old)


@register_rule(aten.sum, aten.nansum)
def sum_(ctx: AnalysisContext, node: fx.Node) -> None:
    _reduce(ctx, node, None)


@register_rule(aten.mean, rewrite=_rewrite_mean)
def mean(ctx: AnalysisContext, node: fx.Node) -> None:
    _reduce(ctx, node, None)


@register_rule(aten.amax, aten.amin, aten.max, aten.min, aten.var, aten.std, aten.prod, aten.argmax,
               aten.argmin, aten.logsumexp, aten.norm, aten.linalg_vector_norm, aten.any, aten.all)
def nonlinear_reduction(ctx: AnalysisContext, node: fx.Node) -> None:
    if len(node.args) == 1 and not node.kwargs:
        # Full reduction to a scalar.
        ctx.freeze_value(node.args[0], f"{node.target} reduces over every dim")
        ctx.set(node, [])
        return
    _reduce(ctx, node, f"{node.target} over this dim is not exact under removal")


@register_rule(aten.softmax, aten._softmax, aten.log_softmax, aten._log_softmax, aten.cumsum,
               aten.cumprod, aten._safe_softmax)
def along_dim(ctx: AnalysisContext, node: fx.Node) -> None:
    """Shape-preserving ops that mix values along one dim: that dim is frozen."""
    x, dim = node.args[0], node.args[1]
    xd = ctx.dims(x)
    ctx.freeze(xd[dim % len(xd)], f"{node.target} normalises along this dim")
    ctx.set(node, xd)
